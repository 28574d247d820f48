"""Write embedding files, atomically, in the layouts other tools read.

- safetensors: SD1/SD2 `{"emb_params": [n, D]}`, SDXL `{"clip_l", "clip_g"}`, metadata in the header.
  Read by ComfyUI, A1111, kohya, diffusers (`token=`).
- a1111-pt: a torch pickle `{"string_to_token": {"*": 265}, "string_to_param": {"*": [n, D]}, "name", "step",
  "sd_checkpoint", "sd_checkpoint_name"}`. Read by A1111, ComfyUI, diffusers.
- diffusers: `{token: [n, D]}`, `.safetensors` (metadata `{"format": "pt"}`) or, for a `.bin`/`.pt` name, a
  torch pickle. Read by diffusers `load_textual_inversion`.

A file is written to a temporary name in the target folder, flushed to disk, then moved into place, so a
crash never leaves half a file under the real name. An existing file is replaced only when asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Callable

import torch

from .atomic import atomic_write
from .errors import EmbeddingError

WRITE_FORMATS = ("safetensors", "a1111-pt", "diffusers")
A1111_PLACEHOLDER_ID = 265  # "*" in the CLIP vocabulary: the token A1111 and the original paper store


def write_embedding(embedding, path: Path, fmt: str, overwrite: bool) -> Path:
    writers = {"safetensors": _safetensors, "a1111-pt": _a1111_pt, "diffusers": _diffusers}
    if fmt not in writers:
        raise EmbeddingError(f"embedding format {fmt!r} is not one of {', '.join(WRITE_FORMATS)}.")
    write = writers[fmt](embedding, path)
    return atomic_write(path, write, overwrite=overwrite, exists_error=_exists)


def _exists(path: Path) -> EmbeddingError:
    return EmbeddingError(f"{path} already exists; choose another name, or allow replacing it "
                          "(overwrite=True; on the command line --overwrite).")


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.float32).contiguous()


def _one_encoder(embedding, fmt: str) -> torch.Tensor:
    if len(embedding.vectors) != 1:
        raise EmbeddingError(
            f"embedding {embedding.name!r} has vectors for {len(embedding.vectors)} text encoders "
            f"({', '.join(embedding.vectors)}); the {fmt} format holds one. SDXL embeddings are shared as "
            ".safetensors with clip_l and clip_g (--to safetensors), which ComfyUI, A1111 and diffusers read."
        )
    return _plain(next(iter(embedding.vectors.values())))


def _safetensors_bytes(tensors: dict, metadata: dict) -> Callable[[BinaryIO], None]:
    from safetensors.torch import save

    return lambda f: f.write(save(tensors, metadata=metadata))


def _safetensors(embedding, path: Path) -> Callable[[BinaryIO], None]:
    tensors = {k: _plain(v) for k, v in embedding.vectors.items()}
    metadata = {str(k): str(v) for k, v in {**embedding.metadata, "name": embedding.name}.items()}
    return _safetensors_bytes(tensors, metadata)


def _a1111_pt(embedding, path: Path) -> Callable[[BinaryIO], None]:
    step = embedding.metadata.get("step", "")
    data = {
        "string_to_token": {"*": A1111_PLACEHOLDER_ID},
        "string_to_param": {"*": _one_encoder(embedding, "a1111-pt")},
        "name": embedding.name,
        "step": int(step) if step.isdigit() else None,
        "sd_checkpoint": embedding.metadata.get("base_hash"),
        "sd_checkpoint_name": embedding.metadata.get("base_name"),
    }
    return lambda f: torch.save(data, f)  # to a file object, the zip's root folder is "archive", as usual


def diffusers_token(embedding) -> str:
    """The token a diffusers file is keyed by: the file's own one word if it had one, else `<name>`."""
    token = embedding.metadata.get("token", "")
    return token if token and not any(c.isspace() for c in token) else f"<{embedding.name}>"


def _diffusers(embedding, path: Path) -> Callable[[BinaryIO], None]:
    data = {diffusers_token(embedding): _one_encoder(embedding, "diffusers")}
    if Path(path).suffix.lower() in (".bin", ".pt"):
        return lambda f: torch.save(data, f)
    return _safetensors_bytes(data, {"format": "pt"})
