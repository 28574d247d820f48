"""What one training step sees: batches drawn from the cached latents and the prompt templates, and the
denoising loss of the vectors on them.

Training and validation share one `Draws` (the latent cache, the templates, the prompt layouts); each passes its
own `Rng`, so a validation never touches the training's random state.

Spread over several processes (distributed.World), every process draws the whole batch from the same streams and
computes only its share of it; its loss is its share's sum over the whole batch's size, so the shares' losses and
gradients, summed over the processes, are the one-process ones. The draws are thus the same for any number of
processes, and a command means the same run whatever that number is.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import torch

from . import latents, templates
from .distributed import World
from .embeddings import Embedding
from .errors import SettingError
from .loss_weights import min_snr_weights
from .memory import release_free_memory
from .prompt import chunk_ids, prompt_chunks, run_encoder


@dataclass
class Rng:
    """The random streams of a run of draws."""

    random: random.Random  # crops, flips, templates (and, in random order, which picture)
    torch: torch.Generator  # timesteps and noise
    seed: int = 0  # of the shuffled order's cycles
    drawn: int = 0  # views drawn so far in shuffled order: where in its cycles the next one is

    @classmethod
    def seeded(cls, seed: int) -> Rng:
        return cls(random.Random(seed), torch.Generator().manual_seed(seed), seed)

    def cycled(self, n: int, count: int) -> list:
        """The next `count` of indices 0..n-1 drawn in cycles, each cycle every index once in a shuffled order:
        cycle c's order depends only on (seed, c), so `drawn` alone says where a resumed run goes on."""
        out = []
        while len(out) < count:
            cycle, k = divmod(self.drawn, n)
            order = list(range(n))
            random.Random(f"{self.seed}:{cycle}").shuffle(order)  # once per cycle a call reaches
            taken = order[k:k + count - len(out)]
            out += taken
            self.drawn += len(taken)
        return out


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


class Draws:
    """Batches of (latent crop, loss weight, prompt layout, SDXL size ids) from the pictures."""

    def __init__(self, model, images: list, config, resolution: int, probe: Embedding):
        self.model, self.config, self.resolution, self.probe = model, config, resolution, probe
        self.templates = templates.load_templates(config.template)
        cache_generator = torch.Generator().manual_seed(config.seed + 1)  # its own: resume re-caches identically
        self.cache = latents.cache_latents(model, images, resolution, config.crop, config.flip, config.latents,
                                           cache_generator, config.use_alpha, config.pad_fill)
        release_free_memory()  # the VAE encoder's activations
        self.views = [v for variants in self.cache for v in variants]  # for order "shuffled"
        self.layouts = {}

    def _prompt(self, caption: str, rng: Rng) -> _PromptLayout:
        template = rng.random.choice(self.templates)
        text = templates.render(template, f"embedding:{self.config.name}", caption)
        if text not in self.layouts:
            self.layouts[text] = _layout(self.model, text, self.probe)
        return self.layouts[text]

    def batch(self, count: int, rng: Rng):
        factor = self.model.vae_scale_factor
        if self.config.order == "shuffled":  # every view (a picture or its mirror image) once per cycle
            items = [self.views[i] for i in rng.cycled(len(self.views), count)]
        else:
            picks = [rng.random.choice(self.cache) for _ in range(count)]
            items = [rng.random.choice(variants) for variants in picks]
        crops = [latents.crop_latent(c, self.resolution, factor, self.config.crop, rng.random, rng.torch)
                 for c in items]
        layouts = [self._prompt(c.caption, rng) for c in items]
        batch = torch.stack([c[0] for c in crops])
        weights = [c[1] for c in crops]
        weight = torch.stack(weights) if all(w is not None for w in weights) else None
        time_ids = [(*c.original_size, *crop[2], self.resolution, self.resolution) for c, crop in zip(items, crops)]
        return batch, weight, layouts, time_ids


class DenoisingLoss:
    """The loss the vectors are trained on: how well the frozen UNet, conditioned on them, predicts the noise."""

    def __init__(self, model, draws: Draws, compute_dtype: torch.dtype, batch_size: int, snr_gamma: float = 0.0,
                 world: World = World()):
        from diffusers import DDPMScheduler

        self.model, self.draws, self.compute_dtype, self.batch_size = model, draws, compute_dtype, batch_size
        self.snr_gamma, self.world = snr_gamma, world
        self.noise_scheduler = DDPMScheduler.from_config(model.scheduler_config)

    def _loss(self, params: list, rng: Rng, timesteps: torch.Tensor | None = None) -> torch.Tensor:
        """The denoising loss of one batch drawn from `rng`; `timesteps` fixes t (and the batch size). Spread over
        processes, this process's share of it: the sum over its part of the batch / the batch size."""
        model, dtype = self.model, self.model.dtype
        count = self.batch_size if timesteps is None else len(timesteps)
        latent, weight, layouts, time_ids = self.draws.batch(count, rng)
        noise = torch.randn(latent.shape, generator=rng.torch)
        if timesteps is None:
            t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (latent.shape[0],),
                              generator=rng.torch)
        else:
            t = timesteps
        if self.world.size > 1:  # everything was drawn, so the streams stay the same on every process
            part = self.world.share(count)
            latent, noise, t, layouts, time_ids = latent[part], noise[part], t[part], layouts[part], time_ids[part]
            weight = None if weight is None else weight[part]
            if not len(t):  # a validation chunk smaller than the number of processes
                return torch.zeros(())
        noisy = self.noise_scheduler.add_noise(latent, noise, t)
        if model.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latent, noise, t)
        else:
            target = noise
        with self._autocast():
            hidden, pooled = _conditioning(model, layouts, params)
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
            area = (weight.sum(dim=(1, 2, 3)) * error.shape[1]).clamp_min(1e-8)
            per_sample = (error * weight).sum(dim=(1, 2, 3)) / area
        snr_weight = min_snr_weights(self.noise_scheduler.alphas_cumprod, t, model.prediction_type, self.snr_gamma)
        weighted = per_sample * snr_weight.to(per_sample.device)
        return weighted.mean() if self.world.size == 1 else weighted.sum() / count

    __call__ = _loss

    def _autocast(self):
        if self.compute_dtype == self.model.dtype:
            return contextlib.nullcontext()
        return torch.autocast(self.model.device.type, dtype=self.compute_dtype)

    def fixed(self, params: list, samples: int, seed: int) -> float:
        """The mean loss of `params` over `samples` fixed draws (pictures, crops, flips, prompts and noise from
        `seed`; timesteps spread evenly): the same arguments give the same draws, so values compare across steps."""
        total_t = self.noise_scheduler.config.num_train_timesteps
        timesteps = ((torch.arange(samples) + 0.5) * total_t / samples).long()
        chunk = max(1, self.batch_size)
        total = 0.0
        with torch.no_grad():
            for i, start in enumerate(range(0, samples, chunk)):
                part = timesteps[start:start + chunk]
                total += float(self._loss(params, Rng.seeded(seed + i), part)) * len(part)
        return self.world.sum(total) / samples  # each process measured its share of every chunk
