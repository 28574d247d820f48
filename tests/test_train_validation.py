"""The validation loss (fixed draws, DVAR-style) and early stopping: reported every K steps, deterministic, free of
side effects on the training draws, resumed with the run, and stopping a run whose loss has stopped improving."""

from __future__ import annotations

import pytest
import torch

from conftest import disc_images as _images
from ti_core.errors import SettingError
from ti_core.train import TrainConfig, train
from ti_core.train_state import load_state


@pytest.mark.slow
def test_validation_is_reported_every_k_steps_and_leaves_training_unchanged(tmp_path, loaded):
    model, images = loaded("tiny-sd1"), _images(tmp_path / "img")
    common = dict(name="v", steps=6, learning_rate="2e-2", batch_size=2, crop="random")
    plain = train(model, images, TrainConfig(**common))
    seen = []
    checked = train(model, images, TrainConfig(validate_every=2, validation_samples=4, **common), on_step=seen.append)
    # the validation draws never touch the training ones: same vectors, same losses
    assert torch.equal(plain.embedding.vectors["emb_params"], checked.embedding.vectors["emb_params"])
    assert plain.losses == checked.losses
    assert [step for step, _ in checked.val_losses] == [0, 2, 4, 6]
    assert [i.step for i in seen if i.val_loss is not None] == [2, 4, 6]
    assert all(i.val_loss is None for i in seen if i.step % 2)
    assert checked.best_step in (0, 2, 4, 6) and not checked.early_stopped
    # the same vectors give the same value: run again and compare the step-0 (init) loss
    again = train(model, images, TrainConfig(validate_every=2, validation_samples=4, **common))
    assert again.val_losses == checked.val_losses


@pytest.mark.slow
def test_validation_loss_falls_as_the_word_is_learned(tmp_path, loaded):
    model, images = loaded("tiny-sd1"), _images(tmp_path / "img")
    result = train(model, images, TrainConfig(name="v", steps=30, learning_rate="5e-2", batch_size=2, crop="center",
                                              validate_every=10, validation_samples=8, init_text="dog"))
    losses = [loss for _, loss in result.val_losses]
    assert losses[-1] < losses[0], losses


@pytest.mark.slow
def test_early_stop_ends_a_run_whose_loss_does_not_improve_and_saves_it(tmp_path, loaded):
    model, images = loaded("tiny-sd1"), _images(tmp_path / "img")
    out = tmp_path / "flat.safetensors"
    # Adam moves each number by about the learning rate: 1e-30 leaves the fp32 vectors, and the loss, as they were
    config = TrainConfig(name="flat", steps=50, learning_rate="1e-30", validate_every=2, validation_samples=2,
                         early_stop=3, save_every=4, output=str(out))
    result = train(model, images, config)
    assert result.early_stopped and not result.stopped
    assert result.steps_done == 6  # validations at 0, 2, 4, 6: three in a row without a better loss
    assert out.is_file() and load_state(result.state_path).step == 6
    assert len({loss for _, loss in result.val_losses}) == 1


@pytest.mark.slow
def test_plateau_step_finds_where_the_trainer_stops(tmp_path, loaded):
    """The benches judge 'where early stop would end the run' on full-length runs with `plateau_step`: it must be
    the step the trainer itself stops at, counting the step-0 validation as the trainer does."""
    from ti_core.train_callbacks import plateau_step

    model, images = loaded("tiny-sd1"), _images(tmp_path / "img")
    common = dict(name="v", steps=40, learning_rate="5e-2", batch_size=2, crop="center", validate_every=4,
                  validation_samples=4, early_stop_fraction=0.9)
    stopped = train(model, images, TrainConfig(early_stop=2, **common))
    full = train(model, images, TrainConfig(**common))
    assert stopped.early_stopped and stopped.steps_done < 40
    assert plateau_step(full.val_losses, 2, 0.9) == stopped.steps_done
    assert full.val_losses[:len(stopped.val_losses)] == stopped.val_losses


@pytest.mark.slow
def test_resume_continues_the_validation_history(tmp_path, loaded):
    model, images = loaded("tiny-sd1"), _images(tmp_path / "img")
    out = tmp_path / "r.safetensors"
    common = dict(name="r", steps=4, learning_rate="1e-2", validate_every=2, validation_samples=2, output=str(out))
    seen = []
    first = train(model, images, TrainConfig(save_every=2, **common), on_step=seen.append,
                  should_stop=lambda: len(seen) >= 2)
    assert [s for s, _ in first.val_losses] == [0, 2]
    resumed = train(model, images, TrainConfig(resume=first.state_path, **common))
    assert [s for s, _ in resumed.val_losses] == [0, 2, 4] and resumed.val_losses[:2] == first.val_losses


@pytest.mark.parametrize("changes, message", [
    (dict(early_stop=3, validate_every=0), "early_stop 3 needs validate_every"),
    (dict(validate_every=-1), "validate_every -1 must be 0"),
    (dict(validate_every=5, validation_samples=0), "validation_samples 0 must be at least 1"),
    (dict(validate_every=5, early_stop=2, early_stop_fraction=1.5), "early_stop_fraction 1.5"),
])
def test_bad_validation_settings_fail_before_any_work(changes, message):
    with pytest.raises(SettingError, match=message):
        TrainConfig(name="x", **changes).validate()


def test_early_stop_compares_progress_with_the_fall_so_far_not_with_the_loss_level():
    """A loss that fell from 1.0 to 0.5 and then gains 1% of that fall per validation (3% over 3) has stopped
    learning at a 5% threshold; 10% per validation has not. Adding a constant to every loss (the irreducible part,
    which depends on the pictures and the weighting) changes nothing, where a threshold relative to the loss did."""
    from ti_core.train_callbacks import plateaued

    slow = [1.0, 0.5, 0.495, 0.49, 0.485]
    fast = [1.0, 0.5, 0.45, 0.40, 0.35]
    for offset in (0.0, 10.0, 1000.0):
        assert plateaued([x + offset for x in slow], patience=3, fraction=0.05)
        assert not plateaued([x + offset for x in fast], patience=3, fraction=0.05)
    assert not plateaued(slow, patience=4, fraction=0.05)  # not enough validations after the first to judge
    assert plateaued([1.0, 1.0, 1.0], patience=2, fraction=0.05)  # nothing learned and nothing learning
    assert not plateaued([1.0, 0.5, 0.49, 0.3], patience=2, fraction=0.05)  # a late fall counts
