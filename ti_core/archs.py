"""Architectures: the published Stable Diffusion configs (bundled, so nothing is fetched) and tiny test configs.

An `Arch` holds the diffusers/transformers config dicts of every component. The published ones are what the
original checkpoints were trained with; single-file checkpoints carry no config, so the loader pairs their
weights with these. The tiny ones keep the real classes and block layout at a fraction of the size, so tests
run the same code paths in seconds on a CPU.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

FAMILIES = ("sd1", "sd2", "sdxl")
PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass(frozen=True)
class Arch:
    name: str
    family: str  # one of FAMILIES
    prediction_type: str  # one of PREDICTION_TYPES
    unet: dict
    vae: dict
    text_encoders: tuple  # one CLIPTextConfig dict per encoder (SDXL: clip_l then clip_g)
    scheduler: dict = field(default_factory=dict)

    def copy_with(self, **changes) -> "Arch":
        values = {k: copy.deepcopy(getattr(self, k)) for k in self.__dataclass_fields__}
        values.update(changes)
        return Arch(**values)

    @property
    def resolution(self) -> int:
        """The image size the model was trained at (pixels)."""
        return self.unet["sample_size"] * 2 ** (len(self.vae["block_out_channels"]) - 1)


def scheduler_config(prediction_type: str) -> dict:
    # The training noise schedule shared by SD1, SD2 and SDXL (the "scaled_linear" betas of LDM).
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": prediction_type,
        "steps_offset": 1,
        "clip_sample": False,
        "set_alpha_to_one": False,
        "timestep_spacing": "leading",
    }


def _clip(hidden, layers, heads, act, projection_dim, with_projection=False, pad_token_id=1):
    return {
        "vocab_size": 49408,
        "hidden_size": hidden,
        "intermediate_size": hidden * 4,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": 77,
        "hidden_act": act,
        "projection_dim": projection_dim,
        "layer_norm_eps": 1e-5,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": pad_token_id,
        # Not a transformers field: which class holds the weights (SDXL's second encoder has a projection).
        "_with_projection": with_projection,
    }


def _vae(channels, scaling_factor, sample_size, layers=2):
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * len(channels),
        "up_block_types": ["UpDecoderBlock2D"] * len(channels),
        "block_out_channels": list(channels),
        "layers_per_block": layers,
        "act_fn": "silu",
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": sample_size,
        "scaling_factor": scaling_factor,
    }


_SD_VAE = _vae((128, 256, 512, 512), 0.18215, 512)

SD15 = Arch(
    name="sd15",
    family="sd1",
    prediction_type="epsilon",
    unet={
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "block_out_channels": [320, 640, 1280, 1280],
        "layers_per_block": 2,
        "attention_head_dim": 8,  # SD1 names the number of heads here (8 everywhere)
        "cross_attention_dim": 768,
        "norm_num_groups": 32,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    },
    vae=_SD_VAE,
    text_encoders=(_clip(768, 12, 12, "quick_gelu", 768),),
    scheduler=scheduler_config("epsilon"),
)

SD21 = Arch(
    name="sd21",
    family="sd2",
    prediction_type="v_prediction",
    unet={
        **SD15.unet,
        "sample_size": 96,
        "attention_head_dim": [5, 10, 20, 20],  # 64 channels per head
        "cross_attention_dim": 1024,
        "use_linear_projection": True,
        "upcast_attention": True,
    },
    vae={**_SD_VAE, "sample_size": 768},
    # OpenCLIP ViT-H: SD2 conditions on the penultimate layer, so the last of its 24 layers is dropped.
    text_encoders=(_clip(1024, 23, 16, "gelu", 512, pad_token_id=0),),
    scheduler=scheduler_config("v_prediction"),
)

SD21_BASE = SD21.copy_with(
    name="sd21-base",
    prediction_type="epsilon",
    unet={**SD21.unet, "sample_size": 64, "upcast_attention": False},
    vae={**_SD_VAE},
    scheduler=scheduler_config("epsilon"),
)

SDXL = Arch(
    name="sdxl",
    family="sdxl",
    prediction_type="epsilon",
    unet={
        "sample_size": 128,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": [320, 640, 1280],
        "layers_per_block": 2,
        "transformer_layers_per_block": [1, 2, 10],
        "attention_head_dim": [5, 10, 20],
        "cross_attention_dim": 2048,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,  # pooled 1280 + 6 micro-conditioning values x 256
        "norm_num_groups": 32,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    },
    vae={**_vae((128, 256, 512, 512), 0.13025, 1024), "force_upcast": True},
    text_encoders=(
        _clip(768, 12, 12, "quick_gelu", 768),
        _clip(1280, 32, 20, "gelu", 1280, with_projection=True, pad_token_id=0),
    ),
    scheduler=scheduler_config("epsilon"),
)

# Tiny models: the real block types at small widths. Latents are 1/2 of the image size (two VAE levels), so a
# 64 px image is a 4x32x32 latent. Text widths differ per family (32, 48, 32+64) so width errors can be tested.
_TINY_VAE = _vae((32, 64), 0.18215, 64, layers=1)
_TINY_UNET = {
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "attention_head_dim": 4,
    "cross_attention_dim": 32,
    "norm_num_groups": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}

TINY_SD1 = Arch(
    name="tiny-sd1",
    family="sd1",
    prediction_type="epsilon",
    unet=_TINY_UNET,
    vae=_TINY_VAE,
    text_encoders=(_clip(32, 2, 4, "quick_gelu", 32),),
    scheduler=scheduler_config("epsilon"),
)

TINY_SD2 = Arch(
    name="tiny-sd2",
    family="sd2",
    prediction_type="v_prediction",
    unet={**_TINY_UNET, "cross_attention_dim": 48, "attention_head_dim": [2, 4], "use_linear_projection": True},
    vae=_TINY_VAE,
    text_encoders=(_clip(48, 2, 4, "gelu", 48, pad_token_id=0),),
    scheduler=scheduler_config("v_prediction"),
)

TINY_SDXL = Arch(
    name="tiny-sdxl",
    family="sdxl",
    prediction_type="epsilon",
    unet={
        **_TINY_UNET,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "transformer_layers_per_block": [1, 2],
        "attention_head_dim": [2, 4],
        "cross_attention_dim": 96,  # clip_l 32 + clip_g 64
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 64 + 6 * 8,
    },
    vae={**_TINY_VAE, "scaling_factor": 0.13025},
    text_encoders=(
        _clip(32, 2, 4, "quick_gelu", 32),
        _clip(64, 2, 4, "gelu", 64, with_projection=True, pad_token_id=0),
    ),
    scheduler=scheduler_config("epsilon"),
)

ARCHS = {a.name: a for a in (TINY_SD1, TINY_SD2, TINY_SDXL, SD15, SD21, SD21_BASE, SDXL)}
# What `make-model --arch` offers (sd21-base is only used to read SD2 eps checkpoints).
MAKEABLE = ("tiny-sd1", "tiny-sd2", "tiny-sdxl", "sd15", "sd21", "sdxl")


def published_arch(family: str, prediction_type: str) -> Arch:
    """The published architecture a single-file checkpoint of this family is read with."""
    if family == "sd1":
        return SD15
    if family == "sd2":
        return SD21 if prediction_type == "v_prediction" else SD21_BASE
    return SDXL
