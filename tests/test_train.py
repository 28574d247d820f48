"""The trainer on tiny models: frozen base, resume, stop, NaN rollback, SDXL, saving and settings."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image, ImageDraw

from conftest import disc_images as _images
from conftest import loss_probe
from ti_core.embeddings import load_embedding
from ti_core.errors import SettingError
from ti_core.train import TrainConfig, init_vectors, state_path_for, train


def _weights(model) -> dict:
    modules = {"unet": model.unet, "vae": model.vae, **{f"te{i}": t for i, t in enumerate(model.text_encoders)}}
    return {f"{n}.{k}": v.clone() for n, m in modules.items() for k, v in m.state_dict().items()}


@pytest.mark.slow
def test_only_the_new_vectors_change(tmp_path, loaded):
    model = loaded("tiny-sd1")
    before = _weights(model)
    tokenizer_size = len(model.tokenizers[0])
    result = train(model, _images(tmp_path / "img"),
                   TrainConfig(name="disc", steps=4, init_text="red ball", vectors=2))
    after = _weights(model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(model.tokenizers[0]) == tokenizer_size
    assert all(not p.requires_grad for p in model.unet.parameters())
    start = init_vectors(model, "red ball", 2, torch.Generator().manual_seed(2))[0]
    assert not torch.equal(result.embedding.vectors["emb_params"], start)
    assert result.embedding.vectors["emb_params"].shape == (2, 32)
    assert result.steps_done == 4 and not result.stopped and len(result.losses) == 4


def test_init_text_is_spread_over_the_vectors(loaded):
    model = loaded("tiny-sd1")
    table = model.text_encoders[0].get_input_embeddings().weight
    ids = model.tokenizers[0]("red ball on grass", add_special_tokens=False).input_ids
    four = init_vectors(model, "red ball on grass", 2, torch.Generator())[0]
    assert torch.allclose(four[0], table[ids[:2]].mean(0)) and torch.allclose(four[1], table[ids[2:]].mean(0))
    three = init_vectors(model, "red", 3, torch.Generator())[0]
    assert all(torch.equal(row, table[ids[0]]) for row in three)
    random_init = init_vectors(model, "", 2, torch.Generator().manual_seed(0))[0]
    assert random_init.shape == (2, 32) and float(random_init.std()) == pytest.approx(float(table.std()), rel=0.5)


def test_shuffled_order_draws_every_view_once_per_cycle_and_resumes_where_it_was():
    from ti_core.train_draws import Rng

    rng = Rng.seeded(7)
    drawn = rng.cycled(10, 8) + rng.cycled(10, 8) + rng.cycled(10, 14)  # three cycles of 10, in batches of 8
    assert [sorted(drawn[i:i + 10]) for i in (0, 10, 20)] == [list(range(10))] * 3
    assert drawn[:10] != drawn[10:20]  # each cycle its own order
    resumed = Rng.seeded(7)
    resumed.drawn = 16  # a resumed run knows only how many views it drew
    assert resumed.cycled(10, 14) == drawn[16:]
    assert Rng.seeded(8).cycled(10, 10) != drawn[:10]


@pytest.mark.slow
@pytest.mark.parametrize("order", ["random", "shuffled"])
def test_same_seed_same_vectors_and_resume_is_bit_exact(tmp_path, loaded, order):
    model = loaded("tiny-sd2")  # v-prediction
    images = _images(tmp_path / "img")
    common = dict(name="disc", vectors=2, learning_rate="1e-2:3, 5e-3", batch_size=2, crop="random",
                  latents="resample", order=order)
    full = train(model, images, TrainConfig(steps=6, output=str(tmp_path / "full.safetensors"), **common))
    again = train(model, images, TrainConfig(steps=6, **common))
    assert torch.equal(full.embedding.vectors["emb_params"], again.embedding.vectors["emb_params"])

    out = tmp_path / "part.safetensors"
    seen = []
    first = train(model, images, TrainConfig(steps=6, output=str(out), save_every=3, **common),
                  on_step=seen.append, should_stop=lambda: len(seen) >= 3)
    assert first.stopped and first.steps_done == 3
    assert load_embedding(out).metadata["step"] == "3"
    resumed = train(model, images, TrainConfig(steps=6, output=str(out), resume=str(state_path_for(out)), **common))
    assert resumed.steps_done == 6
    assert torch.equal(resumed.embedding.vectors["emb_params"], full.embedding.vectors["emb_params"])
    assert resumed.losses == full.losses


@pytest.mark.slow
def test_stop_keeps_a_whole_file_that_loads(tmp_path, loaded):
    model = loaded("tiny-sd1")
    out = tmp_path / "stopped.safetensors"
    seen = []
    result = train(model, _images(tmp_path / "img"), TrainConfig(name="disc", steps=50, output=str(out), save_every=2),
                   on_step=seen.append, should_stop=lambda: len(seen) >= 3)
    assert result.stopped and result.steps_done == 3
    saved = load_embedding(out)
    assert torch.equal(saved.vectors["emb_params"], result.embedding.vectors["emb_params"])
    assert saved.metadata["step"] == "3" and saved.metadata["base_family"] == "sd1"
    assert [s.saved for s in seen] == [None, str(out), None]
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.slow
def test_nan_loss_rolls_back_and_lowers_the_learning_rate(tmp_path, loaded, monkeypatch, caplog):
    model = loaded("tiny-sd1")
    original = type(model.unet).forward
    calls = {"n": 0}

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        out = original(self, *args, **kwargs)
        if calls["n"] == 3:  # the third step's prediction is NaN
            return (out[0] * float("nan"),)
        return out

    monkeypatch.setattr(type(model.unet), "forward", flaky)
    seen = []
    config = TrainConfig(name="disc", steps=5, learning_rate="1e-2", validate_every=0)
    result = train(model, _images(tmp_path / "img"), config,
                   on_step=seen.append)
    assert [math.isnan(s.loss) for s in seen] == [False, False, True, False, False]
    assert seen[2].nan_rollbacks == 1 and result.nan_rollbacks == 1
    assert seen[1].lr == pytest.approx(1e-2) and seen[3].lr == pytest.approx(5e-3)
    assert torch.isfinite(result.embedding.vectors["emb_params"]).all()
    said = [r.getMessage() for r in caplog.records if r.name == "ti_core" and "NaN" in r.getMessage()]
    assert len(said) == 1 and "step 3" in said[0] and "rolled back" in said[0] and "0.5" in said[0], said


def test_sdxl_trains_both_vectors_with_micro_conditioning(tmp_path, loaded, monkeypatch):
    model = loaded("tiny-sdxl")
    seen_ids = []
    original = type(model.unet).forward

    def spy(self, *args, **kwargs):
        seen_ids.append(kwargs["added_cond_kwargs"]["time_ids"].clone())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model.unet), "forward", spy)
    images = _images(tmp_path / "img", count=1)
    width, height = Image.open(images / "img0.png").size
    result = train(model, images, TrainConfig(name="disc", steps=3, init_text="red", crop="random", validate_every=0))
    start = init_vectors(model, "red", 1, torch.Generator())
    vectors = result.embedding.vectors
    assert set(vectors) == {"clip_l", "clip_g"} and vectors["clip_g"].shape == (1, 64)
    assert not torch.equal(vectors["clip_l"], start[0]) and not torch.equal(vectors["clip_g"], start[1])
    for ids in seen_ids:  # (original h, w, crop top, left, target h, w): the true size and the crop offsets
        h, w, top, left, th, tw = ids[0].tolist()
        assert (h, w, th, tw) == (height, width, 64, 64)
        assert top % 2 == 0 and left % 2 == 0 and top + 64 <= 64 * height / min(width, height) + 1


@pytest.mark.slow
def test_previews_and_step_info(tmp_path, loaded):
    model = loaded("tiny-sd1")
    seen = []
    train(model, _images(tmp_path / "img"), TrainConfig(name="disc", steps=4, preview_every=2, preview_steps=2),
          on_step=seen.append)
    assert [s.preview is not None for s in seen] == [False, True, False, True]
    assert seen[1].preview.shape == (1, 64, 64, 3)
    info = seen[-1]
    assert info.step == 4 and info.steps == 4 and info.eta == pytest.approx(0.0)
    assert len(info.vector_norms) == 1 and len(info.vector_norms[0]) == 1 and info.elapsed > 0
    assert math.isfinite(info.smoothed_loss)


@pytest.mark.slow
def test_pad_crop_alpha_weight_and_templates_run(tmp_path, loaded):
    model = loaded("tiny-sd1")
    folder = tmp_path / "img"
    folder.mkdir()
    rgba = Image.new("RGBA", (80, 48), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).ellipse([20, 8, 52, 40], fill=(200, 30, 30, 255))
    rgba.save(folder / "cut.png")
    (folder / "cut.txt").write_text("a red disc cut out")
    template = tmp_path / "t.txt"
    template.write_text("a picture of [name], [filewords]\n")
    config = TrainConfig(name="disc", steps=2, crop="pad", use_alpha=True, template=str(template))
    result = train(model, folder, config)
    assert result.steps_done == 2 and all(math.isfinite(x) for x in result.losses)


@pytest.mark.parametrize("changes, message", [
    ({"steps": 0}, "steps 0"),
    ({"vectors": 0}, "vectors 0 must be 1 to 75"),
    ({"vectors": 76}, "vectors 76"),
    ({"resolution": 100}, "resolution 100 must be a positive multiple of 8"),
    ({"learning_rate": "5e-3:100, oops"}, "piece 2"),
    ({"crop": "stretch"}, "crop 'stretch'"),
])
def test_bad_settings_fail_before_any_work(changes, message, tmp_path, loaded):
    with pytest.raises(SettingError, match=message):
        train(loaded("tiny-sd1"), tmp_path / "never-read", TrainConfig(name="x", **changes))


def test_existing_output_is_never_overwritten(tmp_path, loaded):
    out = tmp_path / "taken.safetensors"
    out.write_bytes(b"precious")
    with pytest.raises(SettingError, match="already exists"):
        train(loaded("tiny-sd1"), _images(tmp_path / "img"), TrainConfig(name="x", steps=1, output=str(out)))
    assert out.read_bytes() == b"precious"


@pytest.mark.slow
def test_the_validation_loss_is_a_function_of_the_vectors(tmp_path, loaded):
    model = loaded("tiny-sd1")
    probe = loss_probe(model, _images(tmp_path / "img"), TrainConfig(name="x", crop="center"), samples=4, seed=0)
    v = init_vectors(model, "red", 1, torch.Generator())
    assert probe(v) == probe(v)
    assert probe(v) != probe([v[0] * 3])


@pytest.mark.slow
def test_gradient_checkpointing_gives_the_same_vectors(tmp_path, loaded):
    model = loaded("tiny-sd1")
    images = _images(tmp_path / "img")
    plain = train(model, images, TrainConfig(name="d", steps=3, crop="center"))
    checkpointed = train(model, images, TrainConfig(name="d", steps=3, crop="center", gradient_checkpointing=True))
    assert torch.allclose(plain.embedding.vectors["emb_params"], checkpointed.embedding.vectors["emb_params"],
                          atol=1e-6)
    assert not model.unet.is_gradient_checkpointing  # switched back off for the caller


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_models_train_fp32_vectors(dtype, tmp_path, model_dir):
    from ti_core.models import load_model

    model = load_model(model_dir("tiny-sd1"), dtype=dtype)
    result = train(model, _images(tmp_path / "img"), TrainConfig(name="d", steps=3))
    vectors = result.embedding.vectors["emb_params"]
    assert vectors.dtype == torch.float32 and torch.isfinite(vectors).all()
    assert all(math.isfinite(x) for x in result.losses)


@pytest.mark.parametrize("name, reason", [
    ("../evil", "path separator"), ("a/b", "path separator"), ("my cat", "whitespace"), ("CON", "reserved"),
    ("nul.txt", "reserved"), ("", "empty"), (".hidden", "dot"),
])
def test_unsafe_names_are_refused_before_any_work(name, reason, tmp_path, loaded):
    from ti_core.errors import EmbeddingError

    with pytest.raises(EmbeddingError, match=reason):
        train(loaded("tiny-sd1"), tmp_path / "never-read", TrainConfig(name=name))


def test_read_only_output_folder_is_caught_before_training(tmp_path, loaded, monkeypatch):
    """Root may write anywhere, so the folder's refusal is simulated where the trainer probes it."""
    import pathlib

    def refuse(self, data):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "write_bytes", refuse)
    seen = []
    with pytest.raises(SettingError, match="cannot write to .*ro \\(Permission denied\\)"):
        train(loaded("tiny-sd1"), _images_no_write(tmp_path), TrainConfig(name="x", steps=1,
              output=str(tmp_path / "ro" / "x.safetensors")), on_step=seen.append)
    assert seen == []  # not a single step ran


def _images_no_write(tmp_path):
    from ti_core.data import SourceImage

    image = Image.new("RGB", (80, 64), (200, 30, 30))
    return [SourceImage(path=None, rgb=image, alpha=None)]


class _InfGradient(torch.autograd.Function):
    """Identity forward; an infinite gradient backward (what an fp16 overflow looks like)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


@pytest.mark.slow
def test_fp16_overflow_halves_the_loss_scale_without_rollback(tmp_path, model_dir, monkeypatch):
    from ti_core.models import load_model

    model = load_model(model_dir("tiny-sd1"), dtype="fp16")
    original = type(model.unet).forward
    calls = {"n": 0}

    def overflowing(self, *args, **kwargs):
        calls["n"] += 1
        out = original(self, *args, **kwargs)
        if calls["n"] == 2:  # gradients of the second step overflow (inf), the loss itself stays finite
            return (_InfGradient.apply(out[0]),)
        return out

    monkeypatch.setattr(type(model.unet), "forward", overflowing)
    seen = []
    result = train(model, _images(tmp_path / "img"), TrainConfig(name="d", steps=3, validate_every=0),
                   on_step=seen.append)
    assert math.isnan(seen[1].loss) and result.nan_rollbacks == 0
    assert seen[2].lr == pytest.approx(5e-3)  # the learning rate is not lowered for an overflow
    assert torch.isfinite(result.embedding.vectors["emb_params"]).all()


@pytest.mark.slow
def test_folder_warnings_reach_the_log(tmp_path, loaded, caplog):
    folder = _images(tmp_path / "img", count=1)
    (folder / "notes.doc").write_text("not an image")
    with caplog.at_level("WARNING", logger="ti_core"):
        train(loaded("tiny-sd1"), folder, TrainConfig(name="d", steps=1))
    assert "skipped notes.doc: not an image file" in caplog.text
    assert "only one image" in caplog.text


@pytest.mark.slow
def test_state_path_puts_the_resume_state_elsewhere(tmp_path, loaded):
    out, state = tmp_path / "emb" / "d.safetensors", tmp_path / "states" / "d.state.safetensors"
    result = train(loaded("tiny-sd1"), _images(tmp_path / "img"),
                   TrainConfig(name="d", steps=2, output=str(out), state_path=str(state)))
    assert result.state_path == str(state) and state.is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["d.safetensors"]


@pytest.mark.slow
def test_precision_autocasts_an_fp32_model_and_refuses_to_upcast(tmp_path, loaded, model_dir, monkeypatch):
    from ti_core.models import load_model

    model = loaded("tiny-sd1")
    seen = []
    original = type(model.unet).forward

    def spy(self, *args, **kwargs):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model.unet), "forward", spy)
    images = _images(tmp_path / "img")
    result = train(model, images, TrainConfig(name="d", steps=2, precision="bf16", validate_every=0))
    assert seen == [torch.bfloat16, torch.bfloat16]
    assert result.embedding.vectors["emb_params"].dtype == torch.float32
    assert {p.dtype for p in model.unet.parameters()} == {torch.float32}  # the caller's model is not cast
    seen.clear()
    train(model, images, TrainConfig(name="d", steps=1, precision="fp32", validate_every=0))
    assert seen == [None]
    half = load_model(model_dir("tiny-sd1"), dtype="bf16")
    with pytest.raises(SettingError, match="precision fp32 needs the model loaded in fp32 \\(it is bfloat16\\)"):
        train(half, images, TrainConfig(name="d", steps=1, precision="fp32"))


@pytest.mark.slow
def test_batch_larger_than_the_image_count_says_what_happens(tmp_path, loaded, caplog):
    images = _images(tmp_path / "img", count=2)
    with caplog.at_level("WARNING", logger="ti_core"):
        result = train(loaded("tiny-sd1"), images, TrainConfig(name="d", steps=1, batch_size=5))
        assert "batch_size 5 is larger than the 4 views (2 pictures, each also mirrored)" in caplog.text
        assert result.steps_done == 1
        caplog.clear()
        train(loaded("tiny-sd1"), images, TrainConfig(name="d", steps=1, batch_size=4))  # the 4 views: fine
        train(loaded("tiny-sd1"), images, TrainConfig(name="d", steps=1, batch_size=3, flip=False))
    assert "batch_size 3 is larger than the 2 pictures" in caplog.text and "batch_size 4" not in caplog.text
