"""The one check for names that come from the browser or a workflow: they must stay inside an allowed folder."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath


class PathEscapeError(ValueError):
    """A name that is absolute, holds `..`, or resolves (through links) outside its allowed folder."""


def relative_inside(root, name: str) -> str:
    """`name` as a name relative to `root`: an absolute path is accepted only when it lies (after links) inside
    `root`, so a workflow can name a folder either way but never reach outside."""
    if isinstance(name, str) and (PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute()):
        try:
            return Path(name).resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            raise PathEscapeError(f"{name!r} is outside {root}; put it in a folder there and give that folder's "
                                  "name (nodes read only their own ComfyUI folders).") from None
    return name


def resolve_inside(root, name: str) -> Path:
    """`root / name`, resolved, after checking that `name` is relative, has no `..` part and stays in `root`."""
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise PathEscapeError(f"{name!r} is not a file name.")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if (PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive
            or name.startswith(("/", "\\"))):
        raise PathEscapeError(f"{name!r} is absolute; give a name inside {root}.")
    if ".." in parts:
        raise PathEscapeError(f"{name!r} contains '..'; give a name inside {root}.")
    root = Path(root).resolve()
    path = (root / Path(*parts)).resolve()
    if os.path.commonpath([root, path]) != str(root):
        raise PathEscapeError(f"{name!r} leads outside {root}.")
    return path
