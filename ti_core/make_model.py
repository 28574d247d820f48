"""Write random-weight models of the real classes (tests, demo, benchmarks): a diffusers folder or one single file.

`tiny-*` are small configs for fast tests; `sd15`, `sd21`, `sdxl` are the exact published architectures, for
benchmarks (weights are random, so images are noise, but every tensor has its real shape and cost).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from . import archs
from .build import build_components
from .errors import SettingError
from .models import arch_to_metadata, resolve_dtype, tokenizers_for


def make_model(arch_name: str, out, *, single_file: bool = False, seed: int = 0, dtype="fp32") -> Path:
    """Build `arch_name` with weights drawn from `seed` and write it to `out` (refuses to overwrite)."""
    if arch_name not in archs.MAKEABLE:
        raise SettingError(f"unknown --arch {arch_name!r}; choose one of {', '.join(archs.MAKEABLE)}.")
    out = Path(out)
    if out.exists():
        raise SettingError(f"{out} already exists; choose a new path or delete it first (nothing was written).")
    if single_file and out.suffix != ".safetensors":
        raise SettingError(f"{out}: a single-file model is written as .safetensors; end the path with .safetensors.")
    arch = archs.ARCHS[arch_name]
    torch.manual_seed(seed)
    parts = build_components(arch)
    dtype = resolve_dtype(dtype)
    if dtype != torch.float32:  # weights are drawn in fp32 (same values for every dtype), then rounded
        for module in (parts["unet"], parts["vae"], *parts["text_encoders"]):
            module.to(dtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    if single_file:
        write_single_file(arch, parts, out)
    else:
        _write_folder(arch, parts, out)
    return out


def write_single_file(arch, parts, out: Path, metadata: dict | None = None) -> None:
    """`parts` ({"unet", "vae", "text_encoders"}) as one LDM-layout .safetensors with `arch` in its metadata."""
    from safetensors.torch import save_file

    from .ldm_keys import diffusers_to_ldm

    sd = diffusers_to_ldm(
        arch, parts["unet"].state_dict(), parts["vae"].state_dict(),
        tuple(t.state_dict() for t in parts["text_encoders"])
    )
    if arch.prediction_type == "v_prediction":
        sd["v_pred"] = torch.tensor([])  # the marker ComfyUI and our loader read
    sd = {k: v.contiguous() for k, v in sd.items()}
    tmp = out.with_name(out.name + ".partial")
    try:
        save_file(sd, str(tmp), metadata={**(metadata or {}), **arch_to_metadata(arch)})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates files owner-only; others' tools may need to read it
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)


def _write_folder(arch, parts, out: Path) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    tokenizers = tokenizers_for(arch)
    common = dict(vae=parts["vae"], unet=parts["unet"], scheduler=EulerDiscreteScheduler.from_config(arch.scheduler))
    if arch.family == "sdxl":
        pipe = StableDiffusionXLPipeline(
            text_encoder=parts["text_encoders"][0],
            text_encoder_2=parts["text_encoders"][1],
            tokenizer=tokenizers[0],
            tokenizer_2=tokenizers[1],
            **common,
        )
    else:
        pipe = StableDiffusionPipeline(
            text_encoder=parts["text_encoders"][0],
            tokenizer=tokenizers[0],
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            **common,
        )
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", suffix=".partial", dir=out.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
