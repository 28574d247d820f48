"""What `inspect` prints: a description of an embedding file, a checkpoint or a model folder."""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint_io import checkpoint_from_pickle, load_tensors, sniff_format
from .errors import TIError

MODEL_KEY_PREFIX = "model.diffusion_model."  # UNet keys of an original-layout (A1111 / ComfyUI) checkpoint


def tensor_stats(t: torch.Tensor) -> dict:
    """Shape, sum and L2 norm in float64 over the whole tensor (the check values of the fixtures' MANIFEST)."""
    t64 = t.detach().to(torch.float64)
    return {"shape": list(t.shape), "sum": float(t64.sum()), "norm": float(t64.norm())}


def describe_embedding(embedding, fmt: str | None = None) -> dict:
    """Format id, name, vector count, widths, per-key shape/sum/norm and metadata of an `Embedding`."""
    return {
        "kind": "embedding",
        "format": fmt or embedding.source_format,
        "name": embedding.name,
        "vectors": embedding.num_vectors,
        "widths": {k: int(v.shape[-1]) for k, v in embedding.vectors.items()},
        "tensors": {k: tensor_stats(v) for k, v in embedding.vectors.items()},
        "metadata": dict(embedding.metadata),
    }


def describe_checkpoint(path: Path, state_dict: dict, metadata: dict) -> dict:
    from .models import ARCH_METADATA_KEY, arch_from_metadata, detect_family, detect_prediction_type

    family = detect_family(state_dict, path)
    arch = arch_from_metadata(metadata)
    return {
        "kind": "checkpoint",
        "format": sniff_format(path),
        "family": family,
        "prediction_type": detect_prediction_type(state_dict, family),
        "architecture": arch.name if arch else f"published {family}",
        "tensors": len(state_dict),
        "parameters": sum(t.numel() for t in state_dict.values()),
        "metadata": {k: v for k, v in metadata.items() if k != ARCH_METADATA_KEY},
    }


def _is_model(keys) -> bool:
    return any(str(k).startswith(MODEL_KEY_PREFIX) or k == "state_dict" for k in keys)


def inspect_path(path) -> dict:
    """Describe a model folder, a checkpoint or an embedding file (the kind is told from the content)."""
    from .embedding_read import read_embedding_data
    from .embeddings import embedding_from_data, name_from_path
    from .models import load_model

    path = Path(path)
    if path.is_dir():
        return {"kind": "diffusers folder", **load_model(path).describe()}
    if not path.exists():
        raise TIError(f"{path}: no such file.")
    if sniff_format(path) == "safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            is_model = _is_model(f.keys())
        if is_model:
            return describe_checkpoint(path, *load_tensors(path))
    data, metadata, container = read_embedding_data(path)
    if container == "pickle" and isinstance(data, dict) and _is_model(data):
        return describe_checkpoint(path, *checkpoint_from_pickle(data, path))
    return describe_embedding(embedding_from_data(data, name_from_path(path), path, metadata, container))
