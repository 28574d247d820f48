"""The built-in toy-world model: the shipped weights load through the same path as any checkpoint and draw what a
held-in caption asks for (the judge agrees); the training script is deterministic and keeps the held-out pairs out;
a missing file says how to rebuild it."""

from __future__ import annotations

import random

import pytest
import torch

from ti_core.errors import ModelLoadError
from ti_core.models import load_model
from ti_core.toyworld import model as toy
from ti_core.toyworld import render
from ti_core.toyworld.fidelity import ATTRS, generate, scenes_for, score
from ti_core.toyworld.judge import load_judge
from ti_core.toyworld.train_base import BaseConfig, make_scenes, train_base


@pytest.fixture(scope="module")
def model():
    return load_model(toy.builtin_model_path())


@pytest.mark.slow
def test_the_shipped_model_is_an_sd1_checkpoint_of_the_toy_architecture(model):
    assert (model.family, model.prediction_type, model.resolution) == ("sd1", "epsilon", 32)
    assert sum(p.numel() for p in model.unet.parameters()) == 6_715_588
    assert model.text_encoders[0].config.hidden_size == 128
    assert toy.MODEL_FILE.stat().st_size < 40e6  # the repository stays lean
    ids = model.tokenizers[0]("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.mark.slow
def test_it_draws_what_held_in_captions_ask_for(model):
    scenes = scenes_for("held-in", 16, seed=5)
    labels = load_judge().classify(generate(model, [render.caption(s) for s in scenes], seed=5))
    result = score(labels, [{a: getattr(s, a) for a in ATTRS} for s in scenes])
    assert result.all >= 0.8, (result.row(), labels)


@pytest.mark.slow
def test_a_caption_without_a_background_gives_the_default_white_one(model):
    labels = load_judge().classify(generate(model, ["a red striped square"] * 8, seed=1))
    assert sum(label["background"] == "white" for label in labels) >= 6, labels


def test_held_out_pairs_never_reach_base_training():
    scenes = make_scenes(4000, random.Random(0), default_share=0.15)
    assert not any(s.held_out for s in scenes)
    every = {(c, s) for c in render.COLOURS for s in render.SHAPES}
    assert {(s.colour, s.shape) for s in scenes} == every - render.HELD_OUT


@pytest.mark.slow
def test_training_script_is_deterministic_and_writes_a_loadable_model(tmp_path):
    config = BaseConfig(steps=2, vae_steps=2, images=64, vae_batch=8, batch=4, log_every=1000)
    first = train_base(config, tmp_path / "a.safetensors", log=lambda m: None)
    second = train_base(config, tmp_path / "b.safetensors", log=lambda m: None)
    from safetensors.torch import load_file

    a, b = load_file(str(first)), load_file(str(second))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    loaded = load_model(first)
    assert loaded.family == "sd1" and loaded.resolution == 32


def test_a_missing_model_says_how_to_rebuild_it(tmp_path, monkeypatch):
    monkeypatch.setattr(toy, "MODEL_FILE", tmp_path / "gone.safetensors")
    with pytest.raises(ModelLoadError, match="python -m ti_core.toyworld.train_base"):
        toy.builtin_model_path()


def test_score_counts_only_the_asked_attributes():
    labels = [{"shape": "star", "colour": "red", "pattern": "solid", "background": "white"}] * 2
    wanted = [{"shape": "star", "colour": "red"}, {"shape": "star", "colour": "blue"}]
    result = score(labels, wanted)
    assert result.attributes == {"shape": 1.0, "colour": 0.5} and result.all == 0.5 and result.n == 2
