"""Saving never leaves a half-written file: disk full, a crash mid-write, or a refusal keep the old file."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from ti_core.atomic import atomic_write
from ti_core.embeddings import Embedding, load_embedding, save_embedding
from ti_core.errors import SaveError


def _emb(value: float) -> Embedding:
    return Embedding("e", {"emb_params": torch.full((1, 4), value)})


def test_disk_full_keeps_the_previous_file_and_says_so(tmp_path, monkeypatch):
    path = save_embedding(_emb(1.0), tmp_path / "e.safetensors")
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SaveError, match="No space left on device; the previous file is unchanged. Free some disk"):
        save_embedding(_emb(2.0), path, overwrite=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.safetensors"]  # no temporary file left


def test_crash_in_the_middle_of_a_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "state.bin"
    path.write_bytes(b"good")

    def dies_halfway(f):
        f.write(b"half")
        raise KeyboardInterrupt  # like Ctrl-C, or the process being killed between two writes

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies_halfway, overwrite=True)
    assert path.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]


def test_new_file_failure_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(SaveError, match="nothing was written"):
        save_embedding(_emb(1.0), tmp_path / "new.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_killed_process_leaves_the_old_file_whole(tmp_path):
    """A real SIGKILL while a large file is being written: the old file loads, bit for bit."""
    import subprocess
    import sys
    import time

    path = save_embedding(_emb(3.0), tmp_path / "e.safetensors")
    before = path.read_bytes()
    code = (
        "import sys, time, torch\n"
        "from ti_core.atomic import atomic_write\n"
        "def slow(f):\n"
        "    for _ in range(10_000):\n"
        "        f.write(b'x' * 65536); f.flush(); time.sleep(0.001)\n"
        f"atomic_write({str(path)!r}, slow, overwrite=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__)))
    deadline = time.time() + 30
    while not list(tmp_path.glob(".*.partial")) and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert path.read_bytes() == before
    assert torch.equal(load_embedding(path).vectors["emb_params"], torch.full((1, 4), 3.0))
