"""The built-in toy-world model: its architecture and where its shipped weights live.

An SD1-family model (the real `UNet2DConditionModel`, `AutoencoderKL` and `CLIPTextModel` with the real CLIP
tokenizer) small enough to train from scratch on two CPU cores: 32 x 32 images, a x2 VAE (16 x 16 x 4
latents), a 6.7 M-parameter UNet and a 128-wide text encoder. It is written as one single-file checkpoint with
its architecture in the metadata, so it loads through `ti_core.models.load_model` like any other checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from ..archs import Arch, scheduler_config

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MODEL_FILE = WEIGHTS_DIR / "toyworld-sd1.safetensors"
BUILTIN_NAME = "toyworld-sd1 (built-in)"  # how the UIs list it

TOY_ARCH = Arch(
    name="toyworld-sd1",
    family="sd1",
    prediction_type="epsilon",
    unet={
        "sample_size": 16,
        "in_channels": 4,
        "out_channels": 4,
        # No attention at 16 x 16 (its cost is quadratic in the 256 positions); at 8 x 8, 4 x 4 and the middle.
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": [64, 128, 128],
        "layers_per_block": 1,
        "attention_head_dim": 4,
        "cross_attention_dim": 128,
        "norm_num_groups": 16,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    },
    vae={
        "in_channels": 3,
        "out_channels": 3,
        # x2: a 16 x 16 latent keeps the 4-pixel stripes and dots that a x4 VAE blurs away.
        "down_block_types": ["DownEncoderBlock2D"] * 2,
        "up_block_types": ["UpDecoderBlock2D"] * 2,
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "act_fn": "silu",
        "latent_channels": 4,
        "norm_num_groups": 16,
        "sample_size": 32,
        "scaling_factor": 1.0,  # replaced by 1 / std of the trained VAE's latents
    },
    text_encoders=(
        {
            "vocab_size": 49408,
            "hidden_size": 128,
            "intermediate_size": 512,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
            "hidden_act": "quick_gelu",
            "projection_dim": 128,
            "layer_norm_eps": 1e-5,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 1,
            "_with_projection": False,
        },
    ),
    # SD's scaled-linear betas: with DDPM's linear ones the noisiest half of the schedule is unusable on 16 x 16
    # latents (shared/docs/toyworld.md, run1).
    scheduler=scheduler_config("epsilon"),
)


def builtin_model_path() -> Path:
    """The shipped weights; a clear error if the file is missing (e.g. a checkout without them)."""
    from ..errors import ModelLoadError

    if not MODEL_FILE.is_file():
        raise ModelLoadError(
            f"the built-in toy-world model {MODEL_FILE} is missing; rebuild it with "
            "`python -m ti_core.toyworld.train_base --out ti_core/toyworld/weights/toyworld-sd1.safetensors` "
            "(about an hour on 2 CPU cores)."
        )
    return MODEL_FILE


def load_toy_model(dtype="fp32", device="cpu"):
    """The built-in model as an `SDModel`, through the same loader as any checkpoint."""
    from ..models import load_model

    return load_model(builtin_model_path(), dtype=dtype, device=device)
