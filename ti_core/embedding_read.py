"""Read the raw data of an embedding file, choosing the reader from the file's bytes, never its name.

Containers: `.safetensors`; torch pickles (`.pt`, `.bin`, zip or legacy), read only with
`torch.load(weights_only=True)` plus the one class the original textual_inversion files need
(`torch.nn.ParameterDict`), storages mapped to the CPU; A1111 PNG/WebP images (`embedding_image`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint_io import load_pickle, read_safetensors, sniff_format
from .embedding_image import read_image_embedding
from .errors import EmbeddingError

# The only classes beyond tensor data an embedding pickle may name. ParameterDict is rebuilt from plain data
# (its constructor and __setstate__ store parameters; they run nothing from the file).
PICKLE_ALLOW = (torch.nn.ParameterDict,)


def read_embedding_data(path: Path) -> tuple[object, dict, str]:
    """-> (data, header metadata, container), container being "safetensors", "pickle", or
    "<png|webp>-<text|pixels>" for an A1111 image."""
    kind = sniff_format(path)
    if kind == "safetensors":
        tensors, metadata = read_safetensors(path, error=EmbeddingError)
        return tensors, metadata, "safetensors"
    if kind in ("zip", "pickle"):
        return load_pickle(path, allow=PICKLE_ALLOW, error=EmbeddingError), {}, "pickle"
    if kind in ("png", "webp"):
        data, source = read_image_embedding(path)
        return data, {}, f"{kind}-{source}"
    with open(path, "rb") as f:
        head = f.read(8)
    raise EmbeddingError(
        f"{path}: not an embedding file: expected .safetensors, a torch .pt/.bin or an A1111 PNG/WebP, but the "
        f"file starts with {head!r}."
    )
