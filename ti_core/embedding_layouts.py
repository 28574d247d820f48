"""Recognise the layout of an embedding's data, whatever file it came from, and name the format.

Input: the dict read from a `.safetensors` file, an unpickled `.pt`/`.bin`, or the JSON of an A1111 image.
Output: the format id, the vectors under our keys (`emb_params` for single-encoder models, `clip_l` and
`clip_g` for SDXL) and the metadata the data carries (see `ti_core.embeddings` for the keys).

| data                                             | layout            | read as                        |
|--------------------------------------------------|-------------------|--------------------------------|
| `string_to_param` = old `ParameterDict`, no name | textual-inversion | emb_params (original paper)    |
| `string_to_param` = {"*": [n, D]}, name, step    | a1111             | emb_params (+ step, checkpoint) |
| `emb_params` [n, D]                              | kohya             | emb_params (A1111, kohya)      |
| `emp_params` [n, D]                              | onetrainer        | emb_params                     |
| `clip_l` [n, 768], `clip_g` [n, 1280]             | kohya (SDXL)      | clip_l, clip_g                 |
| `emb` [768], `emb2` [1280] (XL-Inversion, bf16)   | xl-inversion      | clip_l, clip_g                 |
| {token: [D] or [n, D]} (one key)                 | diffusers         | emb_params (+ token)           |
| a bare tensor [n, D]                             | tensor            | emb_params                     |
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .errors import EmbeddingError

# Single-key layouts: file key -> (layout, our key).
_SINGLE_KEYS = {"emb_params": "kohya", "emp_params": "onetrainer"}
_A1111_METADATA = {"step": "step", "sd_checkpoint": "base_hash", "sd_checkpoint_name": "base_name", "name": "token"}


def format_id(layout: str, container: str) -> str:
    """e.g. ("kohya", "safetensors") -> "safetensors" (the standard file), ("a1111", "pickle") -> "a1111-pt"."""
    if container == "safetensors":
        return "safetensors" if layout == "kohya" else f"{layout}-safetensors"
    if container == "pickle":
        return f"{layout}-{'bin' if layout == 'diffusers' else 'pt'}"
    return f"{layout}-{container}"


def interpret(data, path) -> tuple[str, dict, dict]:
    """-> (layout, {our key: tensor}, metadata) for the data of one embedding file."""
    if isinstance(data, torch.Tensor):
        return "tensor", {"emb_params": data}, {}
    if not isinstance(data, Mapping):
        raise EmbeddingError(
            f"{path}: holds a {type(data).__name__}, not an embedding (expected a dict of tensors, e.g. "
            "emb_params, clip_l/clip_g or string_to_param)."
        )
    if "string_to_param" in data:
        return _a1111(data, path)
    if "clip_l" in data or "clip_g" in data:
        return "kohya", {k: data[k] for k in ("clip_l", "clip_g") if k in data}, {}
    for key, layout in _SINGLE_KEYS.items():
        if key in data:
            return layout, {"emb_params": data[key]}, {}
    if "emb" in data and "emb2" in data:
        return "xl-inversion", {"clip_l": data["emb"], "clip_g": data["emb2"]}, {}
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if len(data) == 1 and len(tensors) == 1:
        token, vectors = next(iter(tensors.items()))
        return "diffusers", {"emb_params": vectors}, {"token": str(token)}
    keys = ", ".join(repr(k) for k in list(data)[:8]) + (", ..." if len(data) > 8 else "")
    several = " It holds several tokens' vectors; ti_core reads one per file." if len(tensors) == len(data) > 1 else ""
    raise EmbeddingError(
        f"{path}: unknown embedding layout (keys {keys}).{several} Readable layouts: emb_params, emp_params, "
        "clip_l/clip_g, emb/emb2, string_to_param (A1111 and the original textual inversion), or one "
        "{token: tensor} entry (diffusers)."
    )


def _a1111(data: Mapping, path) -> tuple[str, dict, dict]:
    params = data["string_to_param"]
    is_module = isinstance(params, torch.nn.Module)
    if is_module:
        # The original textual_inversion saved a ParameterDict; one from an old torch has no `_keys`, so only
        # its `_parameters` dict can be read.
        params = vars(params).get("_parameters") or {}
    if not isinstance(params, Mapping) or len(params) != 1:
        count = len(params) if isinstance(params, Mapping) else type(params).__name__
        raise EmbeddingError(f"{path}: string_to_param should hold one placeholder ('*'); it holds {count}.")
    vectors = next(iter(params.values()))
    if not isinstance(vectors, torch.Tensor):
        raise EmbeddingError(
            f"{path}: string_to_param holds a {type(vectors).__name__}, not a tensor. SDXL embeddings are read "
            "from .safetensors files with clip_l and clip_g."
        )
    metadata = {ours: str(data[theirs]) for theirs, ours in _A1111_METADATA.items() if data.get(theirs) is not None}
    layout = "textual-inversion" if is_module and "name" not in data else "a1111"
    return layout, {"emb_params": vectors}, metadata
