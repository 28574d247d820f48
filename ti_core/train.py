"""Textual inversion: learn a new word's vectors from a few images while the whole model stays frozen.

Only an n x D fp32 parameter per text encoder is trained (SDXL: one for clip_l, one for clip_g). It is
spliced in at the token-embedding layer (prompt.splice), so the vocabulary is never resized and AdamW keeps
state for n x D numbers instead of the 49408-row table. Latents are cached once (latents.py), so a step is
just text encoder + UNet forward and backward. The caller owns the UI: `on_step(info)` after every step and
`should_stop()` polled before every step.

The pieces: the options (train_config), the batches and the loss (train_draws), the guarded optimizer step
(train_step), resume states (train_state), and what happens around the steps (train_callbacks).

Under torch.distributed (distributed.py) each process computes its share of every batch and the vectors'
gradients are summed; all processes validate (each a share) and take the same decisions, and rank 0 alone saves,
previews and reports.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import __version__, distributed
from .embeddings import Embedding, save_embedding
from .errors import SettingError
from .models import DTYPES
from .schedule import parse_lr
from .train_callbacks import Preview, Reporter, Saver, Validation
from .train_config import PRECISIONS, TrainConfig
from .train_draws import DenoisingLoss, Draws, Rng
from .train_state import capture, load_state, restore, save_state
from .train_step import GuardedStep
from .vectors import effective, init_vectors, norm_penalty, vocab_norm

__all__ = ["PRECISIONS", "StepInfo", "TrainConfig", "TrainResult", "compute_dtype", "init_vectors",
           "state_path_for", "train"]


def compute_dtype(model, precision: str) -> torch.dtype:
    """The dtype the frozen model computes in: its own, or a lower one through autocast (never a higher one)."""
    if precision == "model" or DTYPES[precision] == model.dtype:
        return model.dtype
    if model.dtype != torch.float32:
        name = str(model.dtype).replace("torch.", "")
        raise SettingError(f"precision {precision} needs the model loaded in fp32 (it is {name}); "
                           "load it in fp32, or use precision 'model'.")
    return DTYPES[precision]


@dataclass
class StepInfo:
    step: int
    steps: int
    loss: float
    smoothed_loss: float
    lr: float
    vector_norms: list  # per text encoder, the L2 norm of each vector
    elapsed: float
    eta: float
    nan_rollbacks: int = 0
    preview: torch.Tensor | None = None  # [B, H, W, C] in 0..1 when a preview was made at this step
    saved: str | None = None  # the embedding file written at this step
    val_loss: float | None = None  # the validation loss, at steps where one was measured
    vectors: dict | None = None  # the vectors after this step (key -> [n, D] copy), e.g. to judge them mid-run
    picture_score: float | None = None  # the picture check's likeness, at steps where one was made


OUTCOMES = {  # how a run ended, and how the CLI, the node and the browser word it
    "finished": "finished",
    "early_stop": "early stop (the word stopped improving)",
    "cancelled": "stopped on request",
}


@dataclass
class TrainResult:
    embedding: Embedding
    steps_done: int
    outcome: str  # a key of OUTCOMES
    losses: list = field(default_factory=list)
    path: str | None = None
    state_path: str | None = None
    nan_rollbacks: int = 0
    seconds: float = 0.0
    val_losses: list = field(default_factory=list)  # (step, validation loss) pairs; step 0 = the init vectors
    steps: int = 0  # the steps asked for
    first_step: int = 0  # the step this run started from (a resume's)
    picture_scores: list = field(default_factory=list)  # (step, likeness) pairs of the picture checks, if any
    kept_step: int | None = None  # with picture checks: the step of the saved word (the best-scored one)
    kept_steps: list = field(default_factory=list)  # (step, the step of the word kept after that check) pairs

    @property
    def stopped(self) -> bool:
        """True when should_stop() ended the run early."""
        return self.outcome == "cancelled"

    @property
    def early_stopped(self) -> bool:
        """True when the validation loss stopped improving (config.early_stop)."""
        return self.outcome == "early_stop"

    @property
    def best_step(self) -> int | None:
        """The step with the lowest validation loss, if any was measured."""
        return min(self.val_losses, key=lambda pair: pair[1])[0] if self.val_losses else None

    def report(self) -> dict:
        """The outcome as JSON-ready data, for a front end (never parsed back from text)."""
        return {"name": self.embedding.name, "outcome": self.outcome, "label": OUTCOMES[self.outcome],
                "step": self.steps_done, "steps": self.steps, "first_step": self.first_step, "path": self.path,
                "state_path": self.state_path,
                "nan_rollbacks": self.nan_rollbacks, "best_step": self.best_step, "kept_step": self.kept_step,
                "seconds": round(self.seconds, 1)}

    def summary(self) -> str:
        """One line saying how the run ended and where it saved."""
        text = f"{self.embedding.name}: {OUTCOMES[self.outcome]} at step {self.steps_done} of {self.steps}"
        if self.first_step:
            text += f" (resumed at step {self.first_step})"
        text += f" in {self.seconds:.1f} s; saved {self.path}" if self.path else f" in {self.seconds:.1f} s; not saved"
        if self.kept_step is not None:
            text += f"; the word saved is step {self.kept_step}'s, whose pictures looked most like the training ones"
        elif self.best_step is not None:
            text += f"; lowest validation loss at step {self.best_step}"
        if self.nan_rollbacks:
            text += f"; {self.nan_rollbacks} NaN rollback(s)"
        return text


def state_path_for(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name.rsplit(".", 1)[0] + ".state.safetensors")


# ---------------------------------------------------------------------------------------------------------
# the loop


def train(model, images, config: TrainConfig, on_step: Callable[[StepInfo], None] | None = None,
          should_stop: Callable[[], bool] | None = None, image_encoder=None) -> TrainResult:
    """Train `config.name` on `images` (a folder or a list of data.SourceImage) with `model` frozen.

    `image_encoder` (pictures [N, 3, H, W] in 0..1 -> features [N, D], e.g. a CLIP vision model) turns on the
    picture checks (picture_check.py): the run keeps the word whose pictures look most like the training pictures,
    and early stop waits for that likeness to stop rising."""
    world = distributed.current()
    with distributed.main_speaks(world):
        return _train(model, images, config, on_step, should_stop, world, image_encoder)


def _train(model, images, config: TrainConfig, on_step, should_stop, world: distributed.World,
           image_encoder=None) -> TrainResult:
    config.validate()
    if image_encoder is not None and not config.validate_every:
        raise SettingError("picture checks (an image encoder was given) run at each validation; set "
                           "validate_every (e.g. 25), or give no image encoder.")
    images = _as_images(images)
    views = len(images) * (2 if config.flip else 1)  # each picture, and its mirror image when flipping
    if config.batch_size > views:
        seen = f"{views} views ({len(images)} pictures, each also mirrored)" if config.flip else f"{views} pictures"
        logging.getLogger("ti_core").warning(
            f"batch_size {config.batch_size} is larger than the {seen}: each batch draws them with repetition, "
            "so a step costs more without adding much; a batch of at most "
            f"{views} is as good and faster."
        )
    output = Path(config.output) if config.output else None
    if output is not None and world.is_main:  # the other processes never write
        check_output(output, resuming=bool(config.resume))
    with torch.inference_mode(False), torch.enable_grad():
        trainer = Trainer(model, images, config, output, world)
        checks = None
        if image_encoder is not None:
            from .picture_check import PictureCheck

            checks = PictureCheck(config, image_encoder, images, trainer.resolution)
        return trainer.run(_callbacks(config, trainer.resolution, on_step, world.is_main, checks), should_stop)


def check_output(output: Path, resuming: bool) -> None:
    """Fail before training if the embedding could not be saved: name taken, or folder not writable."""
    if output.exists() and not resuming:
        raise SettingError(f"{output} already exists; choose another name, delete it, or resume from its state.")
    folder = output.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".{output.name}.write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise SettingError(f"cannot write to {folder} ({e.strerror or e}); "
                           "choose a folder you can write to.") from None


def _as_images(images) -> list:
    from . import data

    if isinstance(images, (str, Path)):
        images, warnings = data.load_images(images)
        for warning in warnings:  # e.g. skipped non-image files, a single image
            logging.getLogger("ti_core").warning(warning)
    if not images:
        raise SettingError("no training images were given.")
    return list(images)


def initial_vectors(model, config: TrainConfig) -> list:
    """The word's vectors at step 0 (per text encoder), as every run of `config` starts from them."""
    return init_vectors(model, config.init_text, config.vectors, torch.Generator().manual_seed(config.seed + 2),
                        config.init_mode)


class _StepEvents:
    """What the callbacks did at this step, for the report."""

    def __init__(self):
        self.val_loss, self.saved, self.preview, self.picture_score = None, None, None, None


def _callbacks(config: TrainConfig, resolution: int, on_step, main: bool = True, picture_check=None) -> list:
    """In this order: the picture check, then the validation, which may end the run (reading both) and so skip the
    step's save; the report comes last. Every process validates (its share; they decide early stop together) and
    checks pictures (the same ones); only the main one saves, previews, reports."""
    callbacks = [picture_check] if picture_check is not None else []
    if config.validate_every:
        callbacks.append(Validation(config))
    if not main:
        return callbacks
    callbacks.append(Saver(config.save_every))
    if config.preview_every:
        callbacks.append(Preview(config, resolution))
    if on_step:
        callbacks.append(Reporter(on_step))
    return callbacks


class Trainer:
    """One run: the vectors, their draws and loss, the guarded step, and the record the callbacks read."""

    def __init__(self, model, images, config: TrainConfig, output: Path | None,
                 world: distributed.World = distributed.World()):
        self.model, self.config, self.output, self.world = model, config, output, world
        if config.batch_size < world.size:
            raise SettingError(f"batch_size {config.batch_size} is smaller than the {world.size} processes it is "
                               f"split across; use a batch of at least {world.size}, or fewer processes.")
        beside = state_path_for(output) if output else None
        self.state_path = Path(config.state_path) if config.state_path else beside
        self.resolution = config.resolution or model.resolution
        self.rng = Rng.seeded(config.seed)  # the training draws
        init = initial_vectors(model, config)
        self.params = [v.requires_grad_(True) for v in init]
        self.lengths = [v.detach().norm(dim=1) for v in init]  # kept when vector_norm is "fixed"
        self.norm_targets = vocab_norm(model)  # pulled toward when vector_norm is "vocab"
        self.average = [v.detach().clone() for v in self.vectors()] if config.ema else None  # the word, averaged
        draws = Draws(model, images, config, self.resolution, Embedding(config.name, self.vector_dict()))
        precision = compute_dtype(model, config.precision)
        self.loss = DenoisingLoss(model, draws, precision, config.batch_size, config.snr_gamma, world)
        self.guard = GuardedStep(self.params, parse_lr(config.learning_rate), config, precision == torch.float16,
                                 world)
        self.step, self.smoothed, self.losses, self.last_loss = 0, None, [], float("nan")
        self.val_losses = []  # (step, validation loss)
        self.picture_scores = []  # (step, likeness) of the picture checks
        self.kept, self.kept_step, self.kept_score = None, None, None  # the best-scored word (picture checks)
        self.kept_cosines, self.kept_steps = None, []  # its check pictures' cosines; the kept step after each check
        self.outcome, self.saved_path, self.events = None, None, _StepEvents()
        if config.resume:
            restore(self, load_state(config.resume))
        self.guard.remember()

    def vectors(self) -> list:
        """The vectors the prompts get: the parameters, rescaled to their initial length when that is fixed."""
        return effective(self.params, self.config.vector_norm, self.lengths)

    def word_vectors(self) -> list:
        """The word's vectors as validated, previewed and saved: the moving average when config.ema is on."""
        return self.average if self.average is not None else self.vectors()

    def update_average(self) -> None:
        if self.average is None:
            return
        decay = min(self.config.ema, (1 + self.step) / (10 + self.step))  # warm-up: the init fades out fast
        with torch.no_grad():
            for a, v in zip(self.average, self.vectors()):
                a.mul_(decay).add_(v.detach(), alpha=1 - decay)

    def objective(self) -> torch.Tensor:
        """One training draw's loss, with the length penalty when vector_norm is "vocab"."""
        loss = self.loss(self.vectors(), self.rng)
        if self.config.vector_norm == "vocab" and self.world.is_main:  # once in the sum over processes
            loss = loss + self.config.norm_weight * norm_penalty(self.params, self.norm_targets)
        return loss

    def vector_dict(self) -> dict:
        keys = [k[0] for k in self.model.embedding_keys]
        return {k: p.detach().clone() for k, p in zip(keys, self.word_vectors())}

    def keep(self, score: float, cosines: list | None = None) -> None:
        """Keep the word as it is now as the one to save (its pictures look most like the training pictures)."""
        self.kept, self.kept_step, self.kept_score = self.vector_dict(), self.step, score
        self.kept_cosines = cosines

    def embedding(self) -> Embedding:
        """The word to save: the kept one when pictures are checked, else the word as it is now."""
        settings = {k: v for k, v in asdict(self.config).items() if k not in ("output", "resume", "state_path")}
        metadata = {
            "step": str(self.step if self.kept is None else self.kept_step),
            "base_family": self.model.family,
            "base_model": Path(self.model.source).name,
            "init_text": self.config.init_text,
            "training": json.dumps(settings),
            "software": f"ti_core {__version__}",
        }
        vectors = self.vector_dict() if self.kept is None else {k: v.clone() for k, v in self.kept.items()}
        return Embedding(self.config.name, vectors, metadata)

    def save(self) -> Path | None:
        if self.output is None or not self.world.is_main:
            return None
        # The state first: wherever the embedding is, a state to resume from is too (a kill between the two leaves
        # the newer state beside the older embedding), so a rerun of a preempted job can always resume.
        save_state(self.state_path, capture(self))
        save_embedding(self.embedding(), self.output, overwrite=True)
        return self.output

    def _record(self, loss: float) -> None:
        self.last_loss = loss
        if math.isfinite(loss):  # a rolled-back step has no loss
            self.losses.append(loss)
            s = self.config.loss_smoothing
            self.smoothed = loss if self.smoothed is None else s * self.smoothed + (1 - s) * loss

    def run(self, callbacks: list, should_stop=None) -> TrainResult:
        started, config, first_step = time.perf_counter(), self.config, self.step
        for callback in callbacks:
            callback.on_run_start(self)
        with _gradient_checkpointing(self.model.unet, config.gradient_checkpointing):
            while self.step < config.steps and self.outcome is None:
                if self.world.any(bool(should_stop and should_stop())):  # asked of every process, decided by all
                    self.outcome = "cancelled"
                    break
                loss = self.guard(self.objective, self.step)
                self.step += 1
                self.update_average()
                self._record(loss)
                self.events = _StepEvents()
                for callback in callbacks:
                    callback.on_step_end(self)
            for callback in callbacks:
                callback.on_run_end(self)
        saved = self.saved_path
        return TrainResult(
            embedding=self.embedding(), steps_done=self.step, outcome=self.outcome or "finished",
            losses=list(self.losses), path=str(saved) if saved else None,
            state_path=str(self.state_path) if saved else None, nan_rollbacks=self.guard.nan_rollbacks,
            seconds=time.perf_counter() - started, val_losses=list(self.val_losses), steps=config.steps,
            first_step=first_step, picture_scores=list(self.picture_scores), kept_step=self.kept_step,
            kept_steps=list(self.kept_steps),
        )


@contextlib.contextmanager
def _gradient_checkpointing(unet, wanted: bool):
    """The UNet with gradient checkpointing on for the run when wanted, and as it was afterwards."""
    switch = wanted and not unet.is_gradient_checkpointing
    if switch:
        unet.enable_gradient_checkpointing()
    try:
        yield
    finally:
        if switch:
            unet.disable_gradient_checkpointing()
