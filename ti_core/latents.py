"""Encode the training images through the VAE once, then cut training crops from the cached latents.

Images are resized so the short side is the training resolution (or padded to a square), encoded whole, and
cropped in latent space each step, so random crops cost nothing and the VAE never runs during steps. With
flipping, the mirrored image is encoded too (the VAE is not exactly flip-equivariant).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import data

LATENT_MODES = ("mean", "sample", "resample")


@dataclass
class CachedImage:
    mean: torch.Tensor  # [4, h, w] scaled latent (posterior mean)
    std: torch.Tensor | None  # [4, h, w] posterior std, kept only for "resample"
    weight: torch.Tensor | None  # [1, h, w] loss weight from the alpha channel, or None
    original_size: tuple  # (height, width) of the source image, for SDXL micro-conditioning
    scale: float  # resized / original, to express crop offsets in original pixels if needed
    caption: str


def _encode(model, pixels: torch.Tensor) -> tuple:
    vae = model.vae
    with torch.no_grad():
        dist = vae.encode(pixels.unsqueeze(0).to(model.device, model.dtype)).latent_dist
    factor = vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((dist.mean[0].float() - shift) * factor, dist.std[0].float() * factor)


def cache_latents(model, images, resolution: int, crop: str, flip: bool, mode: str, generator: torch.Generator,
                  use_alpha: bool, pad_fill: str = "edge") -> list:
    """[[unflipped CachedImage, flipped CachedImage?] per image]. `mode`: mean | sample (one draw) | resample."""
    f = model.vae_scale_factor
    out = []
    for image in images:
        rgb, alpha = image.rgb, image.alpha if use_alpha else None
        if crop == "pad":
            rgb = data.pad_to_square(rgb, resolution, fill=pad_fill)
            alpha = data.pad_to_square(alpha, resolution) if alpha is not None else None
        else:
            rgb = data.fit_short_side(rgb, resolution)
            alpha = data.fit_short_side(alpha, resolution) if alpha is not None else None
        variants = []
        for mirrored in (False, True) if flip else (False,):
            pixels = data.to_tensor(rgb)
            mask = data.to_tensor(alpha) if alpha is not None else None
            if mirrored:
                pixels = pixels.flip(-1)
                mask = mask.flip(-1) if mask is not None else None
            mean, std = _encode(model, pixels)
            if mode == "sample":
                mean = mean + std * torch.randn(mean.shape, generator=generator)
            weight = F.avg_pool2d(mask, f) if mask is not None else None
            variants.append(CachedImage(
                mean=mean, std=std if mode == "resample" else None, weight=weight,
                original_size=(image.size[1], image.size[0]), scale=rgb.size[0] / image.size[0], caption=image.caption,
            ))
        out.append(variants)
    return out


def crop_latent(cached: CachedImage, resolution: int, factor: int, crop: str, rng: random.Random,
                generator: torch.Generator) -> tuple:
    """(latent [4, r, r], weight [1, r, r] or None, (top, left) in pixels of the resized image)."""
    h, w = cached.mean.shape[-2:]
    size = resolution // factor
    mode = "random" if crop == "random" else "center"
    top, left = data.crop_offsets((w * factor, h * factor), resolution, mode, rng=rng, multiple=factor)
    y, x = top // factor, left // factor
    latent = cached.mean[:, y:y + size, x:x + size]
    if cached.std is not None:
        std = cached.std[:, y:y + size, x:x + size]
        latent = latent + std * torch.randn(latent.shape, generator=generator)
    weight = cached.weight[:, y:y + size, x:x + size] if cached.weight is not None else None
    return latent, weight, (top, left)
