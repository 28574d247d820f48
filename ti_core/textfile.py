"""Read a small text file a user wrote (captions, templates), with errors that say how to fix it."""

from __future__ import annotations

from pathlib import Path


def read_user_text(path: Path, what: str, error: type) -> str:
    """The file's text (UTF-8, a BOM allowed); `error` names `what` and `path` when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); re-save it as UTF-8.") from exc
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}.") from exc
