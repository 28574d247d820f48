"""Write files so that a crash, a kill or a full disk never leaves a half-written file where a good one was."""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable

from .errors import SaveError, TIError


def _default_exists(path: Path) -> Exception:
    return TIError(f"{path} already exists; choose another name or allow replacing it.")


def atomic_write(path, write: Callable[[BinaryIO], None], *, overwrite: bool,
                 exists_error: Callable[[Path], Exception] = _default_exists) -> Path:
    """`write(file)` to a temporary file beside `path`, fsync, then move it to `path` (an atomic rename in the same
    folder). On any failure the temporary file is removed and `path` is untouched. Refuses to replace an existing
    file unless `overwrite`, raising `exists_error(path)`."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise exists_error(path)
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.partial")
    # Created here rather than by a library, so the user's umask applies (safetensors writes mode 0600).
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            _move_into_place(tmp, path, overwrite, exists_error)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except TIError:
        raise
    except OSError as e:
        kept = "the previous file is unchanged" if path.exists() else "nothing was written"
        hint = "free some disk space" if e.errno == errno.ENOSPC else "check the folder's permissions and space"
        raise SaveError(f"could not write {path}: {e.strerror or e}; {kept}. "
                        f"{hint.capitalize()} and try again.") from e
    return path


def _move_into_place(tmp: str, path: Path, overwrite: bool, exists_error) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if a file appeared meanwhile: never replaces one
    except FileExistsError:
        raise exists_error(path) from None
    except OSError:  # the file system has no hard links
        if path.exists():
            raise exists_error(path) from None
        os.replace(tmp, path)


def free_path(path) -> Path:
    """`path`, or the first `name-N.ext` that does not exist yet (for outputs we never overwrite)."""
    path = Path(path)
    n, candidate = 1, path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return candidate
