"""Errors and faults, across the CLI, the trainer and the nodes. Bad inputs give one clear typed error naming the
file or value and the fix (CLI: one line, exit 2, no traceback; nodes: the node's error), faults leave whole
files, and nothing untrusted runs."""

from __future__ import annotations

import ast
import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import InterruptProcessingException
from conftest import disc_images as _images
from ti_core.cli import main
from ti_core.embeddings import Embedding, check_name, load_embedding, save_embedding
from ti_core.errors import EmbeddingError, ModelLoadError, SaveError, SettingError, TIError
from ti_core.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


def _one_line_error(capsys, code, *needles):
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.count("\n") == 0 and err.startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# ---------------------------------------------------------------------------------------------------------
# 1. check early; CLI errors are one line


@pytest.mark.parametrize("extra, message", [
    (["--steps", "0"], "steps 0 must be 1 to"),
    (["--vectors", "0"], "vectors 0 must be 1 to 75"),
    (["--vectors", "76"], "vectors 76 must be 1 to 75"),
    (["--resolution", "100"], "resolution 100 must be a positive multiple of 8"),
    (["--lr", "5e-3:100, 1e-3:oops"], "piece 2"),
    (["--batch", "0"], "batch_size 0 must be 1 to"),
    (["--name", "COM1"], "reserved device name"),
    (["--name", "../up"], "path separator"),
    (["--resume", "/nonexistent/x.state.safetensors"], "no such resume state"),
    (["--template", "/nonexistent/t.txt"], "template file /nonexistent/t.txt does not exist"),
])
def test_cli_train_bad_parameters_fail_in_one_line_before_the_model_loads(extra, message, tmp_path, capsys):
    """--model does not exist: each error must come before the model is read, and say what to change."""
    args = ["train", "--model", "/nonexistent/model", "--images", str(_images(tmp_path / "img")), "--name", "x",
            "--out", str(tmp_path / "x.safetensors"), *extra]
    _one_line_error(capsys, main(args), message)


def test_cli_argument_syntax_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", "--model", "m", "--images", "i", "--name", "x", "--out", "o", "--steps", "abc"])
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and err.count("\n") == 0, err
    assert "argument --steps: invalid int value: 'abc'" in err and "--help" in err


def test_cli_sample_into_a_file_instead_of_a_folder_is_one_line(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("x")
    code = main(["sample", "--model", "/nonexistent/model", "--prompt", "a", "--out", str(taken)])
    _one_line_error(capsys, code, str(taken), "not a folder")


@pytest.mark.slow
def test_cli_sample_bad_settings_are_one_line(tmp_path, model_dir, capsys):
    base = ["sample", "--model", str(model_dir("tiny-sd1")), "--prompt", "a", "--out", str(tmp_path / "o")]
    capsys.readouterr()  # what making the model printed
    _one_line_error(capsys, main([*base, "--steps", "0"]), "steps 0 must be at least 1")
    _one_line_error(capsys, main([*base, "--cfg", "nan", "--steps", "1"]), "cfg nan")


def test_cli_convert_errors_are_one_line(tmp_path, capsys):
    good = save_embedding(Embedding("e", {"emb_params": torch.ones(1, 8)}), tmp_path / "e.safetensors")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_line_error(capsys, main(["convert", str(good), str(blocker / "out.safetensors")]), "could not write")
    _one_line_error(capsys, main(["convert", str(tmp_path / "absent.pt"), str(tmp_path / "o.safetensors")]),
                    "no such embedding file")


def test_tiny_images_train(tmp_path, loaded):
    folder = tmp_path / "tiny"
    folder.mkdir()
    for i, colour in enumerate([(200, 0, 0), (0, 200, 0)]):
        Image.new("RGB", (16, 16), colour).save(folder / f"{i}.png")
    result = train(loaded("tiny-sd1"), folder, TrainConfig(name="t", steps=1, resolution=32))
    assert result.steps_done == 1 and torch.isfinite(result.embedding.vectors["emb_params"]).all()


# ---------------------------------------------------------------------------------------------------------
# 2. bad models


def _broken_copy(model_dir, tmp_path, arch="tiny-sd1") -> Path:
    broken = tmp_path / "broken"
    shutil.copytree(model_dir(arch), broken)
    return broken


def test_diffusers_folder_without_unet_weights_names_the_folder(tmp_path, model_dir):
    broken = _broken_copy(model_dir, tmp_path)
    for f in (broken / "unet").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelLoadError, match=r"broken/unet: no weights"):
        from ti_core.models import load_model

        load_model(broken)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "unet" / "model.safetensors.index.json").write_text("{}"), "unet/model.safetensors.index.json"),
    (lambda d: (d / "unet" / "model.safetensors.index.json").write_text("not json"),
     "unet/model.safetensors.index.json"),
    (lambda d: (d / "unet" / "config.json").write_text('{"in_channels": "x"}'), "cannot build"),
    (lambda d: (d / "vae" / "config.json").write_text("[1, 2]"), "vae/config.json: a config is a JSON object"),
    (lambda d: (d / "vae" / "config.json").unlink(), "vae/config.json: missing"),
])
def test_diffusers_folder_with_broken_parts_is_a_model_error(damage, message, tmp_path, model_dir):
    from ti_core.models import load_model

    broken = _broken_copy(model_dir, tmp_path)
    damage(broken)
    with pytest.raises(ModelLoadError, match=message) as refused:
        load_model(broken)
    assert str(broken) in str(refused.value)


# ---------------------------------------------------------------------------------------------------------
# 2. bad embeddings


@pytest.mark.parametrize("vectors, message", [
    ({"emb_params": torch.ones(0, 768)}, r"shape \(0, 768\); expected \[n, width\], n >= 1"),
    ({"emb_params": torch.ones(1, 768).fill_(float("inf"))}, "NaN or infinite"),
    ({"clip_l": torch.ones(1, 768), "clip_g": torch.full((1, 1280), float("-inf"))},
     "clip_g contains NaN or infinite"),
    ({}, "holds no vectors|unknown embedding layout|empty"),
])
def test_empty_and_non_finite_embeddings_are_refused_on_load_naming_the_file(vectors, message, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    save_file(vectors, str(path))
    with pytest.raises(EmbeddingError, match=message) as refused:
        load_embedding(path)
    assert str(path) in str(refused.value)


@pytest.mark.parametrize("value, message", [
    (torch.full((1, 8), float("nan")), "NaN or infinite"),
    (torch.ones(0, 8), r"shape \(0, 8\)"),
])
def test_empty_and_non_finite_embeddings_are_never_saved(value, message, tmp_path):
    with pytest.raises(EmbeddingError, match=message):
        save_embedding(Embedding("e", {"emb_params": value}), tmp_path / "e.safetensors")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["COM1", "com9", "LPT1", "aux", "Nul", "prn.txt", "con.safetensors"])
def test_reserved_device_names_are_refused(name):
    with pytest.raises(EmbeddingError, match="reserved device name"):
        check_name(name)


@pytest.mark.parametrize("name", ["a..b", "..", "a\\b", "a/b", "c:x"])
def test_path_like_names_are_refused(name):
    with pytest.raises(EmbeddingError, match="path separator"):
        check_name(name)


def test_ordinary_names_pass():
    for name in ("my-cat_v2", "COM", "com10", "console", "nulla", "été"):
        assert check_name(name) == name


# ---------------------------------------------------------------------------------------------------------
# 3. faults


@pytest.mark.slow
def test_disk_full_during_a_training_save_keeps_the_last_save_whole(tmp_path, loaded, monkeypatch):
    out = tmp_path / "disc.safetensors"
    real_fsync, calls = os.fsync, {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > 2:  # the step-1 save (embedding + state) succeeds; the step-2 one finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(SaveError, match="No space left on device.*previous file is unchanged.*Free some disk space"):
        train(loaded("tiny-sd1"), _images(tmp_path / "img"), TrainConfig(name="disc", steps=5, save_every=1,
                                                                            output=str(out)))
    assert load_embedding(out).metadata["step"] == "1"
    assert not list(tmp_path.glob(".*.partial"))


def _node_train(nodes, model, images, **changes):
    settings = dict(name="disc", init_text="red ball", vectors=1, steps=6, learning_rate="1e-2", batch_size=1,
                    grad_accum=1, template="object", crop="random", resolution=32, save_every=4, preview_every=0,
                    train_seed=0, resume=False)
    return nodes["TITrainEmbedding"]().train(model, images=images, **{**settings, **changes}, unique_id="1")


@pytest.mark.slow
@pytest.mark.parametrize("cancel_at", [1, 2, 4, 5])
def test_comfyui_cancel_at_any_step_keeps_a_whole_file_and_resume_finishes(cancel_at, nodes, fake, node_setup):
    model, images = node_setup
    fake.interrupt_after = cancel_at
    with pytest.raises(InterruptProcessingException):
        _node_train(nodes, model, images)
    path = fake.base / "models" / "embeddings" / "disc.safetensors"
    assert load_embedding(path).metadata["step"] == str(cancel_at)
    assert not list(path.parent.glob(".*.partial"))
    fake.interrupt_after = None
    out = _node_train(nodes, model, images, resume=True)
    assert out["result"][0].metadata["step"] == "6" and load_embedding(path).metadata["step"] == "6"
    steps = [d["step"] for e, d in fake.events if e == "textual_inversion.progress"]
    assert steps == [*range(1, cancel_at + 1), *range(cancel_at + 1, 7)]


@pytest.mark.slow
def test_comfyui_cancel_before_the_first_step_saves_step_0_and_resume_works(nodes, fake, node_setup):
    model, images = node_setup
    fake.interrupted = True  # Cancel pressed while the node was being queued
    with pytest.raises(InterruptProcessingException):
        _node_train(nodes, model, images)
    fake.interrupted = False
    out = _node_train(nodes, model, images, resume=True, steps=2)
    assert out["result"][0].metadata["step"] == "2"


# ---------------------------------------------------------------------------------------------------------
# 2 / 1. node inputs give the clear message


@pytest.mark.parametrize("changes, error, message", [
    ({"name": "CON"}, "EmbeddingError", "reserved device name"),
    ({"name": "a/b"}, "EmbeddingError", "path separator"),
    ({"name": "../up"}, "EmbeddingError", "path separator"),
    ({"steps": 0}, "SettingError", "steps 0 must be 1 to"),
    ({"vectors": 76}, "SettingError", "vectors 76 must be 1 to 75"),
    ({"resolution": 100}, "SettingError", "resolution 100 must be a positive multiple of 8"),
    ({"learning_rate": "1e-2:10, x"}, "SettingError", "piece 2"),
    ({"template": "/nonexistent/t.txt"}, "PathEscapeError", "'/nonexistent/t.txt' is outside"),
    ({"template": "../t.txt"}, "PathEscapeError", r"'\.\.'"),
    ({"template": "absent.txt"}, "SettingError", r"template file .*absent\.txt does not exist"),
])
def test_train_node_bad_inputs_raise_the_clear_error_before_training(changes, error, message, nodes, fake, node_setup):
    """The pack's ti_core is imported as ti_pack.ti_core, so the classes are matched by name."""
    model, images = node_setup
    with pytest.raises(ValueError, match=message) as refused:
        _node_train(nodes, model, images, **changes)
    assert type(refused.value).__name__ == error
    assert fake.events == [] and not (fake.base / "models" / "embeddings").exists()


@pytest.mark.parametrize("node, kwargs, message", [
    ("TILoadModel", {"model_name": "../../etc/passwd", "dtype": "fp32"}, r"'\.\.'"),
    ("TILoadModel", {"model_name": "/etc/passwd", "dtype": "fp32"}, "absolute"),
    ("TILoadEmbedding", {"embedding_name": "../x.safetensors"}, r"'\.\.'"),
    ("TILoadEmbedding", {"embedding_name": "/etc/passwd"}, "absolute"),
    ("TILoadImages", {"folder": "../x", "preview_size": 64}, r"'\.\.'"),
    ("TILoadImages", {"folder": "/etc", "preview_size": 64}, "'/etc' is outside"),
])
def test_node_paths_outside_their_folders_are_refused(node, kwargs, message, nodes, fake):
    instance = nodes[node]()
    with pytest.raises(ValueError, match=message):
        getattr(instance, instance.FUNCTION)(**kwargs)


@pytest.mark.parametrize("name, message", [
    ("../up", "path separator"), ("/tmp/abs", "path separator"), ("CON", "reserved device name"), ("", "empty"),
])
def test_save_node_refuses_unsafe_names_with_the_clear_message(name, message, nodes, fake):
    embedding = Embedding("e", {"emb_params": torch.ones(1, 32)})
    with pytest.raises(ValueError, match=message):
        nodes["TISaveEmbedding"]().save(embedding, name, "safetensors")
    assert not (fake.base / "models" / "up.safetensors").exists()
    assert not list((fake.base / "models").rglob("CON*"))


# ---------------------------------------------------------------------------------------------------------
# 4. nothing untrusted runs


def _calls(tree, name: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(name):
            yield node


def test_every_torch_load_is_weights_only_and_nothing_unpickles_directly():
    sources = [p for folder in ("ti_core", "nodes") for p in (ROOT / folder).rglob("*.py")]
    loads = 0
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in _calls(tree, "torch.load"):
            loads += 1
            flags = {k.arg: ast.unparse(k.value) for k in call.keywords}
            assert flags.get("weights_only") == "True", f"{path}:{call.lineno} torch.load without weights_only=True"
        for name in ("pickle.load", "pickle.loads", "Unpickler"):
            assert not list(_calls(tree, name)), f"{path} unpickles with {name}"
    assert loads >= 1


def test_a_pickle_posing_as_a_resume_state_is_refused_and_never_runs(tmp_path, loaded):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    state = tmp_path / "x.state.safetensors"
    torch.save({"payload": Payload()}, state)
    with pytest.raises(SettingError, match="not a ti_core resume state"):
        train(loaded("tiny-sd1"), _images(tmp_path / "img"), TrainConfig(name="x", steps=1, resume=str(state)))
    assert not marker.exists()


@pytest.mark.slow
def test_resume_state_is_safetensors_with_a_json_header(tmp_path, loaded):
    out = tmp_path / "x.safetensors"
    result = train(loaded("tiny-sd1"), _images(tmp_path / "img"), TrainConfig(name="x", steps=1, output=str(out)))
    raw = Path(result.state_path).read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert isinstance(json.loads(header["__metadata__"]["ti_core.train_state"]), dict)


def test_typed_errors_are_all_tierror():
    assert all(issubclass(e, TIError) for e in (EmbeddingError, ModelLoadError, SaveError, SettingError))
