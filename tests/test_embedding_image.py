"""A1111 image embeddings: the `sd-ti-embedding` PNG text chunk, and the pixel stripes when it was stripped.

The images here are made by a small encoder written from the format description (ti_anchors.md (b) F4);
the real A1111 file is checked in test_embedding_fixtures.py."""

from __future__ import annotations

import base64
import json
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from ti_core.embedding_image import lcg_nibbles
from ti_core.embeddings import load_embedding
from ti_core.errors import EmbeddingError


def _a1111_json(vectors: torch.Tensor) -> bytes:
    data = {"string_to_token": {"*": 265}, "string_to_param": {"*": {"TORCHTENSOR": vectors.tolist()}},
            "name": "stripe test", "step": 250, "sd_checkpoint": "abcdef0123", "sd_checkpoint_name": "base"}
    return json.dumps(data).encode()


def _striped_image(payload: bytes, preview: np.ndarray, seed: int = 0) -> Image.Image:
    """[low-nibble block | black | preview | black | high-nibble block], as A1111 lays the pixels out."""
    h = preview.shape[0]
    raw = np.frombuffer(zlib.compress(payload, 9), np.uint8)
    size = -(-raw.size // (h * 3)) * (h * 3)  # padded (by repeating the data) to whole columns
    padded = np.resize(raw, size)
    key = lcg_nibbles(size)
    decoration = np.random.default_rng(seed).integers(0, 16, (2, size), dtype=np.uint8) << 4  # the dot pattern
    low = ((padded & 0x0F) ^ key | decoration[0]).reshape(h, -1, 3)
    high = ((padded >> 4) ^ key | decoration[1]).reshape(h, -1, 3)
    black = np.zeros((h, 1, 3), np.uint8)
    return Image.fromarray(np.concatenate([low, black, preview, black, high], axis=1), "RGB")


@pytest.fixture
def vectors():
    return torch.randn(3, 768, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def preview():
    return np.random.default_rng(2).integers(1, 256, (64, 48, 3), dtype=np.uint8)


def test_keystream_starts_like_a1111s_generator():
    # (LCG state % 255) of the first five states are 253, 242, 127, 44, 157; the stream is their low nibbles.
    assert lcg_nibbles(5).tolist() == [253 & 15, 242 & 15, 127 & 15, 44 & 15, 157 & 15]


def test_text_chunk_is_read(tmp_path, vectors, preview):
    info = PngImagePlugin.PngInfo()
    info.add_text("sd-ti-embedding", base64.b64encode(_a1111_json(vectors)).decode())
    Image.fromarray(preview).save(tmp_path / "chunk.png", pnginfo=info)
    emb = load_embedding(tmp_path / "chunk.png")
    assert (emb.name, emb.source_format) == ("chunk", "a1111-png-text")
    assert torch.equal(emb.vectors["emb_params"], vectors)
    assert emb.metadata == {"step": "250", "base_hash": "abcdef0123", "base_name": "base", "token": "stripe test"}


@pytest.mark.parametrize("suffix, kind", [(".png", "png"), (".webp", "webp")])
def test_pixel_stripes_are_read_when_there_is_no_text_chunk(tmp_path, vectors, preview, suffix, kind):
    path = tmp_path / f"stripes{suffix}"
    _striped_image(_a1111_json(vectors), preview).save(path, lossless=True)
    emb = load_embedding(path)
    assert emb.source_format == f"a1111-{kind}-pixels"
    assert torch.equal(emb.vectors["emb_params"], vectors) and emb.metadata["step"] == "250"


def test_preview_with_black_columns_of_its_own_still_decodes(tmp_path, vectors, preview):
    preview[:, [0, 20, 47]] = 0
    _striped_image(_a1111_json(vectors), preview).save(tmp_path / "dark.png")
    assert torch.equal(load_embedding(tmp_path / "dark.png").vectors["emb_params"], vectors)


def test_image_without_an_embedding_is_refused(tmp_path, preview):
    Image.fromarray(preview).save(tmp_path / "photo.png")
    with pytest.raises(EmbeddingError, match="photo.png: no sd-ti-embedding text chunk and no data stripes"):
        load_embedding(tmp_path / "photo.png")


def test_damaged_stripes_are_refused(tmp_path, vectors, preview):
    pixels = np.asarray(_striped_image(_a1111_json(vectors), preview)).copy()
    pixels[:, :3] ^= 0x05  # a lossy re-save changes low bits
    Image.fromarray(pixels).save(tmp_path / "damaged.png")
    with pytest.raises(EmbeddingError, match="damaged.png: the pixel stripes do not hold compressed data"):
        load_embedding(tmp_path / "damaged.png")


def test_bad_text_chunk_is_refused(tmp_path, preview):
    info = PngImagePlugin.PngInfo()
    info.add_text("sd-ti-embedding", base64.b64encode(b"[not json").decode())
    Image.fromarray(preview).save(tmp_path / "bad.png", pnginfo=info)
    with pytest.raises(EmbeddingError, match="bad.png: the embedding stored in this image is not valid JSON"):
        load_embedding(tmp_path / "bad.png")
