"""Textual inversion: learn a new word's vectors from a few images while the whole model stays frozen.

Only an n x D fp32 parameter per text encoder is trained (SDXL: one for clip_l, one for clip_g). It is
spliced in at the token-embedding layer (prompt.splice), so the vocabulary is never resized and AdamW keeps
state for n x D numbers instead of the 49408-row table. Latents are cached once (latents.py), so a step is
just text encoder + UNet forward and backward. The caller owns the UI: `on_step(info)` after every step and
`should_stop()` polled before every step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import __version__, latents, templates
from .embeddings import MAX_VECTORS, Embedding, check_name, save_embedding
from .errors import SettingError
from .loss_weights import min_snr_weights
from .memory import release_free_memory
from .prompt import chunk_ids, encode_pair, prompt_chunks, run_encoder, token_ids
from .schedule import parse_lr
from .vectors import INIT_MODES, NORM_MODES, effective, init_vectors, norm_penalty, vocab_norm
from .train_state import TrainState, load_state, require_state_file, save_state


PRECISIONS = ("model", "fp32", "bf16", "fp16")
_PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def compute_dtype(model, precision: str) -> torch.dtype:
    """The dtype the frozen model computes in: its own, or a lower one through autocast (never a higher one)."""
    if precision == "model" or _PRECISION_DTYPES[precision] == model.dtype:
        return model.dtype
    if model.dtype != torch.float32:
        name = str(model.dtype).replace("torch.", "")
        raise SettingError(f"precision {precision} needs the model loaded in fp32 (it is {name}); "
                           "load it in fp32, or use precision 'model'.")
    return _PRECISION_DTYPES[precision]


@dataclass(frozen=True)
class TrainConfig:
    name: str  # the new word: `embedding:name` in prompts and the file name
    init_text: str = "*"  # A1111's default; its tokens are spread over the vectors. "" = small random vectors
    vectors: int = 1  # 1 is enough for an object; styles and faces often gain from 2-8
    steps: int = 1000  # optimizer steps; most concepts are learned in the first few hundred (DVAR)
    learning_rate: str = "5e-3"  # A1111's default; a number or a schedule "5e-3:100, 1e-3:1000, 1e-5"
    batch_size: int = 1  # images per forward pass; memory grows with it
    grad_accum: int = 1  # forward passes per optimizer step (effective batch = batch_size x grad_accum)
    max_grad_norm: float = 1.0  # clip the vectors' gradient norm: the cheapest guard against NaN losses
    weight_decay: float = 0.0  # A1111 uses none; decay would pull the vectors toward zero, i.e. toward no meaning
    resolution: int | None = None  # training size in pixels; None = the model's native size
    crop: str = "random"  # random (new crop each step) | center | pad (whole image on a square, never stretched)
    pad_fill: str = "edge"  # for crop="pad": edge (extend edge pixels) | blur
    flip: bool = True  # mirror at random: twice the views from 3-5 images (paper, diffusers); off for text/logos
    latents: str = "mean"  # mean (posterior mean, deterministic) | sample (one draw) | resample (new draw per step)
    use_alpha: bool = False  # weight the loss by the image's alpha channel, as A1111 allows
    template: str = "object"  # object | style | path to a template file with [name] and [filewords]
    save_every: int = 100  # steps between atomic saves of the embedding and the resume state (0 = only at the end)
    preview_every: int = 0  # steps between preview images (0 = none); previews cost a full sampling run
    preview_prompt: str = "a photo of [name]"  # [name] becomes the embedding; fixed so previews compare
    preview_steps: int = 20
    preview_seed: int = 0
    seed: int = 0  # everything random (timesteps, noise, crops, templates) derives from it
    gradient_checkpointing: bool = False  # less memory for the UNet backward, about 30% more time
    precision: str = "model"  # model (the dtype it was loaded in) | fp32 | bf16 | fp16 (autocast on an fp32 model);
    # loading the model in bf16/fp16 is faster and lighter still, since weights are not cast at every op
    output: str | None = None  # where to save the embedding (.safetensors); None = do not save
    resume: str | None = None  # a resume state written by an earlier run (<output>.state.safetensors)
    state_path: str | None = None  # where to write the resume state; None = beside the output (a UI may want it
    # elsewhere: ComfyUI lists every .safetensors in models/embeddings as an embedding)
    loss_smoothing: float = 0.9  # EMA factor for the smoothed loss shown to the user
    validate_every: int = 0  # steps between validation losses (0 = none). The training loss jumps with each
    # step's random timestep; this one re-uses the same images, crops, prompts, timesteps and noise every time
    # (Voronov et al. 2023, "Is This Loss Informative?"), so its curve shows when the word stops improving
    validation_samples: int = 16  # fixed draws per validation, timesteps spread evenly over the schedule; each
    # costs one forward pass (no backward), so 16 every 25 steps adds about a fifth to the training time
    early_stop: int = 0  # stop after this many validations in a row without a new best (0 = run all steps);
    # needs validate_every. 4 (with validate_every 25) stopped the toy-world runs at 19-25% of 900 steps with the
    # fidelity of the full runs; 3 once stopped during a plateau before the colour was learned
    early_stop_delta: float = 0.002  # a new best must beat the old one by this fraction. The draws are fixed, so
    # the value has no sampling noise, and a concept's last details move it little: in the toy world the star's
    # colour, learned between steps 100 and 150, lowers it by 0.3%, so 1% stopped before that; with 0.1% the
    # 0.1-0.2% wobbles of a learned word kept the runs going to 325-400 steps (bench/toyworld_early_stop.py)
    snr_gamma: float = 0.0  # Min-SNR loss weighting (0 = uniform)
    init_mode: str = "tokens"  # tokens (the init text's token vectors) | encoder (the text encoder's output for them)
    vector_norm: str = "free"  # free | fixed (keep the init length, train the direction) | vocab (pull toward the
    # vocabulary's mean length with norm_weight)
    norm_weight: float = 0.01  # for vector_norm "vocab": the penalty's weight beside the denoising loss
    nan_lr_factor: float = 0.5  # after a NaN/inf step, roll back and multiply the learning rate by this

    def validate(self) -> None:
        checks = [
            (1 <= self.vectors <= MAX_VECTORS, f"vectors {self.vectors} must be 1 to {MAX_VECTORS}"),
            (self.steps >= 1, f"steps {self.steps} must be at least 1"),
            (self.batch_size >= 1, f"batch_size {self.batch_size} must be at least 1"),
            (self.grad_accum >= 1, f"grad_accum {self.grad_accum} must be at least 1"),
            (self.crop in ("random", "center", "pad"), f"crop {self.crop!r} must be random, center or pad"),
            (self.latents in latents.LATENT_MODES, f"latents {self.latents!r} must be one of {latents.LATENT_MODES}"),
            (self.resolution is None or (self.resolution >= 8 and self.resolution % 8 == 0),
             f"resolution {self.resolution} must be a positive multiple of 8 (e.g. 512)"),
            (self.save_every >= 0 and self.preview_every >= 0, "save_every and preview_every must be 0 or more"),
            (self.max_grad_norm > 0, f"max_grad_norm {self.max_grad_norm} must be positive"),
            (0 < self.nan_lr_factor < 1, f"nan_lr_factor {self.nan_lr_factor} must be between 0 and 1"),
            (self.validate_every >= 0, f"validate_every {self.validate_every} must be 0 (off) or more"),
            (self.validation_samples >= 1, f"validation_samples {self.validation_samples} must be at least 1"),
            (self.early_stop >= 0, f"early_stop {self.early_stop} must be 0 (off) or more"),
            (not self.early_stop or self.validate_every,
             f"early_stop {self.early_stop} needs validate_every (e.g. 25): it counts validations without progress"),
            (0 <= self.early_stop_delta < 1, f"early_stop_delta {self.early_stop_delta} must be from 0 to 1"),
            (self.init_mode in INIT_MODES, f"init_mode {self.init_mode!r} must be one of {', '.join(INIT_MODES)}"),
            (self.vector_norm in NORM_MODES, f"vector_norm {self.vector_norm!r} must be one of {', '.join(NORM_MODES)}"),
            (self.norm_weight >= 0, f"norm_weight {self.norm_weight} must be 0 or more"),
            (self.precision in PRECISIONS, f"precision {self.precision!r} must be one of {', '.join(PRECISIONS)}"),
        ]
        check_name(self.name)
        for ok, message in checks:
            if not ok:
                raise SettingError(message + ".")
        parse_lr(self.learning_rate)
        templates.load_templates(self.template)  # a missing or empty template file, before the model loads
        if self.resume:
            require_state_file(self.resume)


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


@dataclass
class TrainResult:
    embedding: Embedding
    steps_done: int
    stopped: bool  # True when should_stop() ended the run early
    losses: list = field(default_factory=list)
    path: str | None = None
    state_path: str | None = None
    nan_rollbacks: int = 0
    seconds: float = 0.0
    val_losses: list = field(default_factory=list)  # (step, validation loss) pairs; step 0 = the init vectors
    early_stopped: bool = False  # True when the validation loss stopped improving (config.early_stop)

    @property
    def best_step(self) -> int | None:
        """The step with the lowest validation loss, if any was measured."""
        return min(self.val_losses, key=lambda pair: pair[1])[0] if self.val_losses else None


def state_path_for(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name.rsplit(".", 1)[0] + ".state.safetensors")


# ---------------------------------------------------------------------------------------------------------
# initial vectors


# ---------------------------------------------------------------------------------------------------------
# prompts


@dataclass
class _PromptLayout:
    ids: list  # per encoder: 77 ids
    positions: list  # (position, row) of each vector slot


def _layout(model, prompt: str, probe: Embedding) -> _PromptLayout:
    chunks = prompt_chunks(model, prompt, [probe])
    first = chunks[0]
    positions = [(p, s.row) for p, s in enumerate(first, start=1) if s.embedding is not None]
    if len(positions) != probe.num_vectors:
        raise SettingError(
            f"the training prompt {prompt[:80]!r} does not hold the embedding within its first 75 tokens; "
            "shorten the caption or the template."
        )
    return _PromptLayout([chunk_ids(t, first) for t in model.tokenizers], positions)


def _conditioning(model, layouts: list, params: list):
    """(encoder hidden states [B, 77, D], pooled [B, P] or None) with `params` spliced in, differentiable."""
    hidden, pooled = [], None
    b_idx = torch.tensor([b for b, lay in enumerate(layouts) for _ in lay.positions])
    p_idx = torch.tensor([p for lay in layouts for p, _ in lay.positions])
    r_idx = torch.tensor([r for lay in layouts for _, r in lay.positions])
    for index, param in enumerate(params):
        ids = torch.tensor([lay.ids[index] for lay in layouts], device=model.device)
        mask = torch.zeros(ids.shape, dtype=torch.bool, device=model.device)
        mask[b_idx, p_idx] = True
        values = torch.zeros(*ids.shape, param.shape[1], device=model.device)
        values = values.index_put((b_idx, p_idx), param[r_idx].to(model.device))
        h, pool = run_encoder(model, index, ids, mask, values)
        hidden.append(h)
        if index == 1:
            pooled = pool
    return torch.cat(hidden, dim=-1), pooled


# ---------------------------------------------------------------------------------------------------------
# the loop


def train(model, images, config: TrainConfig, on_step: Callable[[StepInfo], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Train `config.name` on `images` (a folder or a list of data.SourceImage) with `model` frozen."""
    config.validate()
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
    if output is not None:
        check_output(output, resuming=bool(config.resume))
    with torch.inference_mode(False), torch.enable_grad():
        return _Trainer(model, images, config, output).run(on_step, should_stop)


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
        raise SettingError(f"cannot write to {folder} ({e.strerror or e}); choose a folder you can write to.") from None


def _as_images(images) -> list:
    from . import data

    if isinstance(images, (str, Path)):
        images, warnings = data.load_images(images)
        for warning in warnings:  # e.g. skipped non-image files, a single image
            logging.getLogger("ti_core").warning(warning)
    if not images:
        raise SettingError("no training images were given.")
    return list(images)


class _Trainer:
    def __init__(self, model, images, config: TrainConfig, output: Path | None):
        self.model, self.config, self.output = model, config, output
        self.state_path = Path(config.state_path) if config.state_path else (state_path_for(output) if output else None)
        self.resolution = config.resolution or model.resolution
        self.schedule = parse_lr(config.learning_rate)
        self.templates = templates.load_templates(config.template)
        self.rng = random.Random(config.seed)  # crops, flips, templates
        self.generator = torch.Generator().manual_seed(config.seed)  # timesteps and noise
        cache_generator = torch.Generator().manual_seed(config.seed + 1)  # separate: resume re-caches identically
        self.cache = latents.cache_latents(model, images, self.resolution, config.crop, config.flip, config.latents,
                                           cache_generator, config.use_alpha, config.pad_fill)
        release_free_memory()  # the VAE encoder's activations
        self.params = [v.requires_grad_(True) for v in init_vectors(model, config.init_text, config.vectors,
                                                                     torch.Generator().manual_seed(config.seed + 2),
                                                                     config.init_mode)]
        self.lengths = [p.detach().norm(dim=1) for p in self.params]  # for vector_norm "fixed"
        self.norm_targets = vocab_norm(model)  # for vector_norm "vocab"
        self.optimizer = torch.optim.AdamW(self.params, lr=self.schedule.at(0), weight_decay=config.weight_decay)
        self.step, self.lr_scale, self.nan_rollbacks, self.smoothed, self.losses = 0, 1.0, 0, None, []
        self.val_losses = []  # (step, validation loss)
        # fp16 activations can underflow small gradients to zero; scale the loss up (and the gradients back
        # down), as mixed-precision training does. bf16 and fp32 have fp32's range and need no scaling.
        self.compute_dtype = compute_dtype(model, config.precision)
        self.loss_scale = 2.0**12 if self.compute_dtype == torch.float16 else 1.0
        self.layouts = {}
        self.probe = Embedding(config.name, self._vector_dict())
        from diffusers import DDPMScheduler

        self.noise_scheduler = DDPMScheduler.from_config(model.scheduler_config)
        if config.resume:
            self._restore(load_state(config.resume))
        self.good = self._snapshot()

    # -- pieces of one step ------------------------------------------------------------------------------

    def _vectors(self) -> list:
        """The vectors the prompts get (the parameters, rescaled when their length is fixed)."""
        return effective(self.params, self.config.vector_norm, self.lengths)

    def _vector_dict(self) -> dict:
        keys = [k[0] for k in self.model.embedding_keys]
        return {k: p.detach().clone() for k, p in zip(keys, self._vectors())}

    def _prompt(self, caption: str) -> _PromptLayout:
        template = self.rng.choice(self.templates)
        text = templates.render(template, f"embedding:{self.config.name}", caption)
        if text not in self.layouts:
            self.layouts[text] = _layout(self.model, text, self.probe)
        return self.layouts[text]

    def _batch(self, count: int):
        factor = self.model.vae_scale_factor
        picks = [self.rng.choice(self.cache) for _ in range(count)]
        items = [self.rng.choice(variants) for variants in picks]
        crops = [latents.crop_latent(c, self.resolution, factor, self.config.crop, self.rng, self.generator)
                 for c in items]
        layouts = [self._prompt(c.caption) for c in items]
        batch = torch.stack([c[0] for c in crops])
        weights = [c[1] for c in crops]
        weight = torch.stack(weights) if all(w is not None for w in weights) else None
        time_ids = [(*c.original_size, *crop[2], self.resolution, self.resolution) for c, crop in zip(items, crops)]
        return batch, weight, layouts, time_ids

    def _loss(self, timesteps: torch.Tensor | None = None) -> torch.Tensor:
        """The denoising loss of one batch drawn from self.rng/self.generator; `timesteps` fixes t (and the size)."""
        model, dtype = self.model, self.model.dtype
        latent, weight, layouts, time_ids = self._batch(self.config.batch_size if timesteps is None else len(timesteps))
        noise = torch.randn(latent.shape, generator=self.generator)
        if timesteps is None:
            t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (latent.shape[0],),
                              generator=self.generator)
        else:
            t = timesteps
        noisy = self.noise_scheduler.add_noise(latent, noise, t)
        if model.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latent, noise, t)
        else:
            target = noise
        with self._autocast():
            hidden, pooled = _conditioning(model, layouts, self._vectors())
            extra = {}
            if model.family == "sdxl":
                extra["added_cond_kwargs"] = {
                    "text_embeds": pooled.to(dtype),
                    "time_ids": torch.tensor(time_ids, dtype=dtype, device=model.device),
                }
            pred = model.unet(noisy.to(model.device, dtype), t.to(model.device),
                              encoder_hidden_states=hidden.to(dtype), return_dict=False, **extra)[0].float()
        error = (pred - target.to(pred.device)) ** 2
        if weight is None:
            per_sample = error.mean(dim=(1, 2, 3))
        else:
            weight = weight.to(error.device)
            per_sample = (error * weight).sum(dim=(1, 2, 3)) / (weight.sum(dim=(1, 2, 3)) * error.shape[1]).clamp_min(1e-8)
        snr_weight = min_snr_weights(self.noise_scheduler.alphas_cumprod, t, model.prediction_type, self.config.snr_gamma)
        return (per_sample * snr_weight.to(per_sample.device)).mean()

    def _autocast(self):
        if self.compute_dtype == self.model.dtype:
            return contextlib.nullcontext()
        return torch.autocast(self.model.device.type, dtype=self.compute_dtype)

    def fixed_loss(self, samples: int, seed: int, params: list | None = None) -> float:
        """The mean loss over `samples` fixed draws (image, crop, flip, prompt, noise from `seed`; timesteps spread
        evenly), of `params` or the current vectors. The same arguments give the same draws, so values compare
        across steps; the training draws (rng, generator) are left as they were."""
        total_t = self.noise_scheduler.config.num_train_timesteps
        timesteps = ((torch.arange(samples) + 0.5) * total_t / samples).long()
        chunk = max(1, self.config.batch_size)
        saved = self.params, self.rng, self.generator
        total = 0.0
        try:
            if params is not None:
                self.params = [torch.as_tensor(v, dtype=torch.float32) for v in params]
            with torch.no_grad():
                for i, start in enumerate(range(0, samples, chunk)):
                    self.rng, self.generator = random.Random(seed + i), torch.Generator().manual_seed(seed + i)
                    part = timesteps[start:start + chunk]
                    total += float(self._loss(part)) * len(part)
        finally:
            self.params, self.rng, self.generator = saved
        return total / samples

    def _snapshot(self):
        return ([p.detach().clone() for p in self.params], _clone_optimizer_state(self.optimizer))

    def _rollback(self):
        vectors, optim_state = self.good
        with torch.no_grad():
            for p, v in zip(self.params, vectors):
                p.copy_(v)
        self.optimizer.load_state_dict(_clone_optimizer_state_dict(optim_state))
        self.nan_rollbacks += 1
        self.lr_scale *= self.config.nan_lr_factor
        logging.getLogger("ti_core").warning(
            f"step {self.step + 1}: the loss or the gradient was NaN/inf; rolled back to the last good vectors and "
            f"lowered the learning rate to {self.lr_scale:g} x the schedule (rollback {self.nan_rollbacks}).")

    def _optimizer_step(self) -> float:
        """One optimizer step over grad_accum forward passes; returns the mean loss (NaN if rolled back)."""
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(self.config.grad_accum):
            loss = self._loss()
            objective = loss
            if self.config.vector_norm == "vocab":
                objective = loss + self.config.norm_weight * norm_penalty(self.params, self.norm_targets)
            (objective * self.loss_scale / self.config.grad_accum).backward()
            total += float(loss.detach()) / self.config.grad_accum
        if self.loss_scale != 1.0:
            for p in self.params:
                p.grad.div_(self.loss_scale)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
        if math.isfinite(total) and not torch.isfinite(grad_norm) and self.loss_scale > 1.0:
            # fp16 gradients overflowed at this loss scale: skip the step and halve the scale (as AMP does);
            # the vectors are untouched, so this is no rollback and the learning rate stays.
            self.loss_scale /= 2
            return float("nan")
        if not (math.isfinite(total) and torch.isfinite(grad_norm)):
            self._rollback()
            return float("nan")
        lr = self.schedule.at(self.step) * self.lr_scale
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        if not all(torch.isfinite(p).all() for p in self.params):
            self._rollback()
            return float("nan")
        self.good = self._snapshot()
        return total

    # -- saving -----------------------------------------------------------------------------------------

    def embedding(self) -> Embedding:
        settings = {k: v for k, v in asdict(self.config).items() if k not in ("output", "resume", "state_path")}
        metadata = {
            "step": str(self.step),
            "base_family": self.model.family,
            "base_model": Path(self.model.source).name,
            "init_text": self.config.init_text,
            "training": json.dumps(settings),
            "software": f"ti_core {__version__}",
        }
        return Embedding(self.config.name, self._vector_dict(), metadata)

    def save(self) -> Path | None:
        if self.output is None:
            return None
        save_embedding(self.embedding(), self.output, overwrite=True)
        save_state(self.state_path, TrainState(
            name=self.config.name, step=self.step, vectors=[p.detach() for p in self.params],
            optimizer=self.optimizer.state_dict(), rng=self.rng.getstate(), generator=self.generator.get_state(),
            lr_scale=self.lr_scale, nan_rollbacks=self.nan_rollbacks, smoothed=self.smoothed, losses=self.losses,
            loss_scale=self.loss_scale, val_losses=[list(pair) for pair in self.val_losses],
        ))
        return self.output

    def _restore(self, state: TrainState):
        widths = [p.shape for p in self.params]
        if state.name != self.config.name or [tuple(v.shape) for v in state.vectors] != [tuple(w) for w in widths]:
            raise SettingError(
                f"the resume state is for {state.name!r} with vectors {[tuple(v.shape) for v in state.vectors]}, "
                f"but this run trains {self.config.name!r} with {[tuple(w) for w in widths]} on this model."
            )
        with torch.no_grad():
            for p, v in zip(self.params, state.vectors):
                p.copy_(v)
        self.optimizer.load_state_dict(state.optimizer)
        self.rng.setstate(state.rng)
        self.generator.set_state(state.generator)
        self.step, self.lr_scale, self.nan_rollbacks = state.step, state.lr_scale, state.nan_rollbacks
        self.loss_scale = state.loss_scale
        self.smoothed, self.losses = state.smoothed, list(state.losses)
        self.val_losses = [tuple(pair) for pair in state.val_losses]

    # -- run --------------------------------------------------------------------------------------------

    def _preview(self) -> torch.Tensor:
        from .sample import sample

        emb = Embedding(self.config.name, self._vector_dict())
        prompt = templates.render(self.config.preview_prompt, f"embedding:{self.config.name}")
        positive, negative = encode_pair(self.model, prompt, "", [emb])
        return sample(self.model, positive, negative, steps=self.config.preview_steps, seed=self.config.preview_seed,
                      width=self.resolution, height=self.resolution)

    VALIDATION_SEED_OFFSET = 7919  # validation draws differ from every training draw of the same seed

    def validate(self) -> float:
        """The validation loss of the current vectors, recorded with the step."""
        loss = self.fixed_loss(self.config.validation_samples, self.config.seed + self.VALIDATION_SEED_OFFSET)
        self.val_losses.append((self.step, loss))
        return loss

    def _plateaued(self) -> bool:
        return plateaued([loss for _, loss in self.val_losses], self.config.early_stop, self.config.early_stop_delta)

    def run(self, on_step, should_stop) -> TrainResult:
        config, started = self.config, time.perf_counter()
        first_step, saved_path, stopped, early = self.step, None, False, False
        if config.validate_every and not self.val_losses:
            self.validate()  # step 0: the init vectors' loss, the baseline every later value compares with
        checkpointing = config.gradient_checkpointing and not self.model.unet.is_gradient_checkpointing
        if checkpointing:
            self.model.unet.enable_gradient_checkpointing()
        try:
            while self.step < config.steps:
                if should_stop and should_stop():
                    stopped = True
                    break
                loss = self._optimizer_step()
                self.step += 1
                if math.isfinite(loss):
                    self.losses.append(loss)
                    s = config.loss_smoothing
                    self.smoothed = loss if self.smoothed is None else s * self.smoothed + (1 - s) * loss
                val_loss = None
                if config.validate_every and (self.step % config.validate_every == 0 or self.step == config.steps):
                    val_loss = self.validate()
                    early = self._plateaued()
                saved = None
                if (config.save_every and self.step % config.save_every == 0 and self.step < config.steps
                        and not early):
                    saved = self.save()
                preview = None
                if config.preview_every and self.step % config.preview_every == 0:
                    preview = self._preview()
                if on_step:
                    elapsed = time.perf_counter() - started
                    done = self.step - first_step
                    on_step(StepInfo(
                        step=self.step, steps=config.steps, loss=loss,
                        smoothed_loss=self.smoothed if self.smoothed is not None else float("nan"),
                        lr=self.schedule.at(self.step - 1) * self.lr_scale,
                        vector_norms=[p.detach().norm(dim=1).tolist() for p in self.params],
                        elapsed=elapsed, eta=elapsed / done * (config.steps - self.step),
                        nan_rollbacks=self.nan_rollbacks, preview=preview, saved=str(saved) if saved else None,
                        val_loss=val_loss, vectors=self._vector_dict(),
                    ))
                if early:
                    logging.getLogger("ti_core").info(
                        f"early stop at step {self.step}: the validation loss has not improved by "
                        f"{config.early_stop_delta:.1%} in {config.early_stop} validations")
                    break
            saved_path = self.save()
        finally:
            if checkpointing:
                self.model.unet.disable_gradient_checkpointing()
        return TrainResult(
            embedding=self.embedding(), steps_done=self.step, stopped=stopped, losses=list(self.losses),
            path=str(saved_path) if saved_path else None,
            state_path=str(self.state_path) if saved_path else None,
            nan_rollbacks=self.nan_rollbacks, seconds=time.perf_counter() - started,
            val_losses=list(self.val_losses), early_stopped=early,
        )


def plateaued(losses: list, patience: int, delta: float) -> bool:
    """`patience` validations in a row without beating the best before them by the fraction `delta`."""
    if not patience or len(losses) <= patience:
        return False
    return min(losses[-patience:]) > min(losses[:-patience]) * (1 - delta)


def _clone_optimizer_state(optimizer) -> dict:
    return _clone_optimizer_state_dict(optimizer.state_dict())


def _clone_optimizer_state_dict(state: dict) -> dict:
    return {
        "state": {k: {n: (v.clone() if torch.is_tensor(v) else v) for n, v in s.items()} for k, s in state["state"].items()},
        "param_groups": [dict(g) for g in state["param_groups"]],
    }



class LossProbe:
    """A deterministic denoising loss (fixed crops, templates, timesteps and noise) of vectors on images.

    The same draws are used for every call, so losses of different vectors compare directly (DVAR-style): a
    validation loss for choosing the step, or for checking what a run learned.
    """

    def __init__(self, model, images, config: TrainConfig, samples: int = 32, seed: int = 1234):
        with torch.inference_mode(False):
            self.trainer = _Trainer(model, _as_images(images), config, None)
        self.samples, self.seed = samples, seed

    def loss(self, vectors: list) -> float:
        with torch.inference_mode(False):
            return self.trainer.fixed_loss(self.samples, self.seed, vectors)
