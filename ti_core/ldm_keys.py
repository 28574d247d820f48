"""Key maps between original single-file checkpoints and the diffusers/transformers state dicts of `build.py`.

Single-file layout (LDM / A1111 / ComfyUI `.safetensors` and `.ckpt`):

- UNet under `model.diffusion_model.`: `input_blocks.N.{0 resnet, 1 transformer}` (`.0.op` for downsamplers),
  `middle_block.{0,1,2}`, `output_blocks.N.{0 resnet, 1 transformer, 1 or 2 upsampler}`, `time_embed.{0,2}`,
  SDXL's `label_emb.0.{0,2}`, `out.{0,2}`; resnets name their layers `in_layers`/`emb_layers`/`out_layers`.
- VAE under `first_stage_model.`: `encoder.down.I.block.J`, `decoder.up.I.block.J` (levels numbered from the
  bottom, so reversed against diffusers), `mid.block_1/attn_1/block_2` with 1x1-conv `q/k/v/proj_out`.
- Text encoders: the transformers CLIP layout (`text_model.*`) under `cond_stage_model.transformer.` (SD1) and
  `conditioner.embedders.0.transformer.` (SDXL CLIP-L); the OpenCLIP layout (`transformer.resblocks.N` with
  fused `in_proj` q,k,v, `ln_final`, `positional_embedding`, `x @ text_projection`) under
  `cond_stage_model.model.` (SD2 ViT-H) and `conditioner.embedders.1.model.` (SDXL bigG).

One table of `_Rule`s, derived from the `Arch` configs, drives both directions, so they cannot drift apart.
"""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

import torch

from .archs import Arch
from .errors import ModelLoadError


class _Rule(NamedTuple):
    part: str  # "unet", "vae" or "text<i>"
    diffusers: tuple  # key(s) in that part's state dict: three (q, k, v) for kind "qkv", else one
    ldm: str  # key in the single file
    kind: str  # "copy" | "conv1x1" (Linear <-> 1x1 conv) | "qkv" (fused in_proj) | "transpose"


def _wb(d: str, l: str, kind: str = "copy"):
    """The weight and bias of one layer (only the weight changes shape)."""
    yield d + ".weight", l + ".weight", kind
    yield d + ".bias", l + ".bias", "copy"


# ---------------------------------------------------------------- UNet

_UNET_RESNET = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
)


def _unet_resnet(d: str, l: str, shortcut: bool):
    for dn, ln in _UNET_RESNET + ((("conv_shortcut", "skip_connection"),) if shortcut else ()):
        yield from _wb(f"{d}.{dn}", f"{l}.{ln}")


_BLOCK_LAYERS = ("norm1", "norm2", "norm3", "attn1.to_out.0", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")
_BLOCK_UNBIASED = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn2.to_q", "attn2.to_k", "attn2.to_v")


def _transformer(d: str, l: str, depth: int):
    """A Transformer2DModel / SpatialTransformer: both sides use the same names below the block prefix."""
    for name in ("norm", "proj_in", "proj_out"):
        yield from _wb(f"{d}.{name}", f"{l}.{name}")
    for k in range(depth):
        b = f"transformer_blocks.{k}"
        for name in _BLOCK_LAYERS:
            yield from _wb(f"{d}.{b}.{name}", f"{l}.{b}.{name}")
        for name in _BLOCK_UNBIASED:
            yield f"{d}.{b}.{name}.weight", f"{l}.{b}.{name}.weight", "copy"


def _unet(cfg: dict):
    ch, lpb, n = cfg["block_out_channels"], cfg["layers_per_block"], len(cfg["block_out_channels"])
    depth = cfg.get("transformer_layers_per_block", 1)
    depth = [depth] * n if isinstance(depth, int) else list(depth)
    yield from _wb("conv_in", "input_blocks.0.0")
    yield from _wb("time_embedding.linear_1", "time_embed.0")
    yield from _wb("time_embedding.linear_2", "time_embed.2")
    if cfg.get("addition_embed_type") == "text_time":
        yield from _wb("add_embedding.linear_1", "label_emb.0.0")
        yield from _wb("add_embedding.linear_2", "label_emb.0.2")
    c_in = ch[0]
    for i, kind in enumerate(cfg["down_block_types"]):
        for j in range(lpb):
            ldm = f"input_blocks.{1 + i * (lpb + 1) + j}"
            yield from _unet_resnet(f"down_blocks.{i}.resnets.{j}", f"{ldm}.0", shortcut=c_in != ch[i])
            c_in = ch[i]
            if kind.startswith("CrossAttn"):
                yield from _transformer(f"down_blocks.{i}.attentions.{j}", f"{ldm}.1", depth[i])
        if i < n - 1:
            yield from _wb(f"down_blocks.{i}.downsamplers.0.conv", f"input_blocks.{(i + 1) * (lpb + 1)}.0.op")
    yield from _unet_resnet("mid_block.resnets.0", "middle_block.0", shortcut=False)
    yield from _transformer("mid_block.attentions.0", "middle_block.1", depth[-1])
    yield from _unet_resnet("mid_block.resnets.1", "middle_block.2", shortcut=False)
    for i, kind in enumerate(cfg["up_block_types"]):
        attn = kind.startswith("CrossAttn")
        for j in range(lpb + 1):  # every up resnet also takes a skip input, so its width always changes
            ldm = f"output_blocks.{i * (lpb + 1) + j}"
            yield from _unet_resnet(f"up_blocks.{i}.resnets.{j}", f"{ldm}.0", shortcut=True)
            if attn:
                yield from _transformer(f"up_blocks.{i}.attentions.{j}", f"{ldm}.1", depth[n - 1 - i])
        if i < n - 1:
            ldm = f"output_blocks.{i * (lpb + 1) + lpb}.{2 if attn else 1}.conv"
            yield from _wb(f"up_blocks.{i}.upsamplers.0.conv", ldm)
    yield from _wb("conv_norm_out", "out.0")
    yield from _wb("conv_out", "out.2")


# ---------------------------------------------------------------- VAE


def _vae_resnet(d: str, l: str, shortcut: bool):
    for name in ("norm1", "conv1", "norm2", "conv2"):
        yield from _wb(f"{d}.{name}", f"{l}.{name}")
    if shortcut:
        yield from _wb(f"{d}.conv_shortcut", f"{l}.nin_shortcut")


def _vae_mid(side: str):
    yield from _vae_resnet(f"{side}.mid_block.resnets.0", f"{side}.mid.block_1", shortcut=False)
    d, l = f"{side}.mid_block.attentions.0", f"{side}.mid.attn_1"
    yield from _wb(f"{d}.group_norm", f"{l}.norm")
    for dn, ln in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
        yield from _wb(f"{d}.{dn}", f"{l}.{ln}", "conv1x1")
    yield from _vae_resnet(f"{side}.mid_block.resnets.1", f"{side}.mid.block_2", shortcut=False)


def _vae(cfg: dict):
    ch, lpb, n = cfg["block_out_channels"], cfg["layers_per_block"], len(cfg["block_out_channels"])
    yield from _wb("encoder.conv_in", "encoder.conv_in")
    c_in = ch[0]
    for i in range(n):
        for j in range(lpb):
            yield from _vae_resnet(
                f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}", c_in != ch[i]
            )
            c_in = ch[i]
        if i < n - 1:
            yield from _wb(f"encoder.down_blocks.{i}.downsamplers.0.conv", f"encoder.down.{i}.downsample.conv")
    yield from _vae_mid("encoder")
    yield from _wb("encoder.conv_norm_out", "encoder.norm_out")
    yield from _wb("encoder.conv_out", "encoder.conv_out")
    yield from _wb("decoder.conv_in", "decoder.conv_in")
    yield from _vae_mid("decoder")
    c_in = ch[-1]
    for i in range(n):
        level, c_out = n - 1 - i, ch[n - 1 - i]
        for j in range(lpb + 1):
            yield from _vae_resnet(
                f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{level}.block.{j}", c_in != c_out
            )
            c_in = c_out
        if i < n - 1:
            yield from _wb(f"decoder.up_blocks.{i}.upsamplers.0.conv", f"decoder.up.{level}.upsample.conv")
    yield from _wb("decoder.conv_norm_out", "decoder.norm_out")
    yield from _wb("decoder.conv_out", "decoder.conv_out")
    yield from _wb("quant_conv", "quant_conv")
    yield from _wb("post_quant_conv", "post_quant_conv")


# ---------------------------------------------------------------- text encoders

_CLIP_LAYER = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")
_CLIP_LAYER += ("layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2")
_OPENCLIP_LAYER = (
    ("self_attn.out_proj", "attn.out_proj"),
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
)


def _hf_clip(cfg: dict, d: str):
    """transformers' own layout, stored under `<prefix>text_model.`."""
    for name in ("embeddings.token_embedding.weight", "embeddings.position_embedding.weight"):
        yield d + name, "text_model." + name, "copy"
    for i in range(cfg["num_hidden_layers"]):
        for name in _CLIP_LAYER:
            yield from _wb(f"{d}encoder.layers.{i}.{name}", f"text_model.encoder.layers.{i}.{name}")
    yield from _wb(d + "final_layer_norm", "text_model.final_layer_norm")


def _open_clip(cfg: dict, d: str):
    yield d + "embeddings.token_embedding.weight", "token_embedding.weight", "copy"
    yield d + "embeddings.position_embedding.weight", "positional_embedding", "copy"
    for i in range(cfg["num_hidden_layers"]):
        dl, ll = f"{d}encoder.layers.{i}", f"transformer.resblocks.{i}"
        for suffix, fused in (("weight", "in_proj_weight"), ("bias", "in_proj_bias")):
            qkv = tuple(f"{dl}.self_attn.{p}_proj.{suffix}" for p in "qkv")
            yield qkv, f"{ll}.attn.{fused}", "qkv"
        for dn, ln in _OPENCLIP_LAYER:
            yield from _wb(f"{dl}.{dn}", f"{ll}.{ln}")
    yield from _wb(d + "final_layer_norm", "ln_final")
    if cfg.get("_with_projection"):
        yield "text_projection.weight", "text_projection", "transpose"


@cache
def _text_model_prefix(with_projection: bool) -> str:
    """The key prefix of transformers' CLIP classes: "text_model." or "". transformers >= 5.6 dropped it from
    CLIPTextModel (not from CLIPTextModelWithProjection), older releases have it on both; so ask the installed one."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        keys = cls(CLIPTextConfig(num_hidden_layers=1)).state_dict()
    return "text_model." if "text_model.final_layer_norm.weight" in keys else ""


_TEXT_LAYOUTS = {  # family -> (layout, single-file prefix) per text encoder
    "sd1": ((_hf_clip, "cond_stage_model.transformer."),),
    "sd2": ((_open_clip, "cond_stage_model.model."),),
    "sdxl": ((_hf_clip, "conditioner.embedders.0.transformer."), (_open_clip, "conditioner.embedders.1.model.")),
}


def _rules(arch: Arch) -> list[_Rule]:
    """Every tensor of `arch`'s components, with its single-file key and how its value is converted."""
    groups = [("unet", "model.diffusion_model.", _unet(arch.unet)), ("vae", "first_stage_model.", _vae(arch.vae))]
    for i, (cfg, (layout, prefix)) in enumerate(zip(arch.text_encoders, _TEXT_LAYOUTS[arch.family], strict=True)):
        d = _text_model_prefix(bool(cfg.get("_with_projection")))
        groups.append((f"text{i}", prefix, layout(cfg, d)))
    return [
        _Rule(part, d if isinstance(d, tuple) else (d,), prefix + l, kind)
        for part, prefix, pairs in groups
        for d, l, kind in pairs
    ]


# ---------------------------------------------------------------- conversion


def _to_diffusers(rule: _Rule, t: torch.Tensor, share: bool = False) -> tuple:
    if rule.kind == "conv1x1":
        return (t.flatten(1),)
    if rule.kind == "transpose":
        return (t.T.contiguous(),)
    if rule.kind == "qkv":
        if t.shape[0] % 3:
            raise ModelLoadError(
                f"{rule.ldm} has shape {tuple(t.shape)}: it should hold q, k and v stacked "
                "(first dimension a multiple of 3); the file is corrupt or not this model."
            )
        if share:  # views of the fused tensor: no copy
            return t.chunk(3)
        return tuple(c.clone() for c in t.chunk(3))  # own storage each, so the loaded model can be saved
    return (t,)


def _to_ldm(rule: _Rule, ts: list) -> torch.Tensor:
    if rule.kind == "conv1x1":
        return ts[0][:, :, None, None]
    if rule.kind == "transpose":
        return ts[0].T.contiguous()
    if rule.kind == "qkv":
        return torch.cat(ts)
    return ts[0]


def ldm_to_diffusers(arch: Arch, state_dict: dict[str, torch.Tensor], share: bool = False) -> dict:
    """-> {"unet": {...}, "vae": {...}, "text_encoders": ({...}, ...)} keyed like the `build_components(arch)`
    modules' state_dict(). Keys the model does not use (EMA copies, `logit_scale`, SD2's unused last OpenCLIP
    layer, `position_ids`, markers) are ignored; keys the model needs but the input lacks are left out.
    With `share`, the fused OpenCLIP q/k/v tensors are split into views instead of copies (the result then
    shares storage with the input everywhere except transposed projections)."""
    parts = {"unet": {}, "vae": {}, **{f"text{i}": {} for i in range(len(arch.text_encoders))}}
    for rule in _rules(arch):
        if rule.ldm in state_dict:
            parts[rule.part].update(zip(rule.diffusers, _to_diffusers(rule, state_dict[rule.ldm], share)))
    texts = tuple(parts[f"text{i}"] for i in range(len(arch.text_encoders)))
    return {"unet": parts["unet"], "vae": parts["vae"], "text_encoders": texts}


def single_file_keys(arch: Arch) -> frozenset:
    """Every key a single file of `arch` holds for its modules (without markers and position ids)."""
    return frozenset(r.ldm for r in _rules(arch))


def diffusers_to_ldm(arch: Arch, unet: dict, vae: dict, text_encoders: tuple[dict, ...]) -> dict[str, torch.Tensor]:
    """The inverse of `ldm_to_diffusers`: one state dict in the single-file layout of `arch.family`, as A1111
    and ComfyUI read it. The inputs must hold exactly the keys of `arch`'s modules."""
    if len(text_encoders) != len(arch.text_encoders):
        raise ModelLoadError(f"{arch.name} has {len(arch.text_encoders)} text encoder(s), got {len(text_encoders)}.")
    parts = {"unet": unet, "vae": vae, **{f"text{i}": sd for i, sd in enumerate(text_encoders)}}
    table = _rules(arch)
    for part, sd in parts.items():
        expected = {k for r in table if r.part == part for k in r.diffusers}
        if expected != set(sd):
            wrong = sorted(expected - set(sd))[:3] + ["+" + k for k in sorted(set(sd) - expected)[:3]]
            raise ModelLoadError(
                f"{part} weights do not fit architecture {arch.name} (missing, +unexpected): {', '.join(wrong)}"
            )
    out = {r.ldm: _to_ldm(r, [parts[r.part][k] for k in r.diffusers]) for r in table}
    if arch.family == "sd1":  # real SD1 files carry CLIP's position ids (a persistent buffer in older transformers)
        n = arch.text_encoders[0]["max_position_embeddings"]
        out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(n)[None]
    return out
