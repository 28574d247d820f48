"""`python -m ti_core train`: textual inversion from a shell, with a progress bar; Ctrl-C saves and exits.

The training options are TrainConfig's (train_config.add_cli_arguments); this file adds only what a shell run
needs besides: the model, its dtype and device, and the image folder.

Under `torchrun --nproc-per-node N -m ti_core train ...` the N processes share each batch (distributed.py);
`--batch` stays the whole batch, so a command means the same run whatever N is. Rank 0 alone writes and prints.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="learn a new word (an embedding) from a folder of 3-5 images")
    add_train_arguments(p)
    p.set_defaults(run=cmd_train)


def add_train_arguments(p) -> None:
    """The `train` command's options (also those of each line of a jobs file)."""
    from .models import DTYPES
    from .train_config import add_cli_arguments

    p.add_argument("--model", required=True, help="checkpoint (.safetensors/.ckpt) or diffusers folder")
    p.add_argument("--images", required=True, help="folder of images (any size; .txt captions beside them)")
    p.add_argument("--dtype", choices=DTYPES, default="fp32",
                   help="the dtype the frozen model is loaded in (default fp32); --precision is what it computes in")
    p.add_argument("--device", help="cuda, cuda:1, mps, cpu (default: the best available, in that order)")
    p.add_argument("--image-encoder", help="turns on picture checks (--picture-samples): 'toyworld' (the built-in "
                                           "model's judge) or a CLIP model's transformers folder (config.json + "
                                           "weights); the saved word is the one whose pictures look most like yours")
    add_cli_arguments(p)


def cmd_train(args) -> int:
    from .distributed import current, main_speaks, process_group
    from .models import best_device

    with process_group(args.device or best_device()) as device, main_speaks(current()):
        main = current().is_main
        result = train_from_args(args, device, chosen=bool(args.device))
    if main:
        print(result.summary() + (f" (resume state {result.state_path})" if result.state_path else ""))
    return 0


def train_from_args(args, device: str, chosen: bool = True):
    """The run the parsed `train` arguments describe, on `device`, with a progress bar and previews on rank 0;
    returns the TrainResult."""
    from tqdm import tqdm

    from . import data
    from .distributed import current
    from .models import load_model
    from .sample import to_pil
    from .train import check_output, train
    from .train_config import config_from_args

    world = current()
    config = config_from_args(args)
    config.validate()  # everything cheap is checked before the model loads
    out = Path(config.output)
    images, warnings = data.load_images(args.images)
    for warning in warnings if world.is_main else ():
        print(f"warning: {warning}", file=sys.stderr)
    if world.is_main:
        check_output(out, resuming=bool(config.resume))
        shown = f"{device} x {world.size} processes" if world.size > 1 else device
        print(f"device: {shown}" + ("" if chosen else " (the best available; --device to choose)"), file=sys.stderr)
    encoder = None
    if getattr(args, "image_encoder", None):  # before the model: a wrong path is said at once
        from .image_encoders import load_image_encoder

        encoder = load_image_encoder(args.image_encoder, device)
    model = load_model(args.model, dtype=args.dtype, device=device)
    previews = out.with_name(out.name.rsplit(".", 1)[0] + "_previews")
    bar = tqdm(total=config.steps, unit="step", dynamic_ncols=True, disable=not world.is_main)

    shown = {}

    def on_step(info):
        bar.n = info.step
        if info.val_loss is not None:
            shown["val"] = f"{info.val_loss:.4f}"
        if info.picture_score is not None:
            shown["likeness"] = f"{info.picture_score:.3f}"
        bar.set_postfix(loss=f"{info.smoothed_loss:.4f}", lr=f"{info.lr:.2g}", **shown)
        if info.preview is not None:
            previews.mkdir(parents=True, exist_ok=True)
            to_pil(info.preview)[0].save(previews / f"step_{info.step:06d}.png")

    with _ctrl_c_requests_stop() as stop:
        result = train(model, images, config, on_step=on_step, should_stop=stop, image_encoder=encoder)
    bar.close()
    return result


@contextlib.contextmanager
def _ctrl_c_requests_stop():
    """The first Ctrl-C asks the trainer to stop (it saves and returns); a second one interrupts at once. SIGTERM
    does the same: it is how torchrun ends its processes (after Ctrl-C, or when one of them died) and how a cluster
    scheduler preempts a job, and each waits a while before killing, long enough to finish the step and save."""
    requested = []

    def handler(signum, frame):
        if requested:
            raise KeyboardInterrupt
        requested.append(True)
        print(f"\n{signal.Signals(signum).name}: stopping after this step and saving (Ctrl-C again to abort "
              "without saving)", file=sys.stderr)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(requested)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
