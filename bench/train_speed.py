"""Benchmark: our textual-inversion step against the unavoidable compute, per precision and resolution.

For each precision a child process loads the model in that dtype and, per resolution, measures:
  - our training step (ti_core.train, batch 1, cached latents), median seconds over the timed steps;
  - the floor, in the same process: UNet forward + backward to its conditioning input, plus the text
    encoder forward + backward to one spliced vector (the compute any TI trainer must do);
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


def floor_seconds(model, resolution: int, reps: int) -> float:
    """UNet fwd+bwd to encoder_hidden_states + text encoder fwd+bwd to one spliced vector, median seconds."""
    import torch

    from ti_core.prompt import run_encoder

    f = model.vae_scale_factor
    latent = torch.randn(1, 4, resolution // f, resolution // f, dtype=model.dtype)
    ids = torch.tensor([[49406, 320, 1125, 539, 265] + [49407] * 72])
    mask = torch.zeros(1, 77, dtype=torch.bool)
    mask[0, 4] = True
    vector = torch.randn(1, model.embedding_widths[0], requires_grad=True)
    times = []
    with torch.inference_mode(False), torch.enable_grad():
        for i in range(reps + 1):
            start = time.perf_counter()
            values = torch.zeros(1, 77, vector.shape[1]).index_put((torch.tensor([0]), torch.tensor([4])), vector)
            hidden, _ = run_encoder(model, 0, ids, mask, values)
            ehs = hidden.detach().requires_grad_(True)
            out = model.unet(latent, torch.tensor([500]), encoder_hidden_states=ehs, return_dict=False)[0]
            out.float().square().mean().backward()
            hidden.backward(ehs.grad)
            if i:  # the first repetition warms up
                times.append(time.perf_counter() - start)
    return times


def child(args) -> None:
    from ti_core.models import load_model
    from ti_core.train import TrainConfig, train

    images = make_images(Path(args.workdir) / "images")
    model = load_model(args.model, dtype=args.child)
    load_peak = peak_rss_gib()
    for resolution in args.resolution:
        stamps = []
        config = TrainConfig(name="bench", steps=args.warmup + args.steps, resolution=resolution, crop="center",
                             flip=False, save_every=0, init_text="cat toy")
        train(model, str(images), config, on_step=lambda info: stamps.append(time.perf_counter()))
        steps = [b - a for a, b in zip(stamps[args.warmup:], stamps[args.warmup + 1:])]
        floors = floor_seconds(model, resolution, args.floor_reps)
        # The machine is shared and noisy (single steps vary by +-15%): report medians and minimums; the ratio
        # of minimums compares the least-disturbed runs of each.
        print(json.dumps({"precision": args.child, "resolution": resolution,
                          "step_s": statistics.median(steps), "floor_s": statistics.median(floors),
                          "step_min_s": min(steps), "floor_min_s": min(floors),
                          "peak_gib": peak_rss_gib(), "load_peak_gib": load_peak}), flush=True)
        reset_peak_rss()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint or folder (default: a random-weight SD1.5 built on first use)")
    parser.add_argument("--resolution", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per resolution (after warm-up)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--floor-reps", type=int, default=5)
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
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--floor-reps", str(args.floor_reps),
               "--resolution", *map(str, args.resolution)]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if out.returncode:
            sys.exit(f"{precision} run failed:\n{out.stderr[-3000:]}")
        rows += [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    print(f"\nmodel: {args.model}  cpu threads: {__import__('torch').get_num_threads()}  batch 1")
    print(f"{'precision':>9} {'res':>4} {'s/step':>7} {'floor s':>7} {'ratio':>6} {'min ratio':>9} {'peak GiB':>8} "
          f"{'vs diffusers fp32':>17} {'peak vs diffusers':>17}")
    for r in rows:
        base = DIFFUSERS_FP32.get(r["resolution"])
        speed = f"{base[0] / r['step_s']:.2f}x faster" if base else "-"
        memory = f"{r['peak_gib'] / base[1]:.2f} of it" if base else "-"
        print(f"{r['precision']:>9} {r['resolution']:>4} {r['step_s']:7.2f} {r['floor_s']:7.2f} "
              f"{r['step_s'] / r['floor_s']:6.2f} {r['step_min_s'] / r['floor_min_s']:9.2f} {r['peak_gib']:8.2f} "
              f"{speed:>17} {memory:>17}")
    print("\ntargets: fp32 ratio <= 1.10; bf16 >= 2.5x faster than diffusers fp32; bf16 peak <= 0.5 of diffusers'")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
