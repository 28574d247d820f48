"""Any concept of the toy world can be named, drawn and judged: parsing, backgrounds that never hide the object,
and style pictures that share only their pattern."""

from __future__ import annotations

import pytest
from PIL import Image

from ti_core.toyworld import render
from ti_core.toyworld.concept import (
    Concept,
    concept_images,
    draw_style,
    edit_backgrounds,
    style_scenes,
    training_backgrounds,
)
from ti_core.toyworld.scoring import concept_prompts, style_prompts


def test_parse_takes_the_words_in_any_order():
    assert Concept.parse("green dotted heart") == Concept("heart", "green", "dotted")
    assert Concept.parse("Heart, GREEN dotted") == Concept("heart", "green", "dotted")
    assert Concept.parse("green dotted heart").held_out and not Concept.parse("red solid heart").held_out


@pytest.mark.parametrize("text, named", [("green heart", "one pattern"), ("green dotted hearts", "hearts"),
                                         ("green red dotted heart", "one colour")])
def test_parse_names_what_is_wrong(text, named):
    with pytest.raises(ValueError, match=named.split()[-1]):
        Concept.parse(text)


@pytest.mark.parametrize("colour", render.COLOUR_NAMES)
def test_backgrounds_never_hide_the_object_and_edits_are_new(colour):
    train, edit = training_backgrounds(colour), edit_backgrounds(colour)
    assert colour not in train and colour not in edit
    assert len(edit) == 3 and not set(edit) & set(train)


@pytest.mark.parametrize("count", [1, 3, 5, 8])
def test_any_picture_count_draws_that_many_non_square_pictures(count):
    pictures = concept_images(Concept.parse("green dotted heart"), count=count, seed=3)
    assert len(pictures) == count
    assert all(image.shape[1] != image.shape[2] and background != "green" for image, background in pictures)


def test_editability_prompts_ask_for_backgrounds_of_another_colour():
    _, edits = concept_prompts("embedding:w", Concept.parse("green dotted heart"), 6)
    assert {w["background"] for _, w in edits} == {"yellow", "orange", "purple"}
    assert all(p == f"a embedding:w on a {w['background']} background" for p, w in edits)


def test_style_pictures_share_only_the_pattern(tmp_path):
    folder, scenes = draw_style(tmp_path, "dotted", count=5, seed=1)
    assert scenes == style_scenes("dotted", 5, 1) and len({(c, s) for c, s, _ in scenes}) == 5
    assert all((c, s) not in render.HELD_OUT and b != c for c, s, b in scenes)
    captions = sorted(p.read_text().strip() for p in folder.glob("*.txt"))
    assert captions == sorted(f"{c} {s}, {b} background" for c, s, b in scenes)
    assert all(Image.open(p).width != Image.open(p).height for p in folder.glob("*.png"))
    recon, edits = style_prompts("embedding:w", "dotted", scenes, 10, seed=0)
    assert all(w["pattern"] == "dotted" for _, w in recon + edits)
    assert not {(w["colour"], w["shape"]) for _, w in edits} & {(c, s) for c, s, _ in scenes}
