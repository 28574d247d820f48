"""What each training node is doing, for the /textual_inversion/status route (one small locked table)."""

from __future__ import annotations

import threading
import time

_lock = threading.Lock()
_runs: dict = {}  # node id -> {"name", "state", "step", "steps", "loss", "smoothed_loss", "lr", "updated", ...}


def report(node_id, **fields) -> None:
    with _lock:
        _runs.setdefault(str(node_id), {}).update(fields, updated=time.time())


def snapshot() -> dict:
    with _lock:
        return {key: dict(value) for key, value in _runs.items()}
