"""`python -m ti_core train`: textual inversion from a shell, with a progress bar; Ctrl-C saves and exits.

The training options are TrainConfig's (train_config.add_cli_arguments); this file adds only what a shell run
needs besides: the model, its dtype and device, and the image folder.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path


def add_train_parser(sub) -> None:
    from .models import DTYPES
    from .train_config import add_cli_arguments

    p = sub.add_parser("train", help="learn a new word (an embedding) from a folder of 3-5 images")
    p.add_argument("--model", required=True, help="checkpoint (.safetensors/.ckpt) or diffusers folder")
    p.add_argument("--images", required=True, help="folder of images (any size; .txt captions beside them)")
    p.add_argument("--dtype", choices=DTYPES, default="fp32",
                   help="the dtype the frozen model is loaded in (default fp32); --precision is what it computes in")
    p.add_argument("--device", help="cuda, cuda:1, mps, cpu (default: the best available, in that order)")
    add_cli_arguments(p)
    p.set_defaults(run=cmd_train)


def cmd_train(args) -> int:
    from tqdm import tqdm

    from . import data
    from .models import best_device, load_model
    from .sample import to_pil
    from .train import check_output, train
    from .train_config import config_from_args

    config = config_from_args(args)
    config.validate()  # everything cheap is checked before the model loads
    out = Path(config.output)
    images, warnings = data.load_images(args.images)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    check_output(out, resuming=bool(config.resume))
    device = args.device or best_device()
    print(f"device: {device}" + ("" if args.device else " (the best available; --device to choose)"), file=sys.stderr)
    model = load_model(args.model, dtype=args.dtype, device=device)
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
    print(result.summary() + (f" (resume state {result.state_path})" if result.state_path else ""))
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
