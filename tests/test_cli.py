"""The command line: make-model, sample, inspect (demo: test_toyworld_demo.py); user mistakes print one line and
exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import random_embedding
from ti_core.cli import main
from ti_core.embeddings import save_embedding

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_make_model_then_sample_with_an_embedding(tmp_path, capsys, loaded):
    model_path = tmp_path / "m.safetensors"
    assert main(["make-model", str(model_path), "--arch", "tiny-sd1", "--single-file", "--seed", "0"]) == 0
    emb = save_embedding(random_embedding(loaded("tiny-sd1"), "ignored-name"), tmp_path / "my-cat.safetensors")
    args = ["sample", "--model", str(model_path), "--prompt", "a photo of embedding:my-cat", "--embedding", str(emb),
            "--steps", "2", "--batch", "2", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    pngs = sorted((tmp_path / "out").glob("*.png"))
    assert [p.name for p in pngs] == ["ti_0_00.png", "ti_0_01.png"]
    assert main(args) == 0  # a second run never overwrites the first
    assert len(list((tmp_path / "out").glob("*.png"))) == 4
    from PIL import Image

    assert Image.open(pngs[0]).size == (64, 64)


@pytest.mark.slow
def test_make_model_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    assert main(["make-model", str(tmp_path / "m"), "--arch", "tiny-sd1"]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.slow
def test_inspect_embedding_json(tmp_path, capsys, loaded):
    emb = random_embedding(loaded("tiny-sdxl"), "e", n=3)
    path = save_embedding(emb, tmp_path / "e.safetensors")
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "safetensors" and info["name"] == "e" and info["vectors"] == 3
    assert info["tensors"]["clip_g"]["shape"] == [3, 64]
    expected = emb.vectors["clip_l"].double()
    assert info["tensors"]["clip_l"]["sum"] == pytest.approx(float(expected.sum()), abs=1e-9)
    assert info["tensors"]["clip_l"]["norm"] == pytest.approx(float(expected.norm()), abs=1e-9)


def test_inspect_checkpoint(single_file, capsys):
    assert main(["inspect", str(single_file("tiny-sd2")), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["family"], info["prediction_type"], info["architecture"]) == ("sd2", "v_prediction", "tiny-sd2")


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["sample", "--model", "/nonexistent/model.safetensors", "--prompt", "a", "--out", "x"], "no such file"),
    (["inspect", "/nonexistent/e.safetensors"], "no such file"),
])
def test_user_errors_print_one_line_and_exit_2(args, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ti_core", *args], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_bad_size_fails_before_sampling(tmp_path, model_dir, capsys):
    code = main(["sample", "--model", str(model_dir("tiny-sd1")), "--prompt", "a", "--width", "100",
                 "--out", str(tmp_path / "o")])
    assert code == 2
    assert "width 100 must be a positive multiple of 8" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
