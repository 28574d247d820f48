"""Picture checks (train(..., image_encoder=...)): at step 0 and every validation the word's pictures are drawn and
scored against the training pictures; the best-scored word is the one saved, early stop reads the likeness, a
resumed run continues the same record, and the training itself is unchanged."""

from __future__ import annotations

import pytest
import torch

from conftest import disc_images as _images
from ti_core.embeddings import load_embedding
from ti_core.errors import SettingError
from ti_core.picture_check import likeness, replaces, square_pictures
from ti_core.toyworld.trial import kept_step
from ti_core.train import TrainConfig, train
from ti_core.train_callbacks import finished, plateau_step


def _colours(pictures: torch.Tensor) -> torch.Tensor:
    """A tiny image encoder: the mean and spread of each colour channel."""
    return torch.cat([pictures.mean((2, 3)), pictures.std((2, 3))], 1)


COMMON = dict(name="p", steps=6, learning_rate="5e-2", batch_size=2, crop="center", validate_every=2,
              validation_samples=2, picture_samples=2, picture_steps=2)


@pytest.mark.slow
def test_the_saved_word_is_the_best_scored_one(tmp_path, loaded):
    model, images = loaded("tiny-sd1"), _images(tmp_path / "img")
    seen = {}
    out = tmp_path / "p.safetensors"
    result = train(model, images, TrainConfig(output=str(out), **COMMON), image_encoder=_colours,
                   on_step=lambda info: seen.update({info.step: (info.vectors["emb_params"], info.picture_score)}))
    plain = train(model, images, TrainConfig(**COMMON))
    assert result.losses == plain.losses and result.val_losses == plain.val_losses  # checks never touch training
    assert [s for s, _ in result.picture_scores] == [s for s, _ in result.val_losses] == [0, 2, 4, 6]
    assert all(seen[s][1] == score for s, score in result.picture_scores if s)  # reported at its step
    scores = dict(result.picture_scores)
    best = max(scores.values())
    assert result.kept_step == min(s for s, v in scores.items() if v == best)
    assert result.kept_steps == [(s, kept_step(result.picture_scores, s)) for s in scores]  # check by check
    if result.kept_step:  # the saved file holds the kept step's vectors, not the last step's
        assert torch.equal(result.embedding.vectors["emb_params"], seen[result.kept_step][0])
    saved = load_embedding(out)
    assert torch.equal(saved.vectors["emb_params"], result.embedding.vectors["emb_params"])
    assert saved.metadata["step"] == str(result.kept_step)
    assert len(set(scores.values())) > 1  # the word's pictures changed as it trained


@pytest.mark.slow
@pytest.mark.parametrize("margin", [0.0, 1.0])
def test_a_resumed_run_keeps_the_same_record(tmp_path, loaded, margin):
    model, images = loaded("tiny-sd1"), _images(tmp_path / "img")
    common = {**COMMON, "picture_keep_margin": margin}
    straight = train(model, images, TrainConfig(**common), image_encoder=_colours)
    first = train(model, images, TrainConfig(**{**common, "steps": 4}, output=str(tmp_path / "a.safetensors")),
                  image_encoder=_colours)
    resumed = train(model, images, TrainConfig(**common, resume=first.state_path,
                                               output=str(tmp_path / "b.safetensors")), image_encoder=_colours)
    assert resumed.picture_scores == straight.picture_scores
    assert resumed.kept_step == straight.kept_step and resumed.kept_steps == straight.kept_steps
    assert torch.equal(resumed.embedding.vectors["emb_params"], straight.embedding.vectors["emb_params"])


def test_with_picture_checks_early_stop_waits_for_the_loss_and_the_likeness():
    flat_loss = [1.0, 0.5, 0.5, 0.5, 0.5]  # flat after the first validation: the loss alone would stop at the last
    falling = [1.0, 0.8, 0.6, 0.4, 0.2]
    rising = [0.2, 0.4, 0.5, 0.6, 0.7]
    flat = [0.2, 0.8, 0.8, 0.79, 0.8]
    assert finished(flat_loss, [], 3, 0.1)
    assert not finished(flat_loss, rising, 3, 0.1)  # the pictures still get closer
    assert not finished(falling, flat, 3, 0.1)  # the loss still falls
    assert finished(flat_loss, flat, 3, 0.1)
    steps = list(range(0, 125, 25))
    assert plateau_step(list(zip(steps, flat_loss)), 3, 0.1) == 100
    assert plateau_step(list(zip(steps, flat_loss)), 3, 0.1, list(zip(steps, rising))) is None
    assert plateau_step(list(zip(steps, flat_loss)), 3, 0.1, list(zip(steps, flat))) == 100


def test_likeness_is_the_mean_cosine_to_the_training_pictures():
    reference = torch.nn.functional.normalize(torch.tensor([1.0, 1.0]), dim=0)
    same, across = torch.nn.functional.normalize(torch.tensor([[1.0, 1.0], [1.0, -1.0]]), dim=1)
    assert likeness(same[None], reference) == pytest.approx(1.0)
    assert likeness(torch.stack([same, across]), reference) == pytest.approx(0.5)


def test_a_later_word_replaces_the_kept_one_only_when_clearly_better():
    kept = torch.tensor([0.90, 0.92, 0.94, 0.96])
    noisy = kept + torch.tensor([0.03, -0.02, 0.02, -0.01])  # higher on average (+0.005), not picture by picture
    steady = kept + 0.005  # the same rise in every picture
    assert replaces(noisy, kept, 0.0) and replaces(steady, kept, 0.0)  # margin 0: the higher mean wins
    assert not replaces(noisy, kept, 1.0)  # 0.005 against a standard error of 0.012
    assert replaces(steady, kept, 1.0) and replaces(steady, kept, 100.0)  # no spread: any rise is clear
    assert not replaces(kept, kept, 0.0) and not replaces(kept - 0.01, kept, 0.0)
    scores = [(0, kept.mean()), (25, noisy.mean()), (50, (noisy + 0.01).mean())]
    cosines = {0: kept, 25: noisy, 50: noisy + 0.01}
    assert kept_step(scores, None) == 50 and kept_step(scores, 25) == 25  # the best-scored up to there
    assert kept_step(scores, 25, cosines, 1.0) == 0  # step 25 is not clearly better than step 0
    assert kept_step(scores, None, cosines, 1.0) == 50  # step 50 is: +0.015 against 0.012
    assert kept_step(scores, None, cosines, 0.0) == kept_step(scores, None)


def test_training_pictures_are_cropped_to_their_centre_square_never_stretched(tmp_path):
    from PIL import Image

    from ti_core.data import SourceImage

    wide = Image.new("RGB", (60, 20), (255, 0, 0))
    wide.paste((0, 0, 255), (20, 0, 40, 20))  # the centre square is blue, the sides red
    pictures = square_pictures([SourceImage(path=None, rgb=wide, alpha=None)], 8)
    assert pictures.shape == (1, 3, 8, 8)
    assert torch.allclose(pictures[0, :, 4, 4], torch.tensor([0.0, 0.0, 1.0]), atol=0.02)


def test_picture_checks_need_validations(tmp_path, loaded):
    model, images = loaded("tiny-sd1"), _images(tmp_path / "img")
    with pytest.raises(SettingError, match="validate_every"):
        train(model, images, TrainConfig(**{**COMMON, "validate_every": 0}), image_encoder=_colours)


def _tiny_clip_vision(folder):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8, projection_dim=16)
    CLIPVisionModelWithProjection(config).save_pretrained(folder)
    return folder


def test_a_clip_vision_folder_is_an_image_encoder(tmp_path):
    from ti_core.image_encoders import load_image_encoder

    encoder = load_image_encoder(str(_tiny_clip_vision(tmp_path / "clip")))
    pictures = torch.rand(2, 3, 40, 48)
    features = encoder(pictures)
    assert features.shape == (2, 16)
    assert torch.equal(encoder(pictures), features)  # eval mode: the same pictures, the same features
    assert not torch.allclose(features[0], features[1])


def test_a_wrong_image_encoder_is_named(tmp_path):
    from ti_core.image_encoders import load_image_encoder

    with pytest.raises(SettingError, match="neither 'toyworld' nor a folder with a config.json"):
        load_image_encoder(str(tmp_path / "nothing"))


@pytest.mark.slow
def test_the_command_line_checks_pictures_with_an_image_encoder(tmp_path, model_dir, capsys):
    from ti_core.cli import main

    out = tmp_path / "disc.safetensors"
    code = main(["train", "--model", str(model_dir("tiny-sd1")), "--images", str(_images(tmp_path / "img")),
                 "--name", "disc", "--out", str(out), "--steps", "4", "--validate-every", "2", "--batch", "2",
                 "--picture-samples", "2", "--picture-steps", "2", "--image-encoder", str(_tiny_clip_vision(
                     tmp_path / "clip"))])
    assert code == 0
    text = capsys.readouterr().out
    assert "whose pictures looked most like the training ones" in text
    assert load_embedding(out).metadata["step"] in ("0", "2", "4")
