"""`python -m ti_core train`: trains, saves a file that inspect reads, and Ctrl-C saves and exits cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import disc_images as _images
from ti_core.cli import main
from ti_core.embeddings import load_embedding

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_then_inspect(tmp_path, model_dir, capsys):
    out = tmp_path / "disc.safetensors"
    code = main(["train", "--model", str(model_dir("tiny-sd1")), "--images", str(_images(tmp_path / "img")),
                 "--name", "disc", "--out", str(out), "--steps", "4", "--vectors", "2", "--init-text", "red ball",
                 "--preview-every", "2", "--lr", "1e-2:2, 5e-3"])
    assert code == 0
    assert "finished at step 4 of 4" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "disc_previews").iterdir()) == ["step_000002.png", "step_000004.png"]
    assert main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["vectors"] == 2 and info["metadata"]["step"] == "4" and info["metadata"]["init_text"] == "red ball"
    # a second run refuses to overwrite the result, before loading anything
    assert main(["train", "--model", "/nonexistent", "--images", str(tmp_path / "img"), "--name", "disc",
                 "--out", str(out), "--steps", "4"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_bad_schedule_is_one_line_naming_the_piece(tmp_path, capsys):
    code = main(["train", "--model", "m", "--images", str(tmp_path), "--name", "x", "--out", str(tmp_path / "x.st"),
                 "--lr", "5e-3:100, 1e-3:50"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "piece 2" in err and "larger than the previous bound (100)" in err


@pytest.mark.slow
def test_ctrl_c_saves_and_exits_cleanly(tmp_path, model_dir):
    out = tmp_path / "disc.safetensors"
    images = _images(tmp_path / "img")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ti_core", "train", "--model", str(model_dir("tiny-sd1")), "--images", str(images),
         "--name", "disc", "--out", str(out), "--steps", "100000", "--save-every", "3"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    state = tmp_path / "disc.state.safetensors"
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert state.exists(), proc.stderr.read() if proc.poll() is not None else "no save within 120 s"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "stopped on request at step" in stdout
    step = int(stdout.split("stopped on request at step ")[1].split(" ")[0])
    assert 3 <= step < 100000
    assert load_embedding(out).metadata["step"] == str(step)
