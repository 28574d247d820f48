"""Generation: every sampler runs, the same seed gives the same images, bad sizes are refused."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY, random_embedding
from ti_core.errors import SettingError
from ti_core.prompt import encode_pair
from ti_core.sample import SAMPLERS, sample, to_pil


@pytest.mark.slow
@pytest.mark.parametrize("arch", TINY)
def test_same_seed_same_images_other_seed_other_images(arch, loaded):
    model = loaded(arch)
    pos, neg = encode_pair(model, "a photo of embedding:x", "blurry", [random_embedding(model, "x")])
    a = sample(model, pos, neg, steps=3, seed=7, batch=2)
    b = sample(model, pos, neg, steps=3, seed=7, batch=2)
    c = sample(model, pos, neg, steps=3, seed=8, batch=2)
    assert a.shape == (2, 64, 64, 3) and a.dtype == torch.float32
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # each image of a batch has its own noise


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_runs_and_is_reproducible(sampler, loaded):
    model = loaded("tiny-sd2")  # v-prediction exercises the scheduler config path
    pos, neg = encode_pair(model, "a red cube", "")
    a = sample(model, pos, neg, sampler=sampler, steps=3, seed=1, width=48, height=32)
    assert a.shape == (1, 32, 48, 3)
    assert torch.equal(a, sample(model, pos, neg, sampler=sampler, steps=3, seed=1, width=48, height=32))


def test_conditioning_changes_the_image(loaded):
    model = loaded("tiny-sd1")
    x, y = random_embedding(model, "x", seed=1), random_embedding(model, "y", seed=2)
    images = [sample(model, *encode_pair(model, f"embedding:{n}", "", [x, y]), steps=3, seed=0) for n in "xy"]
    assert (images[0] - images[1]).abs().max() > 1e-3


def test_callbacks_report_steps_and_can_stop(loaded):
    model = loaded("tiny-sd1")
    pos, neg = encode_pair(model, "a", "")
    seen = []
    sample(model, pos, neg, steps=5, on_step=lambda i, n: seen.append((i, n)), should_stop=lambda: len(seen) >= 2)
    assert seen == [(1, 5), (2, 5)]


@pytest.mark.parametrize("kwargs, message", [
    ({"width": 60}, "width 60 must be a positive multiple of 8"),
    ({"height": 0}, "height 0"),
    ({"sampler": "dpmpp_9m"}, "sampler 'dpmpp_9m' is not one of"),
    ({"steps": 0}, "steps 0"),
    ({"batch": 0}, "batch 0"),
])
def test_bad_settings_are_refused(kwargs, message, loaded):
    model = loaded("tiny-sd1")
    pos, neg = encode_pair(model, "a", "")
    with pytest.raises(SettingError, match=message):
        sample(model, pos, neg, **kwargs)


def test_to_pil_round_trips_8_bit_values():
    images = torch.arange(0, 256, dtype=torch.float32).reshape(1, 16, 16, 1).expand(1, 16, 16, 3) / 255
    pil = to_pil(images)[0]
    assert pil.size == (16, 16) and pil.mode == "RGB"
    assert torch.equal(torch.tensor(list(pil.getdata()))[:, 0], torch.arange(256))
