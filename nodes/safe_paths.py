"""The one check for names that come from the browser or a workflow: they must name something inside an
allowed folder.

The guard is on the names (no absolute path, no `..`), not on where links lead: a workflow cannot create links,
and users link checkpoints, embeddings and picture folders into ComfyUI's folders on purpose (ComfyUI follows
such links, and so do we).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath


class PathEscapeError(ValueError):
    """A name that is absolute (outside its allowed folder) or holds `..`."""


def _is_absolute(name: str) -> bool:
    return bool(PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute()
                or PureWindowsPath(name).drive or name.startswith(("/", "\\")))


def relative_inside(root, name: str) -> str:
    """`name` as a name relative to `root`: an absolute path is accepted only when it lies inside `root` (as
    written, or after links on both sides), so a workflow can name a folder either way but never reach outside."""
    if isinstance(name, str) and _is_absolute(name):
        pairs = ((os.path.abspath(root), os.path.normpath(os.path.abspath(name))),
                 (str(Path(root).resolve()), str(Path(name).resolve())))
        for base, path in pairs:
            if os.path.commonpath([base, path]) == base and ".." not in PurePosixPath(name).parts:
                return Path(path).relative_to(base).as_posix()
        raise PathEscapeError(f"{name!r} is outside {root}; put it in a folder there and give that folder's "
                              "name (nodes read only their own ComfyUI folders).")
    return name


def resolve_inside(root, name: str) -> Path:
    """`root / name` (absolute, links not resolved: they are followed when the file is opened), after checking
    that `name` is relative and has no `..` part."""
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise PathEscapeError(f"{name!r} is not a file name.")
    if _is_absolute(name):
        raise PathEscapeError(f"{name!r} is absolute; give a name inside {root}.")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        raise PathEscapeError(f"{name!r} contains '..'; give a name inside {root}.")
    return Path(os.path.abspath(root)).joinpath(*parts)
