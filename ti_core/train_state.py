"""Resume states: everything a run needs to continue bit-exactly, as safetensors + JSON (never a pickle)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .atomic import atomic_write
from .errors import SettingError

STATE_KEY = "ti_core.train_state"
VERSION = 1


@dataclass
class TrainState:
    name: str
    step: int
    vectors: list  # per text encoder, [n, D] fp32
    optimizer: dict  # torch optimizer state_dict (AdamW)
    rng: tuple  # random.Random.getstate()
    generator: torch.Tensor  # torch.Generator.get_state()
    lr_scale: float = 1.0
    nan_rollbacks: int = 0
    smoothed: float | None = None
    losses: list = field(default_factory=list)
    loss_scale: float = 1.0  # fp16 only
    val_losses: list = field(default_factory=list)  # [step, validation loss] pairs
    average: list = field(default_factory=list)  # per text encoder, the vectors' moving average (config.ema)
    picture_scores: list = field(default_factory=list)  # [step, likeness] pairs of the picture checks
    kept: list = field(default_factory=list)  # per text encoder, the best-scored word's vectors (picture checks)
    kept_step: int | None = None
    kept_score: float | None = None
    kept_cosines: list | None = None  # the kept word's check pictures' cosines (picture_keep_margin compares them)
    kept_steps: list = field(default_factory=list)  # [step, kept step] after each picture check
    drawn: int = 0  # views drawn so far in shuffled order (config.order)


def save_state(path, state: TrainState) -> Path:
    from safetensors.torch import save

    tensors = {f"vector.{i}": v.detach().float().cpu().contiguous() for i, v in enumerate(state.vectors)}
    tensors.update({f"average.{i}": v.detach().float().cpu().contiguous() for i, v in enumerate(state.average)})
    tensors.update({f"kept.{i}": v.detach().float().cpu().contiguous() for i, v in enumerate(state.kept)})
    tensors["generator"] = state.generator.clone()
    scalars = {}
    for pid, entries in state.optimizer["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    version, internal, gauss = state.rng
    meta = {
        "version": VERSION, "name": state.name, "step": state.step, "lr_scale": state.lr_scale,
        "nan_rollbacks": state.nan_rollbacks, "smoothed": state.smoothed, "losses": state.losses,
        "rng": [version, list(internal), gauss], "param_groups": state.optimizer["param_groups"],
        "optimizer_scalars": scalars, "vectors": len(state.vectors), "loss_scale": state.loss_scale,
        "val_losses": state.val_losses, "average": len(state.average),
        "picture_scores": state.picture_scores, "kept": len(state.kept), "kept_step": state.kept_step,
        "kept_score": state.kept_score, "kept_cosines": state.kept_cosines, "kept_steps": state.kept_steps,
        "drawn": state.drawn,
    }
    data = save(tensors, metadata={STATE_KEY: json.dumps(meta)})
    return atomic_write(path, lambda f: f.write(data), overwrite=True)


def require_state_file(path) -> Path:
    """`path` if it is a file; else the error saying where resume states are written (checked before training)."""
    path = Path(path)
    if not path.is_file():
        raise SettingError(f"{path}: no such resume state. "
                           "It is written beside the embedding as NAME.state.safetensors.")
    return path


def load_state(path) -> TrainState:
    from safetensors import SafetensorError, safe_open

    path = require_state_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[STATE_KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise SettingError(f"{path}: not a ti_core resume state ({e}).") from None
    if meta.get("version") != VERSION:
        raise SettingError(f"{path}: resume state version {meta.get('version')} is not supported "
                           f"(expected {VERSION}).")
    optim_state = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, pid, name = key.split(".", 2)
            optim_state.setdefault(int(pid), {})[name] = value
    for pid, entries in meta["optimizer_scalars"].items():
        optim_state.setdefault(int(pid), {}).update(entries)
    version, internal, gauss = meta["rng"]
    return TrainState(
        name=meta["name"], step=meta["step"],
        vectors=[tensors[f"vector.{i}"] for i in range(meta["vectors"])],
        optimizer={"state": optim_state, "param_groups": meta["param_groups"]},
        rng=(version, tuple(internal), gauss), generator=tensors["generator"],
        lr_scale=meta["lr_scale"], nan_rollbacks=meta["nan_rollbacks"], smoothed=meta["smoothed"],
        losses=meta["losses"],
        loss_scale=meta["loss_scale"], val_losses=meta["val_losses"],
        average=[tensors[f"average.{i}"] for i in range(meta.get("average", 0))],
        picture_scores=meta.get("picture_scores", []), kept=[tensors[f"kept.{i}"] for i in range(meta.get("kept", 0))],
        kept_step=meta.get("kept_step"), kept_score=meta.get("kept_score"), kept_cosines=meta.get("kept_cosines"),
        kept_steps=meta.get("kept_steps", []), drawn=meta.get("drawn", 0),
    )


def capture(trainer) -> TrainState:
    """The trainer's state after its last step."""
    guard = trainer.guard
    return TrainState(
        name=trainer.config.name, step=trainer.step, vectors=[p.detach() for p in trainer.params],
        optimizer=guard.optimizer.state_dict(), rng=trainer.rng.random.getstate(),
        generator=trainer.rng.torch.get_state(),
        lr_scale=guard.lr_scale, nan_rollbacks=guard.nan_rollbacks, smoothed=trainer.smoothed,
        losses=trainer.losses, loss_scale=guard.loss_scale, val_losses=[list(pair) for pair in trainer.val_losses],
        average=[a.detach() for a in trainer.average or []],
        picture_scores=[list(pair) for pair in trainer.picture_scores],
        kept=list((trainer.kept or {}).values()), kept_step=trainer.kept_step, kept_score=trainer.kept_score,
        kept_cosines=trainer.kept_cosines, kept_steps=[list(pair) for pair in trainer.kept_steps],
        drawn=trainer.rng.drawn,
    )


def restore(trainer, state: TrainState) -> None:
    """Put `state` back into a freshly made trainer, so that it continues bit-exactly."""
    params, guard = trainer.params, trainer.guard
    widths = [tuple(p.shape) for p in params]
    if state.name != trainer.config.name or [tuple(v.shape) for v in state.vectors] != widths:
        raise SettingError(
            f"the resume state is for {state.name!r} with vectors {[tuple(v.shape) for v in state.vectors]}, "
            f"but this run trains {trainer.config.name!r} with {widths} on this model."
        )
    with torch.no_grad():
        for p, v in zip(params, state.vectors):
            p.copy_(v)
    guard.optimizer.load_state_dict(state.optimizer)
    trainer.rng.random.setstate(state.rng)
    trainer.rng.torch.set_state(state.generator)
    trainer.rng.drawn = state.drawn
    trainer.step, guard.lr_scale, guard.nan_rollbacks = state.step, state.lr_scale, state.nan_rollbacks
    guard.loss_scale = state.loss_scale
    trainer.smoothed, trainer.losses = state.smoothed, list(state.losses)
    trainer.val_losses = [tuple(pair) for pair in state.val_losses]
    trainer.picture_scores = [tuple(pair) for pair in state.picture_scores]
    if state.kept:  # the best-scored word so far: later checks must beat it to replace it
        keys = [k[0] for k in trainer.model.embedding_keys]
        trainer.kept = {k: v.to(device=p.device, dtype=p.dtype) for k, v, p in zip(keys, state.kept, params)}
        trainer.kept_step, trainer.kept_score = state.kept_step, state.kept_score
        trainer.kept_cosines = state.kept_cosines  # None from an older state: the scores compare then
    trainer.kept_steps = [tuple(pair) for pair in state.kept_steps]
    if trainer.average is not None:  # a state saved without an average: it starts from the resumed vectors
        trainer.average = ([v.to(device=p.device, dtype=p.dtype) for v, p in zip(state.average, params)]
                           or [v.detach().clone() for v in trainer.vectors()])
