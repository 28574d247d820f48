"""Time to a good word: the unmodified diffusers textual-inversion example against our trainer, on the toy world.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/toyworld_vs_diffusers.py \\
        --example /path/to/diffusers/examples/textual_inversion/textual_inversion.py \\
        [--concept "purple striped star"] [--pictures 4] [--seed 0] [--samples 32] \\
        [--max-steps 3000] [--save-steps 250] [--ours-steps 400] [--ours-save-steps 25] \\
        [--example-python PYTHON] [--json out.json] [--work DIR]

1. Draws the concept's pictures (the same ones for both sides) and exports the built-in toy-world model as a
   diffusers folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/), checking that the exported parts, loaded
   with the classes the example uses, compute what ours do.
2. Runs the example as a subprocess, unmodified, with the recipe from its README: batch 1, gradient accumulation
   4, learning rate 5e-4 with --scale_lr (2e-3 in effect), constant schedule, object templates, the shape word as
   initializer; plus --resolution 32 and --center_crop (the pictures are non-square; our trainer centre-crops them
   too, so both sides see the same views rather than the example a stretched star). Its seconds at a save are the
   saved file's mtime minus the moment it logged "Running training" (after loading the model).
3. Trains ours with the demo's recipe, read at run time from `ti_core.demo` (never copied here), without early
   stopping, snapshotting the embedding at each save; its seconds are counted from the call to `train` (after
   loading the model), so both sides' clocks exclude model loading and include everything else.
4. Judges every snapshot of both sides with `ti_core.demo.measure` (reconstruction and editability, --samples
   pictures each) and prints a table per side, the first step and second at which each side reaches
   reconstruction >= 85% and editability >= 90%, and the ratio of the two.

Run it alone, with OMP_NUM_THREADS set as the other work on the machine allows: the two sides run one after the
other and their seconds are compared. The example needs `accelerate`, `torchvision` and `tensorboard` (its
requirements.txt) in the Python given by --example-python (default: this one). Where only a CUDA torchvision wheel
exists for a CPU-only torch, its compiled ops do not load ("operator torchvision::nms does not exist"), and since
transformers imports torchvision whenever it is installed, such a torchvision breaks transformers too: keep it out
of the project's environment and give the example its own, layered over the project's, e.g.

    python -m venv /tmp/ex
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/ex/lib/python3.11/site-packages/base.pth
    /tmp/ex/bin/pip install --no-deps torchvision==<the one matching torch>   # --example-python /tmp/ex/bin/python

There the example is started through a launcher that declares those two operator schemas before anything imports
torchvision; the example itself only uses torchvision's transforms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a script in the repo, run without installing the package

RECONSTRUCTION_BAR, EDITABILITY_BAR = 0.85, 0.90
PLACEHOLDER = "<w>"
TRAINING_STARTED = "***** Running training *****"  # the example logs this once its model is loaded
EXAMPLE_RECIPE = [  # its README's recipe (examples/textual_inversion/README.md)
    "--learnable_property", "object", "--train_batch_size", "1", "--gradient_accumulation_steps", "4",
    "--learning_rate", "5e-4", "--scale_lr", "--lr_scheduler", "constant", "--lr_warmup_steps", "0",
]
TORCHVISION_SHIM = """\
import runpy, sys, torch
lib = torch.library.Library("torchvision", "DEF")
for op in ("nms", "qnms"):
    lib.define(op + "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


class BenchError(Exception):
    pass


# ------------------------------------------------------------------------------------------------ the model

def export_diffusers(model, folder: Path) -> Path:
    """Write the toy model's parts as the diffusers folder the example loads (it reads each subfolder)."""
    from diffusers import DDPMScheduler

    if model.family != "sd1":
        raise BenchError(f"the example trains SD1/SD2-layout models with one text encoder; this is {model.family}.")
    parts = {"unet": model.unet, "vae": model.vae, "text_encoder": model.text_encoders[0],
             "tokenizer": model.tokenizers[0], "scheduler": DDPMScheduler.from_config(model.scheduler_config)}
    for name, part in parts.items():
        part.save_pretrained(folder / name)
    return folder


def check_export(model, folder: Path) -> dict:
    """Load the export with the example's classes and compare with ours on one input; raise if they differ."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    text = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    gen = torch.Generator().manual_seed(0)
    ids = tokenizer("a photo of a purple striped star", padding="max_length", max_length=77,
                    return_tensors="pt").input_ids
    latents = torch.randn(1, 4, 16, 16, generator=gen)
    image = torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1
    t = torch.tensor([500])
    with torch.no_grad():
        ours_text, theirs_text = model.text_encoders[0](ids)[0], text(ids)[0]
        diffs = {
            "text_encoder": (ours_text - theirs_text).abs().max(),
            "unet": (model.unet(latents, t, ours_text).sample - unet(latents, t, ours_text).sample).abs().max(),
            "vae_encode": (model.vae.encode(image).latent_dist.mean - vae.encode(image).latent_dist.mean).abs().max(),
        }
    # ours unpadded: padding="max_length" on our (fast) tokenizer would stay switched on for its later calls
    ours_ids = model.tokenizers[0]("a photo of a purple striped star").input_ids
    ours_noise = DDPMScheduler.from_config(model.scheduler_config).alphas_cumprod
    checks = {name: float(d) for name, d in diffs.items()}
    checks["tokenizer_same"] = ids[0, :len(ours_ids)].tolist() == list(ours_ids)
    checks["alphas_cumprod"] = float((scheduler.alphas_cumprod - ours_noise).abs().max())
    checks["scaling_factor"] = vae.config.scaling_factor
    bad = [k for k in ("text_encoder", "unet", "vae_encode", "alphas_cumprod") if checks[k] > 1e-5]
    if bad or not checks["tokenizer_same"] or checks["scaling_factor"] != model.vae.config.scaling_factor:
        raise BenchError(f"the exported diffusers folder {folder} does not compute what the toy model does: {checks}")
    return checks


# ----------------------------------------------------------------------------------------------- the example

def torchvision_needs_shim(python: str) -> bool:
    """Whether `import torchvision` fails for want of its compiled ops (see the module docstring)."""
    probe = subprocess.run([python, "-c", "import accelerate, torchvision"],
                           capture_output=True, text=True, check=False)
    if probe.returncode == 0:
        return False
    if "torchvision::nms" in probe.stderr:
        return True
    raise BenchError(f"the example needs accelerate and torchvision, and importing them with {python} fails "
                     f"(see --example-python):\n{probe.stderr[-2000:]}")


def example_command(args, model_dir: Path, data_dir: Path, out_dir: Path, shim: bool) -> list:
    script = str(Path(args.example).resolve())
    python = args.example_python
    launcher = [python, "-c", TORCHVISION_SHIM, script] if shim else [python, script]
    return launcher + [
        "--pretrained_model_name_or_path", str(model_dir), "--train_data_dir", str(data_dir),
        "--placeholder_token", PLACEHOLDER, "--initializer_token", args.concept.shape,
        "--resolution", "32", "--center_crop", *EXAMPLE_RECIPE,
        "--max_train_steps", str(args.max_steps), "--save_steps", str(args.save_steps),
        "--checkpointing_steps", str(10 ** 9),  # no resume states: only its embeddings are judged
        "--mixed_precision", "no", "--output_dir", str(out_dir), "--seed", str(args.seed),
    ]


def run_example(command: list, out_dir: Path, log_path: Path, max_steps: int) -> dict:
    """Run the example, timestamping its log lines as they arrive; the step, seconds and path of each save."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "5"}
    started = time.time()
    marks = {}
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

        def pump():
            for line in process.stdout:
                if TRAINING_STARTED in line and "training" not in marks:
                    marks["training"] = time.time()
                log.write(line)
                log.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        code = process.wait()
        reader.join()
    ended = time.time()
    if code != 0:
        tail = log_path.read_text()[-3000:]
        raise BenchError(f"the diffusers example failed (exit {code}); its log {log_path} ends:\n{tail}")
    if "training" not in marks:
        raise BenchError(f"the example never logged {TRAINING_STARTED!r}; see {log_path}")
    saves = sorted(out_dir.glob("learned_embeds-steps-*.safetensors"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    final = out_dir / "learned_embeds.safetensors"
    points = [{"step": int(p.stem.rsplit("-", 1)[1]), "seconds": p.stat().st_mtime - marks["training"], "path": str(p)}
              for p in saves]
    if final.is_file() and (not points or points[-1]["step"] != max_steps):
        points.append({"step": max_steps, "seconds": final.stat().st_mtime - marks["training"], "path": str(final)})
    if not points:
        raise BenchError(f"the example saved no embedding in {out_dir}; see {log_path}")
    return {"points": points, "wall_seconds": ended - started, "load_seconds": marks["training"] - started,
            "log": str(log_path)}


# ------------------------------------------------------------------------------------------------------ ours

def run_ours(model, images: Path, demo_config, out_dir: Path, steps: int, save_every: int, image_encoder=None) -> dict:
    """Our trainer with the demo's recipe (no early stop, no previews), a snapshot at every save: with the demo's
    picture checks (`image_encoder`), what a save writes is the best-scored word so far, and the checks' time
    counts."""
    from ti_core.demo import training_config
    from ti_core.train import train

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{demo_config.name}.safetensors"
    config = training_config(demo_config, target, save_every=save_every, early_stop=0, preview_every=0, steps=steps)
    points = []
    started = time.perf_counter()

    def on_step(info):
        if info.saved:
            seconds = time.perf_counter() - started
            snapshot = out_dir / f"{demo_config.name}-step{info.step:05d}.safetensors"
            shutil.copyfile(info.saved, snapshot)
            points.append({"step": info.step, "seconds": seconds, "path": str(snapshot)})

    result = train(model, images, config, on_step=on_step, image_encoder=image_encoder)
    seconds = time.perf_counter() - started
    if not points or points[-1]["step"] != result.steps_done:
        points.append({"step": result.steps_done, "seconds": seconds, "path": result.path})
    return {"points": points, "wall_seconds": seconds, "config": asdict(config)}


# --------------------------------------------------------------------------------------------------- judging

def judge_points(model, judge, demo_config, points: list, label: str) -> None:
    """Add reconstruction and editability to each point (in place), judged on generated pictures."""
    from ti_core.demo import measure
    from ti_core.embeddings import load_embedding

    for point in points:
        embedding = load_embedding(point["path"], name=demo_config.name)
        scores = measure(model, judge, f"embedding:{demo_config.name}", demo_config.concept, demo_config, [embedding])
        point["reconstruction"], point["editability"] = scores["reconstruction"], scores["editability"]
        print(f"  {label} step {point['step']:5d}  {point['seconds']:7.1f} s  reconstruction "
              f"{point['reconstruction']:.0%}  editability {point['editability']:.0%}", flush=True)


def first_good(points: list) -> dict | None:
    for point in points:
        if point["reconstruction"] >= RECONSTRUCTION_BAR and point["editability"] >= EDITABILITY_BAR:
            return point
    return None


def save_before(points: list, point: dict) -> dict:
    """The save before `point` (step 0, second 0 for the first): the side crossed the bar after it."""
    index = points.index(point)
    return points[index - 1] if index else {"step": 0, "seconds": 0.0}


def table(title: str, side: dict) -> list:
    lines = [title, f"  {'step':>6s} {'seconds':>9s} {'reconstruction':>15s} {'editability':>12s}"]
    for p in side["points"]:
        lines.append(f"  {p['step']:6d} {p['seconds']:9.1f} {p['reconstruction']:15.0%} {p['editability']:12.0%}")
    good = side["first_good"]
    lines.append(f"  first good: step {good['step']}, {good['seconds']:.1f} s" if good else
                 f"  first good: not reached in {side['points'][-1]['step']} steps "
                 f"({side['points'][-1]['seconds']:.1f} s)")
    return lines


def verdict(theirs: dict, ours: dict) -> tuple:
    """(lines, ratios): how many times fewer steps and seconds ours needs (a lower bound where theirs never got
    there)."""
    a, b = theirs["first_good"], ours["first_good"]
    if b is None:
        return [f"ours did not reach the bar in {ours['points'][-1]['step']} steps: no ratio"], None
    if a is None:
        last = theirs["points"][-1]
        ratios = {"steps": last["step"] / b["step"], "seconds": last["seconds"] / b["seconds"], "lower_bound": True}
        text = (f"the example did not reach the bar in {last['step']} steps ({last['seconds']:.0f} s): ours is more "
                f"than {ratios['steps']:.1f}x fewer steps and {ratios['seconds']:.1f}x fewer seconds")
    else:
        ratios = {"steps": a["step"] / b["step"], "seconds": a["seconds"] / b["seconds"], "lower_bound": False}
        # each side crossed somewhere between its last save below the bar and its first above it
        a0, b0 = save_before(theirs["points"], a), save_before(ours["points"], b)
        ratios["range"] = {name: [a0[key] / b[key], a[key] / b0[key] if b0[key] else None]
                           for name, key in (("steps", "step"), ("seconds", "seconds"))}
        spans = {key: f"{lo:.1f}x-" + (f"{hi:.1f}x" if hi else "?") for key, (lo, hi) in ratios["range"].items()}
        text = (f"at the saves, ours reaches the bar in {ratios['steps']:.1f}x fewer optimizer steps and "
                f"{ratios['seconds']:.1f}x fewer seconds (between saves: {spans['steps']} and {spans['seconds']})")
    target = "meets" if ratios["seconds"] >= 10 else f"misses by {10 / ratios['seconds']:.1f}x"
    return [text, f"target (ours >= 10x shorter in seconds): {target}"], ratios


# ------------------------------------------------------------------------------------------------------ main

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--example", default="",
                        help="diffusers' examples/textual_inversion/textual_inversion.py")
    parser.add_argument("--example-python", default=sys.executable,
                        help="the Python that runs the example (with accelerate, torchvision, tensorboard)")
    parser.add_argument("--concept", default="purple striped star", help="colour, pattern and shape")
    parser.add_argument("--pictures", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=3000, help="the example's optimizer steps")
    parser.add_argument("--save-steps", type=int, default=250, help="the example's steps between saves")
    parser.add_argument("--ours-steps", type=int, default=400)
    parser.add_argument("--ours-save-steps", type=int, default=25)
    parser.add_argument("--samples", type=int, default=32, help="pictures per measure (each of the two)")
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--work", help="keep the pictures, export, logs and embeddings here (default: a temp dir)")
    parser.add_argument("--example-json", help="take the example's side from this earlier --json report (same "
                                               "concept, pictures and seed) and run only ours, e.g. after a "
                                               "change to our recipe")
    args = parser.parse_args(argv)
    if not args.example_json and not Path(args.example).is_file():
        parser.error(f"--example {args.example}: no such file; fetch diffusers' "
                     "examples/textual_inversion/textual_inversion.py")
    return _checked(parser, args)


def _checked(parser, args):
    from ti_core.toyworld.concept import Concept

    try:
        args.concept = Concept.parse(args.concept)
    except ValueError as e:
        parser.error(str(e))
    for name in ("pictures", "max_steps", "save_steps", "ours_steps", "ours_save_steps", "samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def bench(args, work: Path) -> dict:
    import diffusers
    import torch

    from ti_core.demo import DemoConfig, resolved
    from ti_core.toyworld.concept import draw_concept
    from ti_core.toyworld.judge import load_judge
    from ti_core.toyworld.model import load_toy_model

    # the demo's recipe for this concept, its word's name and init text filled in as the demo does
    demo_config = resolved(DemoConfig(concept=args.concept, pictures=args.pictures, seed=args.seed,
                                      samples=args.samples))
    model, judge = load_toy_model(), load_judge()
    images = draw_concept(work / "images", args.concept, count=args.pictures, seed=args.seed)
    png_only = work / "example_images"  # the example opens every file in its folder as a picture: no captions
    png_only.mkdir()
    for png in sorted(images.glob("*.png")):
        shutil.copyfile(png, png_only / png.name)
    export = export_diffusers(model, work / "toyworld-diffusers")
    export_check = check_export(model, export)
    print(f"exported the toy model to {export}; it matches ours: {export_check}", flush=True)

    shim = None
    if args.example_json:
        earlier = json.loads(Path(args.example_json).read_text())
        same = (earlier["concept"], earlier["pictures"], earlier["seed"]) == (args.concept.words, args.pictures,
                                                                               args.seed)
        if not same:
            raise BenchError(f"--example-json {args.example_json} is for {earlier['concept']}, {earlier['pictures']} "
                             f"pictures, seed {earlier['seed']}; run with the same --concept, --pictures and --seed")
        theirs = earlier["example"]
    else:
        shim = torchvision_needs_shim(args.example_python)
        command = example_command(args, export, png_only, work / "example_out", shim)
        print("example:", " ".join(command[:2] + (["<shim>"] + command[3:] if command[1] == "-c" else command[2:])),
              flush=True)
        theirs = run_example(command, work / "example_out", work / "example.log", args.max_steps)
        theirs["command"] = command
        print(f"example: {args.max_steps} steps, {theirs['wall_seconds']:.0f} s wall "
              f"({theirs['load_seconds']:.0f} s before training)", flush=True)
    encoder = judge.encoder() if demo_config.picture_check else None  # as the demo trains
    ours = run_ours(model, images, demo_config, work / "ours_out", args.ours_steps, args.ours_save_steps, encoder)
    print(f"ours: {ours['points'][-1]['step']} steps, {ours['wall_seconds']:.0f} s", flush=True)

    if not args.example_json:
        judge_points(model, judge, demo_config, theirs["points"], "example")
    judge_points(model, judge, demo_config, ours["points"], "ours")
    for side in (theirs, ours):
        side["first_good"] = first_good(side["points"])
    lines, ratios = verdict(theirs, ours)
    return {
        "concept": args.concept.words, "pictures": args.pictures, "seed": args.seed, "samples": args.samples,
        "bar": {"reconstruction": RECONSTRUCTION_BAR, "editability": EDITABILITY_BAR},
        "example": theirs, "ours": ours, "ratios": ratios, "verdict": lines, "export_check": export_check,
        "demo_config": {**asdict(demo_config), "concept": args.concept.words},
        "environment": {"diffusers": diffusers.__version__, "torch": torch.__version__,
                        "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                        "example": str(Path(args.example).resolve()), "example_python": args.example_python,
                        "torchvision_shim": shim},
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if "OMP_NUM_THREADS" not in os.environ:
        print("note: OMP_NUM_THREADS is not set; both sides use torch's default thread count", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if any(work.iterdir()):
            print(f"error: --work {work} is not empty; give a new or empty folder", file=sys.stderr)
            return 2
        try:
            report = bench(args, work)
        except BenchError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print()
    lines = table("diffusers example (README recipe)", report["example"]) + table("ours (demo recipe)", report["ours"])
    for line in lines + report["verdict"]:
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
