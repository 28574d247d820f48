"""TITrainEmbedding: progress, events, previews, never overwriting, resume, and Cancel leaving a whole file."""

from __future__ import annotations

import sys

import pytest
import torch

from conftest import InterruptProcessingException, pack_module


@pytest.fixture
def setup(node_setup):
    return node_setup


def settings(**changes):
    base = dict(name="disc", init_text="red ball", vectors=2, steps=4, learning_rate="1e-2", batch_size=1,
                grad_accum=1, template="object", crop="random", resolution=32, save_every=2, preview_every=0,
                train_seed=0, resume=False)
    return {**base, **changes}


def train(nodes, model, images, **changes):
    return nodes["TITrainEmbedding"]().train(model, images=images, **settings(**changes), unique_id="7")


def test_train_asks_comfyui_for_room_on_the_models_device_before_the_first_step(nodes, fake, setup, monkeypatch):
    model, images = setup
    asked = []
    monkeypatch.setattr(pack_module("nodes.comfy_adapter"), "make_room",
                        lambda device: asked.append((device, len(fake.events))))
    train(nodes, model, images, steps=1)
    assert asked == [(model.device, 0)]  # before any progress event


@pytest.mark.slow
def test_train_reports_progress_events_and_saves(nodes, fake, setup):
    from ti_core.embeddings import load_embedding

    model, images = setup
    with torch.inference_mode():  # as ComfyUI runs every node
        out = train(nodes, model, images, preview_every=2)
    embedding, chart = out["result"]
    path = fake.base / "models" / "embeddings" / "disc.safetensors"
    assert torch.equal(load_embedding(path).vectors["emb_params"], embedding.vectors["emb_params"])
    assert embedding.vectors["emb_params"].shape == (2, 32)
    assert chart.shape == (1, 256, 512, 3)
    # the chart goes to the browser as data (the panel draws it), never as a picture shown on the node
    assert "images" not in out["ui"]
    series = out["ui"]["losses"][0]
    assert len(series["loss"]) == len(series["smoothed"]) == 4 and all(v > 0 for v in series["loss"])
    calls = fake.bars[-1].calls
    assert [c[0] for c in calls] == [1, 2, 3, 4] and fake.bars[-1].total == 4
    # previews go to the node's panel as events (a fixed box), never onto the node through the progress bar
    assert all(c[2] is None for c in calls)
    previews = [d for e, d in fake.events if e == "textual_inversion.preview"]
    assert [d["step"] for d in previews] == [2, 4] and all(d["node"] == "7" for d in previews)
    assert previews[-1]["image"].startswith("data:image/png;base64,")
    assert out["ui"]["preview"] == [previews[-1]["image"]]  # the panel shows it again after a reload
    progress = [d for e, d in fake.events if e == "textual_inversion.progress"]
    assert [d["step"] for d in progress] == [1, 2, 3, 4]
    assert all(d["node"] == "7" and d["loss"] > 0 and "smoothed_loss" in d and d["lr"] == 1e-2 for d in progress)
    assert {e for e, _ in fake.events} == {"textual_inversion.progress", "textual_inversion.preview",
                                           "textual_inversion.done"}
    assert fake.events[-1][0] == "textual_inversion.done"
    status = pack_module("nodes.status").snapshot()["7"]
    assert status["state"] == "finished" and status["step"] == 4


@pytest.mark.slow
def test_existing_file_is_never_overwritten_and_resume_continues(nodes, fake, setup):
    model, images = setup
    train(nodes, model, images, steps=2)
    path = fake.base / "models" / "embeddings" / "disc.safetensors"
    before = path.read_bytes()
    with pytest.raises(ValueError, match="already exists"):
        train(nodes, model, images, steps=4)
    assert path.read_bytes() == before
    out = train(nodes, model, images, steps=4, resume=True)
    assert [d["step"] for e, d in fake.events if e == "textual_inversion.progress"][-2:] == [3, 4]
    assert path.read_bytes() != before and out["result"][0].metadata["step"] == "4"
    assert out["ui"]["text"][0].startswith("disc: finished at step 4 of 4 (resumed at step 2)")
    assert out["ui"]["outcome"][0]["first_step"] == 2 and out["ui"]["outcome"][0]["step"] == 4


def test_cancel_during_training_keeps_a_whole_loadable_file(nodes, fake, setup):
    from ti_core.embeddings import load_embedding

    model, images = setup
    fake.interrupt_after = 3  # the user presses Cancel during step 3
    with pytest.raises(InterruptProcessingException):
        train(nodes, model, images, steps=50, save_every=2)
    path = fake.base / "models" / "embeddings" / "disc.safetensors"
    embedding = load_embedding(path)
    assert embedding.metadata["step"] == "3"
    assert [d["step"] for e, d in fake.events if e == "textual_inversion.progress"] == [1, 2, 3]
    assert pack_module("nodes.status").snapshot()["7"]["state"] == "cancelled"
    assert not list(path.parent.glob("*.tmp*"))
    # the resume state stays out of models/embeddings, where ComfyUI would list it as an embedding
    assert (fake.base / "models" / "textual_inversion" / "states" / "disc.state.safetensors").is_file()
    assert not list(path.parent.glob("*.state.safetensors"))


def test_train_without_comfyui(nodes, setup, monkeypatch, tmp_path):
    for name in ("folder_paths", "comfy", "comfy.utils", "comfy.model_management", "server"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setenv("TI_MODELS_DIR", str(tmp_path / "alone"))
    model, images = setup
    out = train(nodes, model, images, steps=2, save_every=0)
    assert (tmp_path / "alone" / "embeddings" / "disc.safetensors").is_file()
    assert out["result"][0].name == "disc"


def test_train_from_an_image_batch_or_nothing(nodes, fake, setup):
    model, images = setup
    with torch.inference_mode():  # a batch from another node is an inference tensor
        batch = torch.rand(2, 40, 40, 3)
        out = nodes["TITrainEmbedding"]().train(model, image_batch=batch, **settings(name="batch", steps=2))
    assert out["result"][0].name == "batch"
    with pytest.raises(ValueError, match="no training pictures"):
        nodes["TITrainEmbedding"]().train(model, **settings(name="none", steps=2))


def test_precision_input_reaches_the_trainer(nodes, fake, setup):
    model, images = setup
    out = train(nodes, model, images, steps=2, precision="bf16")
    assert '"precision": "bf16"' in out["result"][0].metadata["training"]
    assert out["result"][0].vectors["emb_params"].dtype == torch.float32


def test_validation_loss_reaches_the_browser_and_early_stop_ends_the_run(nodes, fake, setup):
    model, images = setup
    with torch.inference_mode():
        # a learning rate of 1e-30 leaves the vectors as they are: the validation loss never improves
        out = train(nodes, model, images, steps=40, learning_rate="1e-30", validate_every=2, early_stop=2)
    progress = [d for e, d in fake.events if e == "textual_inversion.progress"]
    assert [d["step"] for d in progress] == [1, 2, 3, 4]  # validations at 0, 2, 4: two without progress
    assert [d["val_loss"] is not None for d in progress] == [False, True, False, True]
    assert progress[1]["val_loss"] == progress[3]["val_loss"] > 0
    done = fake.events[-1][1]
    assert done["outcome"] == "early_stop" and done["step"] == 4 and done["best_step"] == 0
    assert pack_module("nodes.status").snapshot()["7"]["state"] == "early_stop"
    assert out["ui"]["outcome"][0] == {k: v for k, v in done.items() if k != "node"}  # the same data, both ways
    assert "early stop" in out["ui"]["text"][0] and "lowest validation loss at step 0" in out["ui"]["text"][0]
    chart = out["result"][1]
    assert chart.shape == (1, 256, 512, 3)
    red = (chart[..., 0] > 0.7) & (chart[..., 1] < 0.3) & (chart[..., 2] < 0.3)
    assert red.sum() > 20  # the validation points are drawn


def test_a_template_file_is_read_from_the_input_folder_by_name(nodes, fake, setup):
    model, images = setup
    folder = pack_module("nodes.comfy_adapter").input_directory()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mine.txt").write_text("a picture of a [name] [filewords]\n")
    out = train(nodes, model, images, steps=1, template="mine.txt")
    assert out["result"][0].metadata["step"] == "1"
    import json
    assert json.loads(out["result"][0].metadata["training"])["template"] == str((folder / "mine.txt").resolve())


class FakeClipVision:
    """ComfyUI's CLIP_VISION as the trainer meets it: encode_image(NHWC pictures) -> an output with image_embeds
    (made under inference mode, as ComfyUI's are)."""

    def __init__(self):
        self.calls = []

    def encode_image(self, image, crop=True):
        self.calls.append(tuple(image.shape))
        with torch.inference_mode():
            return {"image_embeds": torch.cat([image.mean((1, 2)), image.std((1, 2))], 1)}


def test_a_clip_vision_input_turns_on_picture_checks_and_the_best_word_is_saved(nodes, fake, setup):
    from ti_core.embeddings import load_embedding

    model, images = setup
    vision = FakeClipVision()
    with torch.inference_mode():
        out = nodes["TITrainEmbedding"]().train(model, images=images, clip_vision=vision, unique_id="7",
                                                **settings(steps=4, validate_every=2, save_every=0))
    # the training pictures once, then the word's pictures at steps 0, 2 and 4 (8 each, NHWC at 32 px)
    assert vision.calls[0][0] == len(images) and vision.calls[1:] == [(8, 32, 32, 3)] * 3
    done = fake.events[-1][1]
    assert done["kept_step"] in (0, 2, 4)
    saved = load_embedding(fake.base / "models" / "embeddings" / "disc.safetensors")
    assert saved.metadata["step"] == str(done["kept_step"])
    assert torch.equal(saved.vectors["emb_params"], out["result"][0].vectors["emb_params"])
    assert "whose pictures looked most like the training ones" in out["ui"]["text"][0]


def test_something_else_on_the_clip_vision_input_is_named(nodes, fake, setup):
    model, images = setup
    with pytest.raises(ValueError, match="is a str, not ComfyUI's CLIP_VISION"):
        nodes["TITrainEmbedding"]().train(model, images=images, clip_vision="nope", unique_id="7", **settings())
