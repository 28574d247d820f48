"""What `inspect` prints: a description of an embedding file, a checkpoint or a model folder."""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint_io import load_tensors, sniff_format
from .errors import TIError


def tensor_stats(t: torch.Tensor) -> dict:
    """Shape, sum and L2 norm in float64 over the whole tensor (the check values of the fixtures' MANIFEST)."""
    t64 = t.detach().to(torch.float64)
    return {"shape": list(t.shape), "sum": float(t64.sum()), "norm": float(t64.norm())}


def describe_embedding(embedding, fmt: str) -> dict:
    return {
        "kind": "embedding",
        "format": fmt,
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


def inspect_path(path) -> dict:
    from .embeddings import load_embedding
    from .models import load_model

    path = Path(path)
    if path.is_dir():
        return {"kind": "diffusers folder", **load_model(path).describe()}
    if not path.exists():
        raise TIError(f"{path}: no such file.")
    fmt = sniff_format(path)
    if fmt != "safetensors":
        state_dict, metadata = load_tensors(path)
        return describe_checkpoint(path, state_dict, metadata)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        is_model = any(k.startswith("model.diffusion_model.") for k in f.keys())
    if is_model:
        state_dict, metadata = load_tensors(path)
        return describe_checkpoint(path, state_dict, metadata)
    return describe_embedding(load_embedding(path), "safetensors")
