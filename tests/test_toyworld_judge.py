"""The toy world's judge: the shipped weights load and name every attribute of fresh renders (held-out pairs
included), crisp or blurred and noisy, at any size, from tensors or PIL images; a missing file says how to rebuild
it; training is deterministic for a seed."""

from __future__ import annotations

import random

import pytest
import torch
from PIL import Image

from ti_core.errors import TIError
from ti_core.toyworld.judge import ATTRIBUTES, WEIGHTS, Judge, evaluate, load_judge, read_metadata, train_judge
from ti_core.toyworld.render import COLOURS, PATTERNS, SHAPES, random_scene, render


@pytest.fixture(scope="module")
def judge():
    return load_judge()


def test_the_shipped_weights_load_on_cpu_in_eval_mode(judge):
    assert isinstance(judge, Judge) and not judge.training
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in judge.parameters())
    assert 100_000 < sum(p.numel() for p in judge.parameters()) < 600_000
    assert read_metadata()["format"].startswith("ti_core.toyworld.judge")


@pytest.mark.slow
@pytest.mark.parametrize("augment", [False, True], ids=["clean", "blurred+noisy"])
def test_every_attribute_is_named_right_on_fresh_renders(judge, augment):
    accuracy = evaluate(judge, n=1024, seed=2024, augment=augment)
    assert set(accuracy) == set(ATTRIBUTES)
    assert all(value >= 0.98 for value in accuracy.values()), accuracy


def _scenes(n, seed):
    rng = random.Random(seed)
    return [random_scene(rng, held_out="include") for _ in range(n)]


def test_classify_names_the_attributes_of_held_out_pairs_at_another_size(judge):
    scenes = [random_scene(random.Random(i), held_out="only") for i in range(32)]
    answers = judge.classify(render(scenes, size=64, generator=torch.Generator().manual_seed(0)))
    assert len(answers) == 32 and all(set(a) == {"shape", "colour", "pattern", "background"} for a in answers)
    assert all(a["shape"] in SHAPES and a["colour"] in COLOURS and a["pattern"] in PATTERNS
               and a["background"] in COLOURS for a in answers)
    right = sum(a == {"shape": s.shape, "colour": s.colour, "pattern": s.pattern, "background": s.background}
                for a, s in zip(answers, scenes))
    assert right >= 30, answers


def test_classify_takes_pil_images_and_a_single_tensor(judge):
    scenes = _scenes(8, 7)
    images = render(scenes, size=48)
    pil = [Image.fromarray((im.permute(1, 2, 0) * 255).round().byte().numpy()) for im in images]
    from_pil, from_tensor = judge.classify(pil), judge.classify(images)
    assert from_pil == from_tensor
    assert judge.classify(images[0]) == from_tensor[:1]
    assert sum(a["shape"] == s.shape and a["colour"] == s.colour for a, s in zip(from_pil, scenes)) >= 7


def test_a_missing_weights_file_says_how_to_rebuild_it(tmp_path):
    missing = tmp_path / "judge.safetensors"
    with pytest.raises(TIError) as err:
        load_judge(missing)
    assert str(missing) in str(err.value) and "python -m ti_core.toyworld.judge train" in str(err.value)
    assert WEIGHTS.name == "judge.safetensors"


def test_training_is_deterministic_for_a_seed():
    def weights(seed):
        return train_judge(seed, steps=3, batch_size=16).state_dict()

    first, again, other = weights(1), weights(1), weights(2)
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
