"""Read tensors from checkpoint files without ever running code from them.

`.safetensors` is plain data. `.ckpt`/`.pt`/`.bin` are pickles: they are read only with
`torch.load(weights_only=True)`, whose unpickler refuses every global outside torch's tensor types; the few
harmless globals that real Stable Diffusion checkpoints carry are allowed through inert stand-ins.
"""

from __future__ import annotations

import json
import pickle
import pickletools
import re
import struct
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import torch

from .errors import ModelLoadError, UnsafeFileError
from .memory import release_free_memory


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
    """'safetensors', 'zip' (torch zip pickle), 'pickle' (legacy torch pickle), 'png', 'webp' or 'unknown',
    from the bytes."""
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
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return "unknown"


def _read_header(path: Path) -> tuple[int, dict]:
    """(offset where tensor data starts, the JSON header) of a .safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return 8 + n, json.loads(f.read(n))


def read_safetensors_metadata(path: Path) -> dict:
    return _read_header(path)[1].get("__metadata__") or {}


def read_safetensors(path: Path, error: type = ModelLoadError) -> tuple[dict, dict]:
    """-> (tensors, header metadata); a damaged file raises `error`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path)), read_safetensors_metadata(path)
    except (SafetensorError, ValueError, OSError, json.JSONDecodeError) as e:
        raise error(f"{path}: corrupt or truncated .safetensors file ({e}). Download it again.") from None


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


_RELEASE_EVERY = 256 * 2**20  # bytes of cast-away buffers between two trims


class LazySafetensors(Mapping):
    """A .safetensors file as a read-only mapping that reads (and casts floats to `dtype`) one tensor per lookup.

    Tensors are read with plain file reads, not a memory map, so the file's pages never count toward this
    process's memory: loading an fp32 SD1.5 file as bf16 peaks near the bf16 model's size.
    """

    def __init__(self, path: Path, dtype: torch.dtype | None, error: type = ModelLoadError):
        self.path, self.dtype, self.error = path, dtype, error
        self._unreleased = 0
        try:
            size = path.stat().st_size
            start, header = _read_header(path)
            self.metadata = header.pop("__metadata__", None) or {}
            self._entries = {}
            for key, entry in header.items():
                begin, end = entry["data_offsets"]
                if entry["dtype"] not in _SAFETENSORS_DTYPES:
                    raise ValueError(f"tensor {key} has unsupported dtype {entry['dtype']}")
                if not 0 <= begin <= end or start + end > size:
                    raise ValueError(f"tensor {key} lies past the end of the file ({size} bytes)")
                dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
                self._entries[key] = (dtype, tuple(entry["shape"]), start + begin, end - begin)
        except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
            raise error(f"{path}: corrupt or truncated .safetensors file ({e}). Download it again.") from None

    def __getitem__(self, key: str) -> torch.Tensor:
        dtype, shape, offset, length = self._entries[key]
        raw = bytearray(length)
        with open(self.path, "rb") as f:
            f.seek(offset)
            got = f.readinto(raw)
        if got != length:
            raise self.error(f"{self.path}: truncated .safetensors file (tensor {key}). Download it again.")
        tensor = torch.frombuffer(raw, dtype=dtype) if length else torch.empty(0, dtype=dtype)
        tensor = tensor.reshape(shape)
        if self.dtype is not None and tensor.is_floating_point() and tensor.dtype != self.dtype:
            tensor = tensor.to(self.dtype)
            self._unreleased += length
            if self._unreleased > _RELEASE_EVERY:  # freed read buffers would otherwise pile up in the heap
                release_free_memory()
                self._unreleased = 0
        return tensor

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


# Globals of plain tensor data; any other global a refused pickle names is reported to the user.
_TENSOR_GLOBALS = frozenset(
    {"collections.OrderedDict", "builtins.set", "__builtin__.set", "torch._utils._rebuild_tensor_v2",
     "torch._utils._rebuild_parameter", "torch.Size"}
)
_STRING_OPS = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE",
                         "BINUNICODE8"})


def pickle_globals(raw: bytes) -> list:
    """The globals ('module.name') a pickle refers to, read from its opcodes; nothing in it is run."""
    found, memo = [], {}
    recent = []  # strings pushed since the last other opcode: STACK_GLOBAL takes the last two
    try:
        for op, arg, _ in pickletools.genops(raw):
            name = op.name
            if name == "GLOBAL":
                found.append(arg.replace(" ", "."))
            elif name in _STRING_OPS:
                recent.append(arg)
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                recent.append(memo.get(arg))
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                memo[len(memo) if name == "MEMOIZE" else arg] = recent[-1] if recent else None
            elif name == "STACK_GLOBAL":
                if len(recent) >= 2 and all(isinstance(s, str) for s in recent[-2:]):
                    found.append(f"{recent[-2]}.{recent[-1]}")
                recent = []
            elif name != "FRAME":
                recent = []
    except ValueError:  # truncated or not a pickle: report what was read
        pass
    return found


# What reading a damaged zip or pickle raises (found by tests/test_fuzz_readers.py): all mean "damaged file".
_DAMAGED = (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError,
            struct.error, OverflowError, zipfile.BadZipFile, zlib.error)  # RuntimeError covers NotImplemented


def _pickle_bytes(path: Path) -> bytes:
    """The pickle stream of a torch file: `<root>/data.pkl` of a zip, else the file itself."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith("data.pkl")]
            return z.read(names[0]) if names else b""
    return Path(path).read_bytes()


def _refused_global(path: Path, message: str, allowed: set) -> str:
    """The global to name in a refusal: the first one outside tensor data and our allow-list, else the one
    torch's message names."""
    try:
        for name in pickle_globals(_pickle_bytes(path)):
            if name not in allowed and name not in _TENSOR_GLOBALS and not re.fullmatch(r"torch\.\w*Storage", name):
                return name
    except _DAMAGED:  # best effort: a damaged file still gets torch's own wording below
        pass
    found = re.search(r"GLOBAL ([\w.]+)", message) or re.search(r"global:? ([\w.]+)", message)
    return found.group(1) if found else "an object that is not a tensor"


def load_pickle(path: Path, allow: tuple = (), error: type = ModelLoadError):
    """torch.load with weights_only=True and our allow-list (plus the classes in `allow`, e.g. ParameterDict);
    storages saved on a GPU are mapped to the CPU. Refusals name the global that was asked for; a file that
    is not a torch pickle raises `error`."""
    inert = [(type(name.rsplit(".", 1)[1], (_Inert,), {}), name) for name in _INERT_GLOBALS]
    try:
        # An open file, not the path: torch.load would pick its reader from a ".safetensors" suffix.
        with torch.serialization.safe_globals([*inert, *allow]), open(path, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        allowed = {*_INERT_GLOBALS, *(f"{c.__module__}.{c.__qualname__}" for c in allow)}
        what = _refused_global(Path(path), str(e), allowed)
        raise UnsafeFileError(
            f"{path}: refused to load: its pickle asks for {what!r}, which is not plain tensor data and could "
            "run code. Nothing from the file was executed. Get a .safetensors version of this file, or convert "
            "it on a machine where you trust its source."
        ) from None
    except _DAMAGED as e:
        raise error(f"{path}: not a readable torch file ({type(e).__name__}: {e}). The file may be truncated "
                    "or damaged; download it again.") from None


def checkpoint_from_pickle(obj, path: Path) -> tuple[dict, dict]:
    """-> (state_dict of tensors, metadata) of an unpickled checkpoint: `{"state_dict": ...}` wrappers are
    unwrapped, and the top level's string entries are its metadata, like a .safetensors header."""
    if not isinstance(obj, dict):
        raise ModelLoadError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors.")
    metadata = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, str)}
    if isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, metadata


def load_tensors(path: str | Path, lazy_dtype: torch.dtype | None = None) -> tuple[Mapping, dict]:
    """-> (state_dict of tensors, metadata) from a .safetensors or torch checkpoint, detected from content.

    With `lazy_dtype`, a .safetensors file is returned as a `LazySafetensors` that casts to that dtype."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file. Check the path (and that the checkpoint finished downloading).")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a folder, not a checkpoint file.")
    kind = sniff_format(path)
    if kind == "safetensors":
        if lazy_dtype is not None:
            lazy = LazySafetensors(path, lazy_dtype)
            return lazy, lazy.metadata
        return read_safetensors(path)
    if kind in ("zip", "pickle"):
        return checkpoint_from_pickle(load_pickle(path), path)
    raise ModelLoadError(
        f"{path}: not a checkpoint: expected a .safetensors file or a torch .ckpt/.pt, "
        f"but the file starts with {open(path, 'rb').read(8)!r}."
    )
