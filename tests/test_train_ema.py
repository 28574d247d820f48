"""config.ema: the word that is validated, previewed and saved is a moving average of the trained vectors; the
training itself (its draws, its parameters) is unchanged, and a resumed run continues the same average."""

from __future__ import annotations

import pytest
import torch

from conftest import disc_images as _images
from ti_core.errors import SettingError
from ti_core.train import TrainConfig, train


@pytest.mark.slow
def test_the_saved_word_is_the_moving_average_of_the_trained_vectors(tmp_path, loaded):
    model, images = loaded("tiny-sd1"), _images(tmp_path / "img")
    common = dict(name="e", steps=6, learning_rate="5e-2", batch_size=2, crop="center", validate_every=3,
                  validation_samples=2)
    raw = []
    plain = train(model, images, TrainConfig(**common), on_step=lambda info: raw.append(info.vectors["emb_params"]))
    averaged = train(model, images, TrainConfig(ema=0.9, **common))
    assert plain.losses == averaged.losses  # the average never feeds back into training
    init = train(model, images, TrainConfig(**{**common, "steps": 1, "learning_rate": "1e-30"}))
    expected = init.embedding.vectors["emb_params"].clone()  # the init vectors (1e-30 leaves them as they were)
    for step, vectors in enumerate(raw, start=1):
        decay = min(0.9, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * vectors
    got = averaged.embedding.vectors["emb_params"]
    assert torch.allclose(got, expected, atol=1e-6), (got - expected).abs().max()
    assert not torch.allclose(got, raw[-1], atol=1e-4)  # the average, not the last step's vectors
    assert averaged.val_losses != plain.val_losses  # validation measures the averaged word


@pytest.mark.slow
def test_a_resumed_run_continues_the_average(tmp_path, loaded):
    model, images = loaded("tiny-sd1"), _images(tmp_path / "img")
    common = dict(name="e", learning_rate="5e-2", batch_size=2, crop="center", ema=0.9)
    straight = train(model, images, TrainConfig(steps=6, **common))
    first = train(model, images, TrainConfig(steps=3, output=str(tmp_path / "e.safetensors"), **common))
    resumed = train(model, images, TrainConfig(steps=6, resume=first.state_path,
                                               output=str(tmp_path / "e2.safetensors"), **common))
    assert torch.equal(resumed.embedding.vectors["emb_params"], straight.embedding.vectors["emb_params"])


def test_ema_of_one_or_more_is_refused():
    with pytest.raises(SettingError, match="ema 1.0 must be 0 to 0.9999"):
        TrainConfig(name="e", ema=1.0).validate()
