"""`python -m ti_core`: make-model, sample, inspect, demo.

User mistakes (any `TIError`) print one line and exit with status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import SettingError, TIError


class _Parser(argparse.ArgumentParser):
    """Argument mistakes are one line too (argparse would print the whole usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _quiet_libraries() -> None:
    # diffusers/transformers log advice (e.g. "install accelerate") that does not apply to us.
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()


def cmd_make_model(args) -> int:
    from .make_model import make_model

    out = make_model(args.arch, args.out, single_file=args.single_file, seed=args.seed, dtype=args.dtype)
    print(f"wrote {args.arch} ({'single file' if args.single_file else 'diffusers folder'}) to {out}")
    return 0


def cmd_sample(args) -> int:
    from .atomic import free_path
    from .embeddings import load_embedding
    from .models import best_device, load_model
    from .prompt import encode_pair
    from .sample import check_size, sample, to_pil

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SettingError(f"--out {out} is a file, not a folder; give a folder for the PNGs.")
    embeddings = [load_embedding(p) for p in args.embedding]
    model = load_model(args.model, dtype=args.dtype, device=args.device or best_device())
    check_size(model, args.width, args.height)  # fail before the slow part
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SettingError(f"cannot create the folder {out} ({e.strerror or e}); "
                           "choose one you can write to.") from None
    positive, negative = encode_pair(model, args.prompt, args.negative, embeddings)
    images = sample(
        model, positive, negative, sampler=args.sampler, steps=args.steps, cfg=args.cfg, seed=args.seed,
        width=args.width, height=args.height, batch=args.batch,
    )
    for i, image in enumerate(to_pil(images)):
        path = free_path(out / f"{args.prefix}_{args.seed}_{i:02d}.png")
        image.save(path)
        print(path)
    return 0


def cmd_inspect(args) -> int:
    from .info import inspect_path

    info = inspect_path(args.file)
    if args.json:
        print(json.dumps(info, indent=None if args.compact else 2))
        return 0
    for key, value in info.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                if isinstance(v, dict):  # e.g. a tensor's shape, sum and norm
                    v = ", ".join(f"{a} {b}" for a, b in v.items())
                print(f"  {k}: {v}")
        else:
            print(f"{key}: {value}")
    return 0


def cmd_convert(args) -> int:
    from .embeddings import load_embedding, save_embedding

    embedding = load_embedding(args.input)
    out = save_embedding(embedding, args.output, format=args.to, overwrite=args.overwrite)
    print(f"wrote {out} ({args.to}, {embedding.num_vectors} vectors, from {embedding.source_format})")
    return 0


def cmd_demo(args) -> int:
    from dataclasses import replace

    from .demo import DemoConfig, run_demo
    from .toyworld.concept import Concept

    config = DemoConfig()
    if args.concept is not None:
        try:
            config = replace(config, concept=Concept.parse(args.concept))
        except ValueError as e:
            raise SettingError(str(e) + ".") from None
    if args.pictures is not None:
        config = replace(config, pictures=args.pictures)
    if args.seed is not None:
        config = replace(config, seed=args.seed)
    if args.steps is not None:
        config = replace(config, steps=args.steps)
    if args.early_stop is not None:
        config = replace(config, early_stop=args.early_stop)
    if args.samples is not None:
        config = replace(config, samples=args.samples)
    if args.picture_check is not None:
        config = replace(config, picture_check=args.picture_check)
    report = run_demo(Path(args.out), log=(lambda s: None) if args.json else print, config=config)
    if args.json:
        print(json.dumps(report))  # one object on the last line
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .archs import MAKEABLE
    from .demo import DemoConfig
    from .models import DTYPES
    from .sample import SAMPLERS
    from .train_config import TrainConfig

    parser = _Parser(
        prog="python -m ti_core", description="Textual inversion for Stable Diffusion (SD1.x, SD2.x, SDXL), offline."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-model", help="write a random-weight model of the real classes (tests, benchmarks)")
    p.add_argument("out", help="output folder (diffusers layout) or .safetensors file with --single-file")
    p.add_argument("--arch", required=True, choices=MAKEABLE, help="tiny-* for tests; sd15/sd21/sdxl are full size")
    p.add_argument("--single-file", action="store_true", help="one .safetensors in the original (A1111) key layout")
    p.add_argument("--seed", type=int, default=0, help="weights are drawn from this seed (default 0)")
    p.add_argument("--dtype", choices=DTYPES, default="fp32", help="dtype of the written weights (default fp32)")
    p.set_defaults(run=cmd_make_model)

    p = sub.add_parser("sample", help="generate images from a prompt, with embeddings")
    p.add_argument("--model", required=True, help="checkpoint (.safetensors/.ckpt) or diffusers folder")
    p.add_argument("--prompt", required=True, help="e.g. 'a photo of embedding:my-cat, (on grass:1.2)'")
    p.add_argument("--negative", default="", help="negative prompt (default empty)")
    p.add_argument("--embedding", action="append", default=[], metavar="FILE",
                   help="embedding file; use it in the prompt by its file name (repeatable)")
    p.add_argument("--sampler", choices=SAMPLERS, default="euler", help="default euler")
    p.add_argument("--steps", type=int, default=20, help="default 20")
    p.add_argument("--cfg", type=float, default=7.0, help="classifier-free guidance scale (default 7)")
    p.add_argument("--seed", type=int, default=0, help="default 0; the same seed gives the same images")
    p.add_argument("--width", type=int, help="multiple of 8 (default: the model's native size)")
    p.add_argument("--height", type=int, help="multiple of 8 (default: the model's native size)")
    p.add_argument("--batch", type=int, default=1, help="images per run (default 1)")
    p.add_argument("--dtype", choices=DTYPES, default="fp32", help="default fp32")
    p.add_argument("--device", help="cuda, cuda:1, mps, cpu (default: the best available, in that order)")
    p.add_argument("--prefix", default="ti", help="file name prefix (default ti)")
    p.add_argument("--out", required=True, help="folder for the PNGs (existing files are never replaced)")
    p.set_defaults(run=cmd_sample)

    p = sub.add_parser("inspect", help="describe an embedding or a model file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--compact", action="store_true", help="with --json: on one line")
    p.set_defaults(run=cmd_inspect)

    from .embedding_write import WRITE_FORMATS

    p = sub.add_parser("convert", help="convert an embedding file (any format read) to another format")
    p.add_argument("input", metavar="IN", help="embedding file: .safetensors, .pt, .bin, A1111 .png/.webp")
    p.add_argument("output", metavar="OUT", help="file to write (an existing file is never replaced silently)")
    p.add_argument("--to", choices=WRITE_FORMATS, default="safetensors",
                   help="safetensors (ComfyUI/A1111/kohya; default), a1111-pt (A1111 .pt), diffusers "
                        "({token: vectors}; a .bin OUT is a torch pickle, else .safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(run=cmd_convert)

    p = sub.add_parser("demo", help="the first-run demo: the built-in toy-world model learns a new word, and a judge "
                                    "measures how well it draws the concept")
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out; nothing in it is replaced)")
    p.add_argument("--json", action="store_true", help="print only the report, as one JSON object on one line")
    demo, fraction = DemoConfig(), TrainConfig.early_stop_fraction
    p.add_argument("--steps", type=int, help=f"training steps (default {demo.steps})")
    p.add_argument("--early-stop", type=int, metavar="N",
                   help=f"stop after N validations (every {demo.validate_every} steps) that lower the loss (and, with "
                        f"picture checks, raise the likeness of the word's pictures) by less than "
                        f"{fraction * 100:.0f}%% of its change so far (default {demo.early_stop}; 0 = all steps)")
    p.add_argument("--picture-check", action=argparse.BooleanOptionalAction,
                   help="at each validation draw the word and compare the pictures with the training ones (the "
                        "judge's feature layers as the image encoder); the saved word is the most alike "
                        f"(default {'on' if demo.picture_check else 'off'})")
    p.add_argument("--samples", type=int,
                   help=f"pictures per measure, for the word and the baseline (default {demo.samples})")
    p.add_argument("--concept", metavar="WORDS",
                   help="what to learn: a colour, a pattern and a shape, e.g. 'green dotted heart' (default "
                        "'purple striped star'); the pairs the built-in model never saw are purple star, green "
                        "heart, orange cross and blue circle")
    p.add_argument("--pictures", type=int, metavar="N", help=f"training pictures, 1-8 (default {demo.pictures})")
    p.add_argument("--seed", type=int, help=f"seed of the pictures and of the run (default {demo.seed})")
    p.set_defaults(run=cmd_demo)

    from .train_cli import add_train_parser

    add_train_parser(sub)
    from .jobs import add_jobs_parser

    add_jobs_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    try:
        return args.run(args)
    except TIError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
