"""`python -m ti_core train`: textual inversion from a shell, with a progress bar; Ctrl-C saves and exits."""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path


def add_train_parser(sub) -> None:
    from .models import DTYPES

    p = sub.add_parser("train", help="learn a new word (an embedding) from a folder of 3-5 images")
    p.add_argument("--model", required=True, help="checkpoint (.safetensors/.ckpt) or diffusers folder")
    p.add_argument("--images", required=True, help="folder of images (any size; .txt captions beside them)")
    p.add_argument("--name", required=True, help="the new word; use it in prompts as embedding:NAME")
    p.add_argument("--out", required=True, help="embedding file to write (.safetensors); never overwritten")
    p.add_argument("--init-text", default="*", help="words to start from, e.g. 'cat toy' ('' = random; default *)")
    p.add_argument("--vectors", type=int, default=1, help="vectors (tokens) the word takes, 1-75 (default 1)")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    p.add_argument("--lr", default="5e-3", help="learning rate or schedule '5e-3:100, 1e-3:1000, 1e-5' (default 5e-3)")
    p.add_argument("--batch", type=int, default=1, help="images per step (default 1)")
    p.add_argument("--grad-accum", type=int, default=1, help="forward passes per step (default 1)")
    p.add_argument("--resolution", type=int, help="training size in pixels (default: the model's)")
    p.add_argument("--crop", choices=("random", "center", "pad"), default="random", help="default random")
    p.add_argument("--no-flip", action="store_true", help="do not mirror images (for text, logos, asymmetry)")
    p.add_argument("--template", default="object", help="object, style, captions (a short sentence + each image's .txt caption), or a template file with [name] (default object)")
    p.add_argument("--save-every", type=int, default=100, help="steps between saves (default 100)")
    p.add_argument("--preview-every", type=int, default=0, help="steps between preview images (default 0 = none)")
    p.add_argument("--validate-every", type=int, default=0,
                   help="steps between validation losses on fixed draws (default 0 = none)")
    p.add_argument("--early-stop", type=int, default=0,
                   help="stop after N validations without a 0.2%% better loss (needs --validate-every; default 0 = off)")
    p.add_argument("--resume", help="resume state of an earlier run (OUT.state.safetensors)")
    p.add_argument("--precision", choices=DTYPES, default="fp32", help="the frozen model's dtype (default fp32)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="default 0; the same seed gives the same vectors on CPU")
    p.set_defaults(run=cmd_train)


def cmd_train(args) -> int:
    from tqdm import tqdm

    from . import data
    from .models import load_model
    from .sample import to_pil
    from .train import TrainConfig, check_output, train

    out = Path(args.out)
    config = TrainConfig(
        name=args.name, init_text=args.init_text, vectors=args.vectors, steps=args.steps, learning_rate=args.lr,
        batch_size=args.batch, grad_accum=args.grad_accum, resolution=args.resolution, crop=args.crop,
        flip=not args.no_flip, template=args.template, save_every=args.save_every, preview_every=args.preview_every,
        seed=args.seed, output=str(out), resume=args.resume, validate_every=args.validate_every,
        early_stop=args.early_stop,
    )
    config.validate()  # everything cheap is checked before the model loads
    images, warnings = data.load_images(args.images)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    check_output(out, resuming=bool(args.resume))
    model = load_model(args.model, dtype=args.precision, device=args.device)
    previews = out.with_name(out.name.rsplit(".", 1)[0] + "_previews")
    bar = tqdm(total=config.steps, unit="step", dynamic_ncols=True)

    shown = {}

    def on_step(info):
        bar.n = info.step
        if info.val_loss is not None:
            shown["val"] = f"{info.val_loss:.4f}"
        bar.set_postfix(loss=f"{info.smoothed_loss:.4f}", lr=f"{info.lr:.2g}", **shown)
        if info.preview is not None:
            previews.mkdir(parents=True, exist_ok=True)
            to_pil(info.preview)[0].save(previews / f"step_{info.step:06d}.png")

    with _ctrl_c_requests_stop() as stop:
        result = train(model, images, config, on_step=on_step, should_stop=stop)
    bar.close()
    how = "stopped at" if result.stopped else ("early stop (validation loss flat) at" if result.early_stopped
                                               else "finished")
    print(f"{how} step {result.steps_done}: wrote {result.path} (resume state {result.state_path})")
    return 0


@contextlib.contextmanager
def _ctrl_c_requests_stop():
    """The first Ctrl-C asks the trainer to stop (it saves and returns); a second one interrupts at once."""
    requested = []

    def handler(signum, frame):
        if requested:
            raise KeyboardInterrupt
        requested.append(True)
        print("\nstopping after this step and saving (Ctrl-C again to abort without saving)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(requested)
    finally:
        signal.signal(signal.SIGINT, previous)
