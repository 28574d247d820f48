"""Build the real model classes from an `Arch`: random weights (for make-model) or empty shells to load into."""

from __future__ import annotations

import torch

from .archs import Arch


def clip_config(cfg: dict):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(**{k: v for k, v in cfg.items() if not k.startswith("_")})


def build_text_encoder(cfg: dict):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if cfg.get("_with_projection") else CLIPTextModel
    return cls(clip_config(cfg))


def build_components(arch: Arch, empty: bool = False) -> dict:
    """{"unet", "vae", "text_encoders"} for `arch`, in fp32 and eval mode with gradients off.

    With `empty=True` the parameters live on the meta device (no memory, no init time) and must be filled
    with `fill_empty(module, state_dict)`; otherwise they are randomly initialised from torch's global RNG.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    with torch.device("meta") if empty else torch.device("cpu"):
        unet = UNet2DConditionModel.from_config(arch.unet)
        vae = AutoencoderKL.from_config(arch.vae)
        encoders = tuple(build_text_encoder(cfg) for cfg in arch.text_encoders)
    for module in (unet, vae, *encoders):
        module.requires_grad_(False).eval()
    return {"unet": unet, "vae": vae, "text_encoders": encoders}


def fill_empty(module: torch.nn.Module, state_dict: dict, dtype: torch.dtype) -> list:
    """Load `state_dict` into a meta-device `module` (taking the tensors, cast to `dtype`).

    Returns the names of parameters the state dict lacked (left unloaded: the caller decides if that is an
    error). Unexpected keys are returned with a "+" prefix. Non-persistent buffers (CLIP's position ids) are
    rebuilt, since they are not in any file.
    """
    expected = dict(module.state_dict(keep_vars=True))
    missing = [k for k in expected if k not in state_dict]
    unexpected = ["+" + k for k in state_dict if k not in expected]
    if missing or unexpected:
        return missing + unexpected
    cast = {}
    for key, ref in expected.items():
        tensor = state_dict[key]
        target = dtype if ref.dtype.is_floating_point else ref.dtype
        cast[key] = tensor.to(dtype=target)
    module.load_state_dict(cast, assign=True, strict=True)
    for name, buf in list(module.named_buffers()):
        if buf.device.type == "meta":
            if not name.endswith("position_ids"):
                raise RuntimeError(f"cannot rebuild buffer {name}")  # internal invariant: only CLIP has one
            owner = module.get_submodule(name.rsplit(".", 1)[0])
            owner.register_buffer(
                "position_ids", torch.arange(buf.shape[-1]).expand(buf.shape), persistent=False
            )
    for p in module.parameters():
        p.requires_grad_(False)
    return []
