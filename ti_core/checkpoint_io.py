"""Read tensors from checkpoint files without ever running code from them.

`.safetensors` is plain data. `.ckpt`/`.pt`/`.bin` are pickles: they are read only with
`torch.load(weights_only=True)`, whose unpickler refuses every global outside torch's tensor types; the few
harmless globals that real Stable Diffusion checkpoints carry are allowed through inert stand-ins.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
from pathlib import Path

import torch

from .errors import ModelLoadError, UnsafeFileError


class _Inert:
    """Stands in for an allowed non-tensor object in a pickle (e.g. a Lightning callback); keeps nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


# Globals that appear in published checkpoints and carry no weights. They are replaced by `_Inert`, so the
# real class is never imported, let alone called.
_INERT_GLOBALS = ("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",)


def sniff_format(path: Path) -> str:
    """'safetensors', 'zip' (torch zip pickle), 'pickle' (legacy torch pickle) or 'unknown', from the bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 1 < header_len < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    return "unknown"


def read_safetensors_metadata(path: Path) -> dict:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return header.get("__metadata__") or {}


def load_pickle(path: Path):
    """torch.load with weights_only=True and our allow-list; refusals name the global that was asked for."""
    inert = [(type(name.rsplit(".", 1)[1], (_Inert,), {}), name) for name in _INERT_GLOBALS]
    try:
        with torch.serialization.safe_globals(inert):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e)) or re.search(r"global:? ([\w.]+)", str(e))
        what = found.group(1) if found else "an object that is not a tensor"
        raise UnsafeFileError(
            f"{path}: refused to load: its pickle asks for {what!r}, which is not plain tensor data and could "
            "run code. Nothing from the file was executed. Get a .safetensors version of this file, or convert "
            "it on a machine where you trust its source."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: not a readable torch checkpoint ({e}). The file may be truncated.") from None


def load_tensors(path: str | Path) -> tuple[dict, dict]:
    """-> (state_dict of tensors, metadata) from a .safetensors or torch checkpoint, detected from content."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file. Check the path (and that the checkpoint finished downloading).")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a folder, not a checkpoint file.")
    kind = sniff_format(path)
    if kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), read_safetensors_metadata(path)
        except (SafetensorError, ValueError, OSError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"{path}: corrupt or truncated .safetensors file ({e}). Download it again.") from None
    if kind in ("zip", "pickle"):
        obj = load_pickle(path)
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise ModelLoadError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors.")
        return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, {}
    raise ModelLoadError(
        f"{path}: not a checkpoint: expected a .safetensors file or a torch .ckpt/.pt, "
        f"but the file starts with {open(path, 'rb').read(8)!r}."
    )
