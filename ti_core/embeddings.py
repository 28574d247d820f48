"""The `Embedding` type and its `.safetensors` files.

An embedding is a name, vectors per text encoder and metadata. Vector keys are those the community's files
use: `emb_params` [n, D] for single-encoder models (SD1: D=768, SD2: D=1024), `clip_l` [n, 768] and
`clip_g` [n, 1280] for SDXL. These are the layouts ComfyUI's `embedding:name`, A1111 and kohya read.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import EmbeddingError, EmbeddingWidthError

EXTENSIONS = (".safetensors", ".pt", ".bin")
MAX_VECTORS = 75  # one CLIP chunk holds 75 tokens; an embedding never straddles two


@dataclass
class Embedding:
    name: str
    vectors: dict  # key -> float tensor [n, D]
    metadata: dict = field(default_factory=dict)  # str -> str (safetensors header metadata)

    @property
    def num_vectors(self) -> int:
        return next(iter(self.vectors.values())).shape[0]

    def vectors_for(self, keys: tuple, width: int, encoder: str = "the text encoder") -> torch.Tensor:
        """The [n, width] vectors for one text encoder, taken from the first of `keys` present."""
        for key in keys:
            if key in self.vectors:
                vectors = self.vectors[key]
                if vectors.shape[-1] != width:
                    raise EmbeddingWidthError(
                        f"embedding {self.name!r} has {vectors.shape[-1]}-wide vectors ({key}), but {encoder} of "
                        f"this model takes {width}-wide ones: it was made for another model family "
                        "(SD1: 768, SD2: 1024, SDXL: 768 + 1280). Use an embedding trained for this model."
                    )
                return vectors
        found = ", ".join(f"{k} {tuple(v.shape)}" for k, v in self.vectors.items())
        raise EmbeddingError(
            f"embedding {self.name!r} has no vectors for {encoder} (looked for {' or '.join(keys)}; the file "
            f"has {found}). "
            + (
                "An SDXL model needs both clip_l and clip_g vectors; this looks like an SD1/SD2 embedding."
                if "clip_g" in keys or "clip_l" in keys
                else "Use an embedding trained for this model family."
            )
        )


def check_vectors(name: str, vectors: dict) -> None:
    if not vectors:
        raise EmbeddingError(f"embedding {name!r} holds no vectors.")
    counts = set()
    for key, v in vectors.items():
        if v.ndim != 2 or v.shape[0] == 0 or not v.is_floating_point():
            raise EmbeddingError(f"embedding {name!r}: {key} has shape {tuple(v.shape)}; expected [n, width], n >= 1.")
        if not torch.isfinite(v).all():
            raise EmbeddingError(f"embedding {name!r}: {key} contains NaN or infinite values; it cannot be used.")
        counts.add(v.shape[0])
    if len(counts) > 1:
        raise EmbeddingError(f"embedding {name!r}: its encoders have different vector counts {sorted(counts)}.")
    if counts.pop() > MAX_VECTORS:
        raise EmbeddingError(f"embedding {name!r} has more than {MAX_VECTORS} vectors; a prompt chunk holds 75.")


def name_from_path(path) -> str:
    path = Path(path)
    return path.name[: -len(path.suffix)] if path.suffix.lower() in EXTENSIONS else path.name


def load_embedding(path, name: str | None = None) -> Embedding:
    """Read an embedding file; its name defaults to the file name without extension (as ComfyUI and A1111 do)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    name = name or name_from_path(path)
    if not path.is_file():
        raise EmbeddingError(f"{path}: no such embedding file.")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise EmbeddingError(
            f"{path}: not a readable .safetensors embedding ({e}). Other formats are read by the embeddings module."
        ) from None
    if "emb_params" in tensors:
        vectors = {"emb_params": tensors["emb_params"]}
    elif "clip_l" in tensors or "clip_g" in tensors:
        vectors = {k: tensors[k] for k in ("clip_l", "clip_g") if k in tensors}
    elif len(tensors) == 1:  # diffusers: {token: [n, D]} or [D]
        vectors = {"emb_params": next(iter(tensors.values()))}
    else:
        raise EmbeddingError(f"{path}: unknown embedding layout with keys {sorted(tensors)[:8]}.")
    vectors = {k: (v[None] if v.ndim == 1 else v).float() for k, v in vectors.items()}
    check_vectors(name, vectors)
    return Embedding(name=name, vectors=vectors, metadata=metadata)


def save_embedding(embedding: Embedding, path, *, overwrite: bool = False) -> Path:
    """Write `.safetensors` atomically (temporary file, fsync, rename); refuses to replace a file unless asked."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not overwrite:
        raise EmbeddingError(f"{path} already exists; choose another name or pass overwrite=True.")
    check_vectors(embedding.name, embedding.vectors)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in embedding.vectors.items()}
    metadata = {str(k): str(v) for k, v in {**embedding.metadata, "name": embedding.name}.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
