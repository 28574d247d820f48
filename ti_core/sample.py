"""Generate images from conditioning (not raw text) through the diffusers pipelines.

Returns float images [B, H, W, C] in 0..1, ComfyUI's IMAGE layout. The same seed gives the same images on
CPU: the initial noise and every ancestral step draw from one CPU generator seeded with `seed`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .errors import SettingError
from .prompt import Conditioning

# name -> (diffusers scheduler class name, extra config). Names follow ComfyUI's sampler list.
SAMPLERS = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "heun": ("HeunDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


def make_scheduler(name: str, scheduler_config: dict):
    import diffusers

    if name not in SAMPLERS:
        raise SettingError(f"sampler {name!r} is not one of {', '.join(SAMPLERS)}.")
    class_name, extra = SAMPLERS[name]
    # "trailing" spacing reaches the last training timestep, which matters at few steps and for v-prediction.
    return getattr(diffusers, class_name).from_config({**scheduler_config, "timestep_spacing": "trailing", **extra})


def make_pipeline(model, scheduler):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    common = dict(vae=model.vae, unet=model.unet, scheduler=scheduler, text_encoder=model.text_encoders[0])
    if model.family == "sdxl":
        return StableDiffusionXLPipeline(
            text_encoder_2=model.text_encoders[1], tokenizer=model.tokenizers[0], tokenizer_2=model.tokenizers[1],
            **common
        )
    return StableDiffusionPipeline(
        tokenizer=model.tokenizers[0],
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        **common,
    )


def check_size(model, width: int | None, height: int | None) -> tuple:
    width = model.resolution if width is None else width
    height = model.resolution if height is None else height
    for label, value in (("width", width), ("height", height)):
        if value < 8 or value % 8:
            raise SettingError(f"{label} {value} must be a positive multiple of 8 (e.g. {max(8, value // 8 * 8)}).")
    return width, height


def sample(
    model,
    positive: Conditioning,
    negative: Conditioning,
    *,
    sampler: str = "euler",
    steps: int = 20,
    cfg: float = 7.0,
    seed: int = 0,
    width: int | None = None,
    height: int | None = None,
    batch: int = 1,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Images [batch, H, W, 3] float32 in 0..1. `on_step(step, steps)` after each step; `should_stop()` ends early."""
    width, height = check_size(model, width, height)
    if steps < 1:
        raise SettingError(f"steps {steps} must be at least 1.")
    if batch < 1:
        raise SettingError(f"batch {batch} must be at least 1.")
    if not math.isfinite(cfg):
        raise SettingError(f"cfg {cfg} must be a finite number (e.g. 7).")
    if positive.embeds.shape != negative.embeds.shape:
        raise SettingError(
            f"positive and negative conditioning differ in shape ({tuple(positive.embeds.shape)} vs "
            f"{tuple(negative.embeds.shape)}); encode them together with prompt.encode_pair."
        )
    pipe = make_pipeline(model, make_scheduler(sampler, model.scheduler_config))
    pipe.set_progress_bar_config(disable=True)

    def step_end(pipeline, i, t, kwargs):
        if on_step:
            on_step(i + 1, steps)
        if should_stop and should_stop():
            pipeline._interrupt = True
        return kwargs

    extra = {}
    if model.family == "sdxl":
        extra = dict(pooled_prompt_embeds=positive.pooled, negative_pooled_prompt_embeds=negative.pooled)
    with torch.no_grad():
        out = pipe(
            prompt_embeds=positive.embeds.to(model.device, model.dtype),
            negative_prompt_embeds=negative.embeds.to(model.device, model.dtype),
            num_inference_steps=steps,
            guidance_scale=cfg,
            width=width,
            height=height,
            num_images_per_prompt=batch,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="pt",
            callback_on_step_end=step_end,
            **extra,
        )
    return out.images.float().clamp(0, 1).permute(0, 2, 3, 1).cpu().contiguous()


def to_pil(images: torch.Tensor) -> list:
    """[B, H, W, C] floats in 0..1 -> PIL images."""
    from PIL import Image

    array = (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return [Image.fromarray(a) for a in array]
