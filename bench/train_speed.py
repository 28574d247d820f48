"""Benchmark: our textual-inversion step against the unavoidable compute, per precision and resolution.

For each precision a child process loads the model in that dtype and, per resolution, measures:
  - our training step (ti_core.train, batch 1, cached latents), median seconds over the timed steps;
  - the floor, in the same process and interleaved with our steps (one repetition after each step): UNet
    forward + backward to its conditioning input, plus the text encoder forward + backward to one spliced
    vector (the compute any TI trainer must do); the median of the per-pair ratios is the figure to read;
  - peak resident memory (VmHWM) from loading the model to the end of the run at that resolution.
The diffusers example's figures (same machine kind, SD1.5 architecture, batch 1) come from
shared/docs/perf_baseline.md: fp32 5.57 s/step at 256 px (peak 5.8 GiB), 18.5 s at 512 (7.4 GiB).

    python bench/train_speed.py                       # builds a random-weight SD1.5 model first if needed
    python bench/train_speed.py --model my.safetensors --resolution 256 512 --precision fp32 bf16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a script in the repo, run without installing the package

DIFFUSERS_FP32 = {256: (5.57, 5.8), 512: (18.5, 7.4)}  # s/step, peak GiB (perf_baseline.md)
DIFFUSERS_BF16 = {256: 2.85, 512: 10.64}


def peak_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS


def make_images(folder: Path, count: int = 4) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):  # non-square, as users' photos are
        Image.fromarray(rng.integers(0, 255, (640, 512, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


class Floor:
    """One repetition of the floor: UNet fwd+bwd to encoder_hidden_states + text encoder fwd+bwd to one spliced
    vector (the compute any TI trainer must do), in seconds."""

    def __init__(self, model, resolution: int):
        import torch

        f = model.vae_scale_factor
        self.model = model
        self.latent = torch.randn(1, 4, resolution // f, resolution // f, dtype=model.dtype)
        self.ids = torch.tensor([[49406, 320, 1125, 539, 265] + [49407] * 72])
        self.mask = torch.zeros(1, 77, dtype=torch.bool)
        self.mask[0, 4] = True
        self.vector = torch.randn(1, model.embedding_widths[0], requires_grad=True)

    def __call__(self) -> float:
        import torch

        from ti_core.prompt import run_encoder

        with torch.inference_mode(False), torch.enable_grad():
            start = time.perf_counter()
            values = torch.zeros(1, 77, self.vector.shape[1]).index_put(
                (torch.tensor([0]), torch.tensor([4])), self.vector)
            hidden, _ = run_encoder(self.model, 0, self.ids, self.mask, values)
            ehs = hidden.detach().requires_grad_(True)
            out = self.model.unet(self.latent, torch.tensor([500]), encoder_hidden_states=ehs, return_dict=False)[0]
            out.float().square().mean().backward()
            hidden.backward(ehs.grad)
            return time.perf_counter() - start


def child(args) -> None:
    from ti_core.models import load_model
    from ti_core.train import TrainConfig, train

    images = make_images(Path(args.workdir) / "images")
    model = load_model(args.model, dtype=args.child)
    load_peak = peak_rss_gib()
    for resolution in args.resolution:
        # The machine is shared and noisy (single steps vary by +-15%, and the load drifts over minutes), so the
        # floor is measured between our steps: after each timed step of ours, one floor repetition runs inside
        # the step callback, and the time it takes is left out of the next step's interval. Both then see the
        # same conditions, and the median of the per-pair ratios is robust to drift.
        floor, steps, floors, calls = Floor(model, resolution), [], [], []

        def on_step(info) -> None:
            now = time.perf_counter()
            if len(calls) > args.warmup:
                steps.append(now - calls[-1])
            if len(calls) >= args.warmup:
                floors.append(floor())
            calls.append(time.perf_counter())

        config = TrainConfig(name="bench", steps=args.warmup + args.steps + 1, resolution=resolution,
                             crop="center", flip=False, save_every=0, validate_every=0, init_text="cat toy")
        train(model, str(images), config, on_step=on_step)
        floors = floors[:len(steps)]  # the floor after the last step has no step after it
        ratios = [a / b for a, b in zip(steps, floors)]
        print(json.dumps({"precision": args.child, "resolution": resolution,
                          "step_s": statistics.median(steps), "floor_s": statistics.median(floors),
                          "step_min_s": min(steps), "floor_min_s": min(floors),
                          "pair_ratio": statistics.median(ratios), "pairs": len(ratios),
                          "peak_gib": peak_rss_gib(), "load_peak_gib": load_peak}), flush=True)
        reset_peak_rss()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint or folder (default: a random-weight SD1.5 built on first use)")
    parser.add_argument("--resolution", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=6, help="timed step/floor pairs per resolution (after warm-up)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "ti_bench"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.model is None:
        args.model = str(workdir / "sd15.safetensors")
        if not Path(args.model).exists():
            print(f"building a random-weight SD1.5 at {args.model} (once)", flush=True)
            from ti_core.make_model import make_model

            make_model("sd15", args.model, single_file=True)
    rows = []
    for precision in args.precision:
        cmd = [sys.executable, __file__, "--child", precision, "--model", args.model, "--workdir", str(workdir),
               "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--resolution", *map(str, args.resolution)]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if out.returncode:
            sys.exit(f"{precision} run failed:\n{out.stderr[-3000:]}")
        rows += [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    print(f"\nmodel: {args.model}  cpu threads: {__import__('torch').get_num_threads()}  batch 1")
    print(f"{'precision':>9} {'res':>4} {'s/step':>7} {'floor s':>7} {'ratio':>6} {'pair ratio':>10} "
          f"{'min ratio':>9} {'peak GiB':>8} "
          f"{'vs diffusers fp32':>17} {'peak vs diffusers':>17}")
    for r in rows:
        base = DIFFUSERS_FP32.get(r["resolution"])
        speed = f"{base[0] / r['step_s']:.2f}x faster" if base else "-"
        memory = f"{r['peak_gib'] / base[1]:.2f} of it" if base else "-"
        print(f"{r['precision']:>9} {r['resolution']:>4} {r['step_s']:7.2f} {r['floor_s']:7.2f} "
              f"{r['step_s'] / r['floor_s']:6.2f} {r['pair_ratio']:10.2f} {r['step_min_s'] / r['floor_min_s']:9.2f} "
              f"{r['peak_gib']:8.2f} "
              f"{speed:>17} {memory:>17}")
    print("\ntargets: fp32 ratio <= 1.10; bf16 >= 2.5x faster than diffusers fp32; bf16 peak <= 0.5 of diffusers'")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
