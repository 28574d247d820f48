"""AUTOMATIC1111 "image embeddings": an embedding stored inside a PNG or WebP preview image.

A1111 stores the F2 dict (`string_to_param`, `name`, `step`, ...) twice, as JSON in which each tensor is
`{"TORCHTENSOR": nested lists}`:

- in a PNG text chunk `sd-ti-embedding`, base64-encoded;
- in the pixels, for when an image host strips the chunks: the zlib-compressed JSON is split into high and
  low 4-bit halves; each half, padded by repeating it, fills a block of (image height, k, 3) values whose low
  nibbles are the data XOR a fixed pseudo-random stream (a 32-bit LCG, a=1664525, c=1013904223, seed 0,
  taking `state % 255 & 0x0F`); the high nibbles only draw a decorative dot pattern. The low-half block
  stands left of the preview and the high-half block right of it, each behind a one-pixel black column.

This module decodes both; it only reads JSON and pixels, so nothing in the image can run.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from .errors import EmbeddingError

TEXT_CHUNK = "sd-ti-embedding"
_LCG_A, _LCG_C, _LCG_M = 1664525, 1013904223, 2**32


def read_image_embedding(path: Path) -> tuple[dict, str]:
    """-> (the A1111 dict with tensors, where it came from: "text" or "pixels")."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            text = dict(getattr(image, "text", None) or {}).get(TEXT_CHUNK)
            if text is not None:
                return _from_json(_unbase64(path, text), path), "text"
            pixels = np.asarray(image.convert("RGB"))
    # PIL reports damaged files through many types (found by tests/test_fuzz_readers.py)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
            struct.error, zlib.error, Image.DecompressionBombError) as e:
        raise EmbeddingError(f"{path}: not a readable image ({type(e).__name__}: {e}).") from None
    return _from_json(decode_pixel_stripes(pixels, path), path), "pixels"


def _unbase64(path: Path, text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError) as e:
        raise EmbeddingError(f"{path}: the {TEXT_CHUNK} text chunk is not base64 ({e}).") from None


def _from_json(raw: bytes, path: Path) -> dict:
    def tensors(obj: dict):
        return torch.tensor(obj["TORCHTENSOR"], dtype=torch.float64) if "TORCHTENSOR" in obj else obj

    try:
        data = json.loads(raw, object_hook=tensors)
    except (ValueError, TypeError, RuntimeError) as e:
        raise EmbeddingError(f"{path}: the embedding stored in this image is not valid JSON ({e}).") from None
    if not isinstance(data, dict):
        raise EmbeddingError(f"{path}: the embedding stored in this image is a {type(data).__name__}, not a dict.")
    return data


def lcg_nibbles(count: int) -> np.ndarray:
    """The XOR stream of the pixel encoding: `count` values of (LCG state % 255) & 0x0F, as uint8."""
    out = np.empty(count, dtype=np.uint8)
    state = 0
    for i in range(count):
        state = (_LCG_A * state + _LCG_C) % _LCG_M
        out[i] = (state % 255) & 0x0F
    return out


def decode_pixel_stripes(pixels: np.ndarray, path: Path) -> bytes:
    """The JSON bytes hidden in the two data stripes of an RGB image array [H, W, 3]."""
    black = np.flatnonzero(~pixels.any(axis=(0, 2)))  # columns black from top to bottom
    hint = "It carries no embedding (or a lossy re-save destroyed it)."
    if len(black) < 2:
        raise EmbeddingError(f"{path}: no {TEXT_CHUNK} text chunk and no data stripes in the pixels. {hint}")
    low, high = pixels[:, : black[0]] & 0x0F, pixels[:, black[-1] + 1 :] & 0x0F
    if low.size == 0 or low.shape != high.shape:
        raise EmbeddingError(
            f"{path}: no {TEXT_CHUNK} text chunk, and the pixel stripes left and right of the picture differ in "
            f"size ({low.shape[1]} vs {high.shape[1]} columns). {hint}"
        )
    key = lcg_nibbles(low.size).reshape(low.shape)
    packed = (((high ^ key) << 4) | (low ^ key)).astype(np.uint8).tobytes()
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(packed)
    except zlib.error as e:
        raise EmbeddingError(f"{path}: the pixel stripes do not hold compressed data ({e}). {hint}") from None
    if not inflater.eof:
        raise EmbeddingError(f"{path}: the data in the pixel stripes is cut short. {hint}")
    return raw
