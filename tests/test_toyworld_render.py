"""The toy world's renderer: deterministic, labels that match the pixels, held-out pairs kept out, caption words
that are single CLIP tokens."""

from __future__ import annotations

import random

import pytest
import torch

from ti_core.toyworld.render import (
    COLOURS,
    HELD_OUT,
    PATTERNS,
    SHAPES,
    TEMPLATES,
    Scene,
    caption,
    random_scene,
    render,
)


def test_same_seed_same_pictures():
    def draw(seed):
        rng = random.Random(seed)
        return render([random_scene(rng) for _ in range(16)], generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))
    assert draw(3).shape == (16, 3, 32, 32) and 0 <= float(draw(3).min()) and float(draw(3).max()) <= 1


@pytest.mark.parametrize("shape", [s for s in SHAPES if s != "ring"])
def test_the_centre_has_the_shape_colour_and_the_corner_the_background(shape):
    scene = Scene(shape, "red", "solid", "blue", cx=0.5, cy=0.5, radius=0.4)
    image = render([scene], size=32)[0]
    centre, corner = image[:, 16, 16], image[:, 0, 0]
    assert torch.allclose(centre, torch.tensor(COLOURS["red"]), atol=0.02), shape
    assert torch.allclose(corner, torch.tensor(COLOURS["blue"]), atol=0.02), shape


def test_a_ring_is_empty_in_the_middle():
    image = render([Scene("ring", "red", "solid", "blue", 0.5, 0.5, 0.4)])[0]
    assert torch.allclose(image[:, 16, 16], torch.tensor(COLOURS["blue"]), atol=0.02)
    assert torch.allclose(image[:, 16, 16 + 10], torch.tensor(COLOURS["red"]), atol=0.05)


@pytest.mark.parametrize("pattern, shades", [("solid", 1), ("striped", 2), ("dotted", 2)])
def test_patterns_use_a_dark_shade_of_the_colour(pattern, shades):
    image = render([Scene("square", "yellow", pattern, "blue", 0.5, 0.5, 0.45)], supersample=1)[0]
    inside = image[:, 10:22, 10:22].reshape(3, -1).T
    assert len({tuple(p) for p in inside.round(decimals=3).tolist()}) == shades


def test_held_out_pairs_are_excluded_unless_asked_for():
    rng = random.Random(0)
    scenes = [random_scene(rng) for _ in range(2000)]
    assert not any(s.held_out for s in scenes)
    assert all(s.background != s.colour for s in scenes)
    assert {s.shape for s in scenes} == set(SHAPES) and {s.pattern for s in scenes} == set(PATTERNS)
    only = [random_scene(rng, held_out="only") for _ in range(200)]
    assert {(s.colour, s.shape) for s in only} == set(HELD_OUT)
    star = random_scene(rng, shape="star", colour="purple", pattern="striped")
    assert (star.shape, star.colour, star.pattern) == ("star", "purple", "striped") and star.held_out


def test_every_caption_word_is_one_clip_token():
    from ti_core.models import load_tokenizer

    tokenizer = load_tokenizer()
    words = set(SHAPES) | set(COLOURS) | set(PATTERNS) | {"shape", "pattern", "background", "photo", "with", "on"}
    for word in words:
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word
    rng = random.Random(1)
    scene = Scene("star", "purple", "striped", "yellow", 0.5, 0.5, 0.3)
    assert caption(scene) == "a purple striped star on a yellow background"
    texts = {caption(scene, rng) for _ in range(300)}
    assert len(texts) > len(TEMPLATES)  # the variations are used
    assert all("  " not in t and t == t.strip() for t in texts)
