"""Tests for ti_core.ldm_keys: diffusers <-> original single-file key layout, for every architecture.

Round trips prove the two directions agree; the spot checks against well-known keys and shapes of the published
files, and diffusers' own single-file loader reading what we write, prove the layout is the real one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ti_core.archs import ARCHS
from ti_core.build import build_components
from ti_core.errors import ModelLoadError
from ti_core.ldm_keys import diffusers_to_ldm, ldm_to_diffusers

TINY = ("tiny-sd1", "tiny-sd2", "tiny-sdxl")
PUBLISHED = ("sd15", "sd21", "sdxl")
TOKENIZER_DIR = Path(__file__).parent.parent / "ti_core" / "tokenizer"

_tiny_cache = {}


def tiny_parts(name):
    """Random components of a tiny arch (seed 0), built once per session; tests must not modify them."""
    if name not in _tiny_cache:
        torch.manual_seed(0)
        _tiny_cache[name] = build_components(ARCHS[name])
    return _tiny_cache[name]


def state_dicts(parts):
    return {
        "unet": parts["unet"].state_dict(),
        "vae": parts["vae"].state_dict(),
        "text_encoders": tuple(t.state_dict() for t in parts["text_encoders"]),
    }


def to_ldm(arch, sds):
    return diffusers_to_ldm(arch, sds["unet"], sds["vae"], sds["text_encoders"])


def flat(sds):
    """{"unet": {...}, "vae": {...}, "text_encoders": (...)} -> {"unet/key": tensor, "text0/key": tensor, ...}"""
    parts = {"unet": sds["unet"], "vae": sds["vae"], **{f"text{i}": sd for i, sd in enumerate(sds["text_encoders"])}}
    return {f"{part}/{k}": v for part, sd in parts.items() for k, v in sd.items()}


def assert_bit_identical(expected: dict, actual: dict):
    assert set(actual) == set(expected)
    for key, ref in expected.items():
        got = actual[key]
        assert got.dtype == ref.dtype and got.shape == ref.shape, key
        assert torch.equal(got, ref), key


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", TINY)
def test_tiny_round_trip_is_bit_identical(name):
    arch = ARCHS[name]
    sds = state_dicts(tiny_parts(name))
    ldm = to_ldm(arch, sds)
    assert_bit_identical(flat(sds), flat(ldm_to_diffusers(arch, ldm)))
    # and the other way round: the single file we write converts back to itself
    assert_bit_identical(ldm, to_ldm(arch, ldm_to_diffusers(arch, ldm)))


@pytest.fixture(scope="module")
def published():
    """arch name -> (diffusers state dicts, our single-file dict), all on the meta device (shapes only)."""
    out = {}
    for name in PUBLISHED:
        sds = state_dicts(build_components(ARCHS[name], empty=True))
        out[name] = (sds, to_ldm(ARCHS[name], sds))
    return out


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_round_trip_keys_and_shapes(published, name):
    sds, ldm = published[name]
    back = flat(ldm_to_diffusers(ARCHS[name], ldm))
    expected = flat(sds)
    assert set(back) == set(expected)
    assert all(back[k].shape == v.shape for k, v in expected.items())


# Well-known keys of the published single files, with their real shapes (None: only checks that the key exists).
REAL_KEYS = {
    "sd15": {
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),  # SD1 projects with 1x1 convs
        "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
        "model.diffusion_model.input_blocks.4.0.skip_connection.weight": (640, 320, 1, 1),
        "model.diffusion_model.middle_block.1.transformer_blocks.0.ff.net.0.proj.weight": (10240, 1280),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),  # block without attention
        "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),  # block with attention
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
        "model.diffusion_model.time_embed.0.weight": (1280, 320),
        "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
        "first_stage_model.decoder.up.3.block.0.conv1.weight": (512, 512, 3, 3),
        "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        "first_stage_model.decoder.up.1.upsample.conv.weight": (256, 256, 3, 3),
        "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
        "first_stage_model.encoder.down.0.downsample.conv.weight": (128, 128, 3, 3),
        "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "first_stage_model.decoder.mid.attn_1.proj_out.weight": (512, 512, 1, 1),
        "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (49408, 768),
        "cond_stage_model.transformer.text_model.encoder.layers.11.self_attn.q_proj.weight": (768, 768),
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,),
    },
    "sd21": {
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320),  # SD2 projects with Linear layers
        "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
        "cond_stage_model.model.token_embedding.weight": (49408, 1024),
        "cond_stage_model.model.positional_embedding": (77, 1024),
        "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": (3072, 1024),
        "cond_stage_model.model.transformer.resblocks.22.attn.in_proj_bias": (3072,),
        "cond_stage_model.model.transformer.resblocks.22.mlp.c_fc.weight": (4096, 1024),
        "cond_stage_model.model.ln_final.weight": (1024,),
    },
    "sdxl": {
        "conditioner.embedders.0.transformer.text_model.encoder.layers.11.mlp.fc2.weight": (768, 3072),
        "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight": (3840, 1280),
        "conditioner.embedders.1.model.transformer.resblocks.31.attn.out_proj.weight": (1280, 1280),
        "conditioner.embedders.1.model.text_projection": (1280, 1280),
        "conditioner.embedders.1.model.positional_embedding": (77, 1280),
        "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
        "model.diffusion_model.label_emb.0.2.weight": (1280, 1280),
        "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight": (640, 2048),
        "model.diffusion_model.input_blocks.8.1.transformer_blocks.9.attn1.to_q.weight": (1280, 1280),
        "model.diffusion_model.middle_block.1.transformer_blocks.9.ff.net.2.weight": (1280, 5120),
        "model.diffusion_model.output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (640, 640, 3, 3),
        "model.diffusion_model.output_blocks.8.0.skip_connection.weight": (320, 640, 1, 1),
        "first_stage_model.decoder.up.3.block.0.conv1.weight": (512, 512, 3, 3),
    },
}
# Keys the published files do not have (SD2's text encoder keeps 23 of OpenCLIP's 24 layers; SDXL's first down
# level and last up level have no attention; SD2/SDXL files have no CLIP position ids).
ABSENT_KEYS = {
    "sd15": ["model.diffusion_model.label_emb.0.0.weight", "model.diffusion_model.output_blocks.2.2.conv.weight"],
    "sd21": [
        "cond_stage_model.model.transformer.resblocks.23.ln_1.weight",
        "cond_stage_model.model.text_projection",
        "cond_stage_model.transformer.text_model.embeddings.position_ids",
    ],
    "sdxl": [
        "model.diffusion_model.input_blocks.1.1.proj_in.weight",
        "model.diffusion_model.output_blocks.8.1.proj_in.weight",
        "model.diffusion_model.input_blocks.9.0.op.weight",
        "model.diffusion_model.output_blocks.8.2.conv.weight",
    ],
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_layout_matches_real_files(published, name):
    ldm = published[name][1]
    for key, shape in REAL_KEYS[name].items():
        assert key in ldm, key
        assert tuple(ldm[key].shape) == shape, key
    for key in ABSENT_KEYS[name]:
        assert key not in ldm, key


def test_sd15_key_count_and_position_ids(published):
    ldm = published["sd15"][1]
    # SD1.5 single files (v1-5-pruned-emaonly) hold 1131 tensors: 686 UNet + 248 VAE + 196 CLIP-L (12 layers x 16
    # + token and position embeddings + final norm) + CLIP's position_ids, a buffer older transformers saved.
    assert len(ldm) == 686 + 248 + 196 + 1 == 1131
    ids = ldm["cond_stage_model.transformer.text_model.embeddings.position_ids"]
    assert ids.dtype == torch.int64 and torch.equal(ids, torch.arange(77)[None])


@pytest.mark.parametrize("name, model_type", [("sd15", "v1"), ("sd21", "v2"), ("sdxl", "xl_base")])
def test_diffusers_converter_agrees_on_published_layouts(published, name, model_type):
    """diffusers' own converter (independent code) maps our full-size files onto the same keys and shapes."""
    from diffusers.loaders import single_file_utils as su

    arch = ARCHS[name]
    sds, ldm = published[name]
    assert su.infer_diffusers_model_type(ldm) == model_type  # it recognises the family from keys and shapes
    theirs = {
        "unet": su.convert_ldm_unet_checkpoint(ldm, dict(arch.unet)),
        "vae": su.convert_ldm_vae_checkpoint(ldm, dict(arch.vae)),
        "text_encoders": (),
    }
    for i, (cfg, ours) in enumerate(zip(arch.text_encoders, sds["text_encoders"])):
        if arch.family == "sd2" or i == 1:  # OpenCLIP
            prefix = "cond_stage_model.model." if arch.family == "sd2" else "conditioner.embedders.1.model."
            encoder = build_components(arch, empty=True)["text_encoders"][i]
            sd = su.convert_open_clip_checkpoint(encoder, ldm, prefix=prefix)
        else:
            sd = su.convert_ldm_clip_checkpoint(ldm)  # copies every key, the position_ids buffer included
            sd.pop("text_model.embeddings.position_ids", None)
        if not any(k.startswith("text_model.") for k in ours):  # as diffusers does for the flattened CLIPTextModel
            sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
        theirs["text_encoders"] += (sd,)
    ours, theirs = flat(sds), flat(theirs)
    assert set(theirs) == set(ours)
    assert all(theirs[k].shape == v.shape for k, v in ours.items())


# ---------------------------------------------------------------- reading real-world files


def test_extra_keys_of_real_files_are_ignored():
    arch = ARCHS["tiny-sd2"]
    sds = state_dicts(tiny_parts("tiny-sd2"))
    ldm = to_ldm(arch, sds)
    extra = {
        "model_ema.decay": torch.tensor(0.9999),
        "model_ema.diffusion_modelinput_blocks00weight": torch.zeros(1),
        "cond_stage_model.model.logit_scale": torch.tensor(4.6),
        "cond_stage_model.model.text_projection": torch.zeros(48, 48),
        "cond_stage_model.model.transformer.resblocks.2.attn.in_proj_weight": torch.zeros(5, 48),  # the dropped layer
        "alphas_cumprod": torch.ones(1000),
        "v_pred": torch.tensor([]),
    }
    assert_bit_identical(flat(sds), flat(ldm_to_diffusers(arch, {**ldm, **extra})))


def test_sd1_position_ids_are_not_a_model_key():
    arch = ARCHS["tiny-sd1"]
    ldm = to_ldm(arch, state_dicts(tiny_parts("tiny-sd1")))
    assert "cond_stage_model.transformer.text_model.embeddings.position_ids" in ldm
    assert not any("position_ids" in k for k in ldm_to_diffusers(arch, ldm)["text_encoders"][0])


def test_missing_keys_are_left_out():
    arch = ARCHS["tiny-sdxl"]
    ldm = to_ldm(arch, state_dicts(tiny_parts("tiny-sdxl")))
    del ldm["model.diffusion_model.out.2.weight"]
    del ldm["conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_bias"]
    ldm = {k: v for k, v in ldm.items() if not k.startswith("first_stage_model.")}  # e.g. a file without a VAE
    parts = ldm_to_diffusers(arch, ldm)
    assert "conv_out.weight" not in parts["unet"] and "conv_out.bias" in parts["unet"]
    assert parts["vae"] == {}
    te = parts["text_encoders"][1]
    assert {f"text_model.encoder.layers.1.self_attn.{p}_proj.bias" for p in "qkv"}.isdisjoint(te)
    assert "text_model.encoder.layers.1.self_attn.q_proj.weight" in te


def test_fused_qkv_of_impossible_size_is_an_error():
    arch = ARCHS["tiny-sd2"]
    ldm = to_ldm(arch, state_dicts(tiny_parts("tiny-sd2")))
    ldm["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"] = torch.zeros(100, 48)
    with pytest.raises(ModelLoadError, match="in_proj_weight"):
        ldm_to_diffusers(arch, ldm)


def test_writing_weights_of_another_arch_is_an_error():
    sds = state_dicts(tiny_parts("tiny-sd1"))
    xl_unet = state_dicts(tiny_parts("tiny-sdxl"))["unet"]  # attention at other levels, plus add_embedding
    with pytest.raises(ModelLoadError, match=r"unet .* tiny-sd1 .*\+add_embedding"):
        diffusers_to_ldm(ARCHS["tiny-sd1"], xl_unet, sds["vae"], sds["text_encoders"])
    with pytest.raises(ModelLoadError, match="text encoder"):
        diffusers_to_ldm(ARCHS["tiny-sdxl"], sds["unet"], sds["vae"], sds["text_encoders"])


# ---------------------------------------------------------------- independent check: diffusers' own loader


def save_diffusers_folder(arch, parts, folder):
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    scheduler = EulerDiscreteScheduler.from_config(arch.scheduler)
    common = {"unet": parts["unet"], "vae": parts["vae"], "scheduler": scheduler}
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_DIR)
    if arch.family == "sdxl":
        pipe = StableDiffusionXLPipeline(
            text_encoder=parts["text_encoders"][0],
            text_encoder_2=parts["text_encoders"][1],
            tokenizer=tokenizer,
            tokenizer_2=CLIPTokenizer.from_pretrained(TOKENIZER_DIR, pad_token="!"),
            **common,
        )
    else:
        if arch.family == "sd2":
            tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_DIR, pad_token="!")
        pipe = StableDiffusionPipeline(
            text_encoder=parts["text_encoders"][0],
            tokenizer=tokenizer,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            **common,
        )
    pipe.save_pretrained(folder)
    for weights in folder.rglob("*.safetensors"):  # keep only configs, so weights can only come from our file
        weights.unlink()
    return type(pipe)


@pytest.mark.slow
@pytest.mark.parametrize("name", TINY)
def test_diffusers_single_file_loader_reads_our_files(name, tmp_path):
    from safetensors.torch import save_file

    arch = ARCHS[name]
    parts = tiny_parts(name)
    pipeline_cls = save_diffusers_folder(arch, parts, tmp_path / "folder")
    file = tmp_path / "model.safetensors"
    save_file(to_ldm(arch, state_dicts(parts)), str(file))

    pipe = pipeline_cls.from_single_file(str(file), config=str(tmp_path / "folder"), local_files_only=True)
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if arch.family == "sdxl" else [])
    loaded = {
        "unet": pipe.unet.state_dict(),
        "vae": pipe.vae.state_dict(),
        "text_encoders": tuple(e.state_dict() for e in encoders),
    }
    assert_bit_identical(flat(state_dicts(parts)), flat(loaded))
