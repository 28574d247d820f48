"""The training options, each declared once: a `TrainConfig` field whose metadata (help, choices, range, CLI
flag, node input) builds the `train` command's arguments, the ComfyUI node's inputs and the README's table.

Adding an option is one edit here: a field with `opt(...)`. `cli_arguments` and `node_input` read it, and
tests check that the README table (`options_markdown`) and the node's inputs match.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

from . import latents, templates
from .embeddings import MAX_VECTORS, check_name
from .errors import SettingError
from .models import DTYPES
from .schedule import parse_lr
from .train_state import require_state_file
from .vectors import INIT_MODES, NORM_MODES

PRECISIONS = ("model", *DTYPES)  # what the frozen model computes in; "model" = the dtype it was loaded in
CROPS = ("random", "center", "pad")
MAX_SEED = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True)
class Option:
    """How one TrainConfig field is shown to people. `help` may name other fields' defaults as {field}."""

    help: str
    choices: tuple | None = None
    low: float | None = None  # inclusive bounds, checked by TrainConfig.validate and given to the node's widget
    high: float | None = None
    flag: str | None = None  # the CLI flag; None = --field-name; "" = not on the command line
    node: bool = False  # an input of TITrainEmbedding (new ones are added after the saved workflows' widgets)
    cli_required: bool = False  # the CLI asks for it although the Python API has a default (e.g. --out)
    step: float | None = None  # the node widget's step


def opt(default=dataclasses.MISSING, help: str = "", **kwargs):
    return dataclasses.field(default=default, metadata={"option": Option(help, **kwargs)})


@dataclass(frozen=True)
class TrainConfig:
    name: str = opt(help="the new word: `embedding:NAME` in prompts, and the file name", node=True)
    init_text: str = opt("*", "words to start from, close to the concept, e.g. 'cat toy' ('' = small random "
                              "vectors)", node=True)  # A1111's default; its tokens are spread over the vectors
    vectors: int = opt(1, "vectors (tokens) the word takes: 1 for an object, 2-8 for styles and faces",
                       low=1, high=MAX_VECTORS, node=True)  # one is enough for an object
    steps: int = opt(1000, "optimizer steps in total (counting steps done before a resume)", low=1, high=100000,
                     node=True)  # most concepts are learned in the first few hundred (DVAR)
    learning_rate: str = opt("5e-3", "a number, or a schedule as in A1111: '5e-3:100, 1e-3:1000, 1e-5' "
                                     "(rate:until step, ...)", flag="--lr", node=True)  # A1111's default
    batch_size: int = opt(1, "images per forward pass; memory grows with it", low=1, high=64, flag="--batch",
                          node=True)
    grad_accum: int = opt(1, "forward passes per optimizer step (effective batch = batch_size x grad_accum)",
                          low=1, high=256, node=True)
    max_grad_norm: float = opt(1.0, "clip the vectors' gradient norm to this")  # cheapest guard against NaN losses
    weight_decay: float = opt(0.0, "AdamW weight decay of the vectors", low=0.0)  # A1111 uses none; decay would
    # pull the vectors toward zero, i.e. toward no meaning
    resolution: int = opt(0, "training size in pixels, a multiple of 8 (0 = the model's own)", low=0, high=4096,
                          step=8, node=True)  # the model's own: the size it draws best
    crop: str = opt("random", "how pictures become squares, never stretched: a new random crop each step, the "
                              "centre, or the whole picture padded", choices=CROPS, node=True)
    pad_fill: str = opt("edge", "for crop pad: extend the edge pixels, or blur", choices=("edge", "blur"))
    flip: bool = opt(True, "mirror pictures at random (off for text, logos, asymmetric things)")  # twice the
    # views from 3-5 images (paper, diffusers)
    order: str = opt("random", "which pictures each batch draws: each at random, or shuffled (every picture and "
                               "mirror image once per cycle, as an epoch)", choices=("random", "shuffled"))
    # random: across the fidelity matrix shuffled (the diffusers example's and A1111's epochs) left 56 cells at the
    # bar against 58, moving the misses rather than removing them (README, "Options measured so far")
    latents: str = opt("mean", "latent of each picture: posterior mean, one draw, or a new draw each step",
                       choices=latents.LATENT_MODES)  # mean is deterministic
    use_alpha: bool = opt(False, "weight the loss by each picture's alpha channel")  # as A1111 allows
    template: str = opt("object", "training prompts: object, style, captions (a short sentence + each "
                                  "picture's .txt caption), or an A1111 template file with [name] and [filewords]",
                        node=True)
    save_every: int = opt(100, "save the embedding and resume state every N steps (0 = at the end only)",
                          low=0, high=100000, node=True)  # a crash loses at most this many steps
    preview_every: int = opt(0, "draw a preview of preview_prompt every N steps (0 = none)", low=0, high=100000,
                             node=True)  # off: each preview costs a full sampling run
    preview_prompt: str = opt("a photo of [name]", "the preview's prompt; [name] becomes the embedding")  # fixed,
    # so previews compare across steps
    preview_steps: int = opt(20, "sampling steps of each preview", low=1)
    preview_seed: int = opt(0, "seed of every preview", low=0, high=MAX_SEED)
    seed: int = opt(0, "seed of everything random in training (crops, noise, timesteps, templates)", low=0,
                    high=MAX_SEED, node=True)  # the same seed gives the same vectors on the CPU
    gradient_checkpointing: bool = opt(False, "less memory for the UNet backward, about 30% more time")
    precision: str = opt("model", "what the frozen model computes in: model (its dtype, fastest), or fp32, bf16, "
                                  "fp16 by autocast on an fp32 model; the vectors stay fp32",
                         choices=PRECISIONS, node=True)  # loading the model in bf16/fp16 is faster and lighter
    # still, since weights are not cast at every op
    output: str | None = opt(None, "the embedding file to write (.safetensors; never overwritten)", flag="--out",
                             cli_required=True)  # None = do not save (Python API)
    resume: str | None = opt(None, "the resume state of an earlier run (OUT.state.safetensors)")
    state_path: str | None = opt(None, "where to write the resume state (default: beside the output)")  # a UI may
    # want it elsewhere: ComfyUI lists every .safetensors in models/embeddings as an embedding
    loss_smoothing: float = opt(0.9, "EMA factor of the smoothed loss shown", low=0.0, high=0.999)
    validate_every: int = opt(25, "measure a validation loss on fixed draws every N steps (0 = off; "
                                  "{validation_samples} forward passes each)", low=0, high=100000, node=True)
    # on by default: the training loss jumps with each step's random timestep; this one re-uses the same images,
    # crops, prompts, timesteps and noise every time (Voronov et al. 2023, "Is This Loss Informative?"), so its
    # curve shows when the word stops improving. 16 draws every 25 steps add about a fifth to the training time
    validation_samples: int = opt(16, "fixed draws per validation, timesteps spread over the schedule", low=1)
    early_stop: int = opt(0, "stop after N validations in a row that lower the best loss by less than "
                             "{early_stop_fraction:.0%} of its fall so far (0 = run all steps); needs validate_every",
                          low=0, high=1000, node=True)
    # 0: a run does what it was asked. The demo's value and why: see README, "When is it done?"
    early_stop_fraction: float = opt(0.1, "early stop's threshold, as a fraction of how far the validation loss "
                                           "has fallen from its first value", low=0.0)
    # Relative to the fall, not to the loss: a loss's level is mostly the noise no word can predict and depends on
    # the pictures and the weighting (a colour moved it by 0.3%, a texture by 10%); its fall so far is what the
    # word has learned. 0.1: chosen across the fidelity matrix with 3 validations every 25 steps, kept with the
    # demo's 10 every 10 (bench/toyworld_early_stop.py; README, "When is it done?"); 0.05 ran longer for no
    # fidelity, patience 2 stopped words not yet whole
    snr_gamma: float = opt(0.25, "Min-SNR loss weighting: cap each timestep's weight at gamma/SNR, so the noisy "
                                 "timesteps where colour and layout are decided count (0 = uniform, as the paper)",
                           low=0.0)
    init_mode: str = opt("tokens", "start from the init text's token vectors, or from the text encoder's output "
                                   "for them (Cross Initialization)", choices=INIT_MODES)
    vector_norm: str = opt("free", "the vectors' length: free, fixed at the init length (only the direction is "
                                   "trained), or pulled toward the vocabulary's mean length", choices=NORM_MODES)
    norm_weight: float = opt(0.01, "for vector_norm vocab: the length penalty's weight", low=0.0)
    ema: float = opt(0.0, "average the word over the last steps: validation, previews and saves use an exponential "
                          "moving average of the vectors with this decay (0.98: the last 50 steps or so, fewer in the "
                          "first few hundred; 0 = off, the last step's vectors)", low=0.0, high=0.9999)
    # off: measured across the fidelity matrix (README, "Options measured so far"); the decay warms up as
    # min(ema, (1 + step) / (10 + step)), so the init vectors do not linger in the average
    picture_samples: int = opt(8, "when an image encoder is given (the node's clip_vision input, --image-encoder, "
                                  "train(..., image_encoder=...)): pictures of the word drawn at each validation; the "
                                  "run keeps and saves the word whose pictures look most like the training pictures, "
                                  "and early stop waits until that likeness stops rising", low=1, high=64)
    # 8: on the toy world's failing runs the likeness of 8 pictures ranked the better of two words (25 points of
    # reconstruction apart) right in 249 of 279 pairs, where the validation loss did in 18 of 32; 16 did no better
    # (README, "When is it done?")
    picture_steps: int = opt(20, "sampling steps of each picture check", low=1, high=1000)  # a preview's; 10
    # halves a check's cost but on the toy world's matrix kept worse words (54 cells at the bar against 58, README)
    picture_cfg: float = opt(5.0, "guidance scale of the picture checks", low=0.0)  # what the toy world's
    # fidelity is measured with; far higher guidance exaggerates colours the word only half holds
    picture_prompt: str = opt("a photo of a [name]", "what the picture checks draw; [name] becomes the word")
    # the reconstruction prompt: the thing alone, as the training pictures show it
    picture_keep_margin: float = opt(0.0, "with picture checks: a later word replaces the kept one only when its "
                                          "pictures look more like the training pictures by more than this many "
                                          "standard errors (of the difference over the check's pictures; 0 = the "
                                          "best-scored word)", low=0.0, high=10.0)
    # 0: on the 72-cell matrix, margins 1 and 2 keep early words longer and save worse ones on average (mean fidelity
    # 94.7 / 94.2 % against 95.5 %, 59 / 56 cells at the bar against 58; README "Keeping a word only when ...")
    nan_lr_factor: float = opt(0.5, "after a NaN/inf step, roll back and multiply the learning rate by this")

    def validate(self) -> None:
        check_name(self.name)
        for f in dataclasses.fields(self):
            _check_option(f.name, getattr(self, f.name), f.metadata["option"])
        checks = [
            (self.resolution % 8 == 0,
             f"resolution {self.resolution} must be a positive multiple of 8 (e.g. 512)"),
            (self.max_grad_norm > 0, f"max_grad_norm {self.max_grad_norm} must be positive"),
            (0 < self.nan_lr_factor < 1, f"nan_lr_factor {self.nan_lr_factor} must be between 0 and 1"),
            (not self.early_stop or self.validate_every,
             f"early_stop {self.early_stop} needs validate_every (e.g. 25): it counts validations without progress"),
            (self.early_stop_fraction < 1,
             f"early_stop_fraction {self.early_stop_fraction} must be from 0 to 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise SettingError(message + ".")
        parse_lr(self.learning_rate)
        templates.load_templates(self.template)  # a missing or empty template file, before the model loads
        if self.resume:
            require_state_file(self.resume)


def _check_option(name: str, value, option: Option) -> None:
    if value is None:
        return
    if option.choices is not None and value not in option.choices:
        raise SettingError(f"{name} {value!r} must be one of {', '.join(map(str, option.choices))}.")
    low, high = option.low, option.high
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"{low:g} to {high:g}" if low is not None and high is not None else (
            f"at least {low:g}" if low is not None else f"at most {high:g}")
        raise SettingError(f"{name} {value} must be {span}.")


# ---------------------------------------------------------------------------------------------------------
# what the command line, the node and the README make of the options


def options() -> list:
    """(field, Option, default, type) of every TrainConfig field, in declaration order."""
    hints = typing.get_type_hints(TrainConfig)
    out = []
    for f in dataclasses.fields(TrainConfig):
        kind = hints[f.name]
        if typing.get_origin(kind) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        out.append((f.name, f.metadata["option"], f.default, kind))
    return out


def help_text(option: Option) -> str:
    """The option's help, with {field} filled from the defaults (so a threshold is never written out twice)."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    return option.help.format(**defaults)


def cli_flag(name: str, option: Option) -> str | None:
    if option.flag == "":
        return None
    return option.flag or "--" + name.replace("_", "-")


def add_cli_arguments(parser) -> None:
    """One argparse option per TrainConfig field, its dest the field's name, its default the field's."""
    import argparse

    for name, option, default, kind in options():
        flag = cli_flag(name, option)
        if flag is None:
            continue
        text = help_text(option).replace("%", "%%")
        if kind is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=default,
                                help=f"{text} (default {'on' if default else 'off'})")
            continue
        required = default is dataclasses.MISSING or option.cli_required
        shown = "" if required or default is None else f" (default {default})"
        parser.add_argument(flag, dest=name, type=kind, choices=option.choices, required=required,
                            default=None if default is dataclasses.MISSING else default, help=text + shown)


def config_from_args(args) -> TrainConfig:
    return TrainConfig(**{name: getattr(args, name) for name, option, _, _ in options()
                          if cli_flag(name, option) is not None})


def node_input(name: str, default_override=dataclasses.MISSING) -> tuple:
    """The ComfyUI V1 input spec of one option: its widget, default, range and tooltip."""
    option, default, kind = next((o, d, k) for n, o, d, k in options() if n == name)
    if default_override is not dataclasses.MISSING:
        default = default_override
    spec = {"tooltip": help_text(option)[0].upper() + help_text(option)[1:] + "."}
    if default is not dataclasses.MISSING:
        spec["default"] = default
    if option.choices is not None:
        return list(option.choices), spec
    if kind in (int, float):
        for key, value in (("min", option.low), ("max", option.high), ("step", option.step)):
            if value is not None:
                spec[key] = kind(value)
        return ("INT" if kind is int else "FLOAT"), spec
    return {bool: "BOOLEAN", str: "STRING"}[kind], spec


def options_markdown(node_names: dict | None = None, node_defaults: dict | None = None) -> str:
    """The README's table of training options. `node_names`: field -> the node input's name, where it is one;
    `node_defaults`: field -> the node's default, where it differs."""
    node_names, node_defaults = node_names or {}, node_defaults or {}
    rows = ["| option | command line | node input | default | range | what |", "|---|---|---|---|---|---|"]
    for name, option, default, kind in options():
        flag = cli_flag(name, option)
        if default is dataclasses.MISSING or option.cli_required:
            shown = "required on the command line" if flag else "required"
        else:
            shown = "unset" if default is None else ({True: "on", False: "off"}[default] if kind is bool
                                                     else str(default))
        if name in node_defaults:
            shown += f" (node: {node_defaults[name]})"
        if option.choices is not None:
            span = " / ".join(map(str, option.choices))
        elif option.low is not None or option.high is not None:
            low = "" if option.low is None else f"{kind(option.low)}"
            high = "" if option.high is None or option.high == MAX_SEED else f"{kind(option.high)}"
            span = f"{low}-{high}" if high else f"{low} or more"
        else:
            span = ""
        node = node_names.get(name, "")
        cli = f"`{flag}`" if flag and kind is not bool else (f"`{flag}` / `--no-{flag[2:]}`" if flag else "")
        rows.append(f"| `{name}` | {cli} | {f'`{node}`' if node else ''} | {shown} | {span} | {help_text(option)} |")
    return "\n".join(rows) + "\n"
