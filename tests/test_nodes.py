"""The node pack: every node called directly on tiny models, without ComfyUI and with fake ComfyUI modules."""

from __future__ import annotations

import shutil
import sys

import pytest
import torch

from conftest import ROOT, InterruptProcessingException, link_demo_model, load_pack, pack_module
from ti_core.toyworld.model import BUILTIN_NAME

COMFY_MODULES = ("folder_paths", "comfy", "comfy.utils", "comfy.model_management", "server")


@pytest.fixture
def absent(tmp_path, monkeypatch, model_dir):
    """No ComfyUI: the adapter's fallbacks, with the folders under tmp_path."""
    for name in COMFY_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    for env, sub in (("TI_MODELS_DIR", "models"), ("TI_INPUT_DIR", "input"), ("TI_TEMP_DIR", "temp")):
        monkeypatch.setenv(env, str(tmp_path / sub))
    link_demo_model(tmp_path / "models", model_dir("tiny-sd1"))
    return tmp_path


def call(cls, **inputs):
    """Run a node as ComfyUI does, and check that it returns what ComfyUI accepts: a tuple with one value per
    RETURN_TYPES entry, or a dict with such a "result" tuple and/or (output nodes) a "ui" dict."""
    out = getattr(cls(), cls.FUNCTION)(**inputs)
    if isinstance(out, dict):
        assert set(out) <= {"ui", "result"} and ("result" in out or getattr(cls, "OUTPUT_NODE", False)), out.keys()
    values = out.get("result", ()) if isinstance(out, dict) else out
    expected = len(cls.RETURN_TYPES) if not isinstance(out, dict) or "result" in out else 0
    assert isinstance(values, tuple) and len(values) == expected, (cls.__name__, type(values), expected)
    return out


def result(out):
    return out["result"] if isinstance(out, dict) else out


def demo_model(nodes):
    model_nodes = pack_module("nodes.model_nodes")
    return result(call(nodes["TILoadModel"], model_name=model_nodes.DEMO_MODEL, dtype="fp32"))[0]


# ------------------------------------------------------------------------------------------ registry


def test_registry_every_node_is_documented(nodes):
    pack = load_pack()
    # ComfyUI serves every .js under WEB_DIRECTORY, resolved against the pack's folder
    served = {p.name for p in (ROOT / pack.WEB_DIRECTORY).glob("*.js")}
    assert {"training_monitor.js", "embedding_info.js", "node_notes.js"} <= served
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(nodes)
    assert len(nodes) == 10
    for node_id, cls in nodes.items():
        assert node_id.startswith("TI")
        assert cls.CATEGORY == "textual_inversion"
        assert cls.DESCRIPTION.strip()
        assert callable(getattr(cls, cls.FUNCTION))
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, (kind, *opts) in spec.get(section, {}).items():
                assert opts and opts[0].get("tooltip"), f"{node_id}.{name} has no tooltip"
                # ComfyUI's front end adds a seed control to these names anyway; say so, so widget order is plain
                assert name not in ("seed", "noise_seed") or opts[0].get("control_after_generate"), name
        assert len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES)


def test_pack_imports_without_torch_heavy_modules_or_comfyui():
    import subprocess

    code = ("import sys, importlib.util; from pathlib import Path; root = Path('.').resolve();"
            "spec = importlib.util.spec_from_file_location('p', root / '__init__.py', "
            "submodule_search_locations=[str(root)]);"
            "m = importlib.util.module_from_spec(spec); sys.modules['p'] = m; spec.loader.exec_module(m);"
            "print(len(m.NODE_CLASS_MAPPINGS), 'diffusers' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["10", "False", "False"]


# ------------------------------------------------------------------------------------------ adapter


def test_adapter_fallbacks_without_comfyui(absent, monkeypatch):
    comfy = pack_module("nodes.comfy_adapter")
    assert comfy.folder_paths_for("embeddings") == [absent / "models" / "embeddings"]
    assert comfy.input_directory() == absent / "input"
    assert comfy.processing_interrupted() is False
    comfy.throw_if_interrupted()
    progress = comfy.Progress(3)
    progress.update(1)
    assert not progress.should_stop()
    progress.finish()
    assert comfy.prompt_server() is None
    # without ComfyUI, the best device there is: CUDA, then MPS, then the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert comfy.torch_device() == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert comfy.torch_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert comfy.torch_device() == torch.device("cuda")
    assert comfy.make_room(torch.device("cuda")) is False  # no ComfyUI models to move
    comfy.send_event("progress", {"step": 1})  # no-op
    (absent / "models" / "checkpoints" / "sub").mkdir(parents=True)
    (absent / "models" / "checkpoints" / "sub" / "a.safetensors").write_bytes(b"x")
    (absent / "models" / "checkpoints" / "notes.txt").write_text("x")
    assert comfy.list_files("checkpoints", (".safetensors",)) == ["sub/a.safetensors"]


def test_adapter_uses_comfyui_when_present(fake):
    comfy = pack_module("nodes.comfy_adapter")
    assert comfy.folder_paths_for("embeddings") == [fake.base / "models" / "embeddings"]
    assert comfy.input_directory() == fake.base / "input"
    progress = comfy.Progress(4)
    progress.update(2, preview="img")
    assert fake.bars[-1].calls == [(2, 4, ("JPEG", "img", 512))]
    comfy.send_event("progress", {"step": 2})
    assert fake.events == [("textual_inversion.progress", {"step": 2})]
    assert comfy.make_room(torch.device("cpu")) is False and fake.freed == []
    assert comfy.make_room(torch.device("cuda", 0)) is True and fake.freed == [(1e30, "cuda:0")]
    fake.interrupted = True
    assert progress.should_stop()
    with pytest.raises(InterruptProcessingException):
        progress.finish()
    # the hook's own interrupt is kept, not raised into the caller's loop, then re-raised by finish()
    fake.interrupted = True
    progress.update(3)
    assert progress.should_stop()
    with pytest.raises(InterruptProcessingException):
        progress.finish()


# --------------------------------------------------------------------------------- model, prompt, sample


@pytest.mark.slow
def test_load_model_choices_and_files(absent, nodes, single_file, model_dir):
    model_nodes = pack_module("nodes.model_nodes")
    ckpt = absent / "models" / "checkpoints" / "tiny.safetensors"
    ckpt.parent.mkdir(parents=True)
    shutil.copy(single_file("tiny-sd1"), ckpt)
    shutil.copytree(model_dir("tiny-sd2"), absent / "models" / "diffusers" / "tiny2")
    choices = nodes["TILoadModel"].INPUT_TYPES()["required"]["model_name"][0]
    assert choices == [BUILTIN_NAME, model_nodes.DEMO_MODEL, "tiny.safetensors", "[diffusers] tiny2"]
    assert call(nodes["TILoadModel"], model_name="tiny.safetensors", dtype="fp32")[0].family == "sd1"
    model = call(nodes["TILoadModel"], model_name="[diffusers] tiny2", dtype="bf16")[0]
    assert model.family == "sd2" and model.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="not in models/checkpoints"):
        call(nodes["TILoadModel"], model_name="gone.safetensors", dtype="fp32")


@pytest.mark.slow
def test_load_model_built_in_toy_world_model(absent, nodes, monkeypatch):
    toy = pack_module("ti_core.toyworld.model")  # the pack's own copy, which the node reads
    with torch.inference_mode():
        model = call(nodes["TILoadModel"], model_name=BUILTIN_NAME, dtype="fp32")[0]
    assert model.family == "sd1" and model.resolution == 32
    assert not model.text_encoders[0].get_input_embeddings().weight.is_inference()
    monkeypatch.setattr(toy, "MODEL_FILE", absent / "gone.safetensors")
    with pytest.raises(ValueError, match="train_base"):  # says how to rebuild it
        call(nodes["TILoadModel"], model_name=BUILTIN_NAME, dtype="fp32")


@pytest.mark.slow
def test_load_model_weights_are_trainable_under_inference_mode(absent, nodes, monkeypatch):
    asked = []
    monkeypatch.setattr(pack_module("nodes.comfy_adapter"), "make_room", asked.append)
    with torch.inference_mode():
        model = demo_model(nodes)
    weight = model.text_encoders[0].get_input_embeddings().weight
    assert not weight.is_inference()
    assert asked == [model.device]  # ComfyUI was asked to make room where the model went


@pytest.mark.slow
def test_encode_and_sample_with_embeddings(absent, nodes):
    from conftest import random_embedding
    from ti_core.embeddings import save_embedding

    model = demo_model(nodes)
    connected = random_embedding(model, "connected", n=2, seed=1)
    save_embedding(random_embedding(model, "infolder", n=3, seed=2), absent / "models" / "embeddings" / "infolder.pt",
                   format="a1111-pt")
    encode = nodes["TIEncodePrompt"]
    positive = call(encode, model=model, text="a embedding:connected and embedding:infolder", embedding=connected)[0]
    long_negative = call(encode, model=model, text=" ".join(["blurry"] * 80))[0]
    assert positive.conditioning.chunks == 1 and long_negative.conditioning.chunks == 2
    with torch.inference_mode():
        images = call(nodes["TISample"], model=model, positive=positive, negative=long_negative, sampler="euler",
                      steps=2, cfg=5.0, seed=3, width=64, height=48, batch=2)[0]
    assert images.shape == (2, 48, 64, 3) and images.dtype == torch.float32
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    native = call(nodes["TISample"], model=model, positive=positive, negative=long_negative, sampler="euler",
                  steps=1, cfg=5.0, seed=3, width=0, height=0, batch=1)[0]
    assert native.shape == (1, model.resolution, model.resolution, 3)  # 0 = the model's own size
    with pytest.raises(ValueError, match="nowhere"):
        call(encode, model=model, text="embedding:nowhere")


@pytest.mark.slow
def test_sample_progress_and_interrupt(fake, nodes):
    model = demo_model(nodes)
    encode = nodes["TIEncodePrompt"]
    pos, neg = (call(encode, model=model, text=t)[0] for t in ("a cat", ""))
    kwargs = dict(model=model, positive=pos, negative=neg, sampler="ddim", steps=3, cfg=7.0, seed=0, width=32,
                  height=32, batch=1)
    call(nodes["TISample"], **kwargs)
    assert [c[0] for c in fake.bars[-1].calls] == [1, 2, 3]
    fake.interrupt_after = 1
    with pytest.raises(InterruptProcessingException):
        call(nodes["TISample"], **kwargs)
    assert len(fake.bars[-1].calls) == 1  # stopped after the first step


# ------------------------------------------------------------------------------------------ images


def test_load_images_demo_folder_changes_and_errors(absent, nodes):
    load = nodes["TILoadImages"]
    out = call(load, folder="ti-demo-images", preview_size=64)
    images, preview, captions = out["result"]
    assert len(images) == 4 and preview.shape == (4, 64, 64, 3)
    assert all(img.size[0] != img.size[1] for img in images)  # sizes kept: the demo pictures are not square
    assert captions.splitlines() == [""] + [f"on a {b} background" for b in ("blue", "black", "red")]
    assert out["ui"]["text"] == ["4 picture(s), 3 with a caption:\n" + "\n".join(
        f"  purple-striped-star_{i}.png  {w}x{h}"
        for i, (w, h) in enumerate([(44, 32), (32, 40), (48, 32), (32, 44)]))]
    before = load.IS_CHANGED(folder="ti-demo-images", preview_size=64)
    assert before == load.IS_CHANGED(folder="ti-demo-images", preview_size=64)
    (absent / "input" / "ti-demo-images" / "purple-striped-star_0.txt").write_text("changed")
    assert load.IS_CHANGED(folder="ti-demo-images", preview_size=64) != before  # and the edit is kept
    absolute = absent / "input" / "mine"  # an absolute path inside the input folder is fine
    absolute.mkdir()
    (absolute / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        call(load, folder=str(absolute), preview_size=64)
    elsewhere = absent / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(ValueError, match="is outside"):
        call(load, folder=str(elsewhere), preview_size=64)
    with pytest.raises(ValueError, match=r"\.\."):
        call(load, folder="../elsewhere", preview_size=64)


def test_load_images_panel_names_what_was_skipped(absent, nodes, caplog):
    from PIL import Image

    folder = absent / "input" / "mine"
    folder.mkdir(parents=True)
    for i in range(10):
        Image.new("RGB", (40 + i, 30), "red").save(folder / f"{i:02}.png")
    (folder / "00.txt").write_text("a red thing")
    (folder / "notes.doc").write_text("x")
    text = call(nodes["TILoadImages"], folder="mine", preview_size=64)["ui"]["text"]
    assert text[0].splitlines()[:2] == ["10 picture(s), 1 with a caption:", "  00.png  40x30"]
    assert text[0].splitlines()[-1] == "  and 2 more" and len(text[0].splitlines()) == 10
    assert len(text) == 2 and text[1].startswith("skipped notes.doc: not an image file")
    assert "TILoadImages: skipped notes.doc" in caplog.text  # and in the server's log


def test_load_images_draws_the_demo_only_into_an_empty_folder(absent, nodes):
    folder = absent / "input" / "ti-demo-images"
    images = call(nodes["TILoadImages"], folder="ti-demo-images", preview_size=64)["result"][0]
    assert sorted(p.name for p in folder.glob("*.png")) == [f"purple-striped-star_{i}.png" for i in range(4)]
    assert len(images) == 4
    (folder / "mine.png").write_bytes((folder / "purple-striped-star_0.png").read_bytes())
    for path in folder.glob("purple-*"):
        path.unlink()
    images = call(nodes["TILoadImages"], folder="ti-demo-images", preview_size=64)["result"][0]
    assert [p.name for p in folder.iterdir()] == ["mine.png"] and len(images) == 1  # a user's folder is kept


@pytest.mark.parametrize("mode", ["center", "random", "pad", "focus"])
def test_square_crop_modes(absent, nodes, mode):
    image = torch.rand(2, 40, 60, 3)
    out = call(nodes["TISquareCrop"], image=image, size=32, mode=mode, focus_x=0.9, focus_y=0.5, fill="edge",
               seed=1)[0]
    assert out.shape == (2, 32, 32, 3)


def test_square_crop_takes_inference_tensors(absent, nodes):
    with torch.inference_mode():
        image = torch.rand(1, 20, 30, 3)
        out = call(nodes["TISquareCrop"], image=image, size=16, mode="center", focus_x=0.5, focus_y=0.5,
                   fill="blur", seed=0)[0]
    assert out.shape == (1, 16, 16, 3)


# ------------------------------------------------------------------------------------------ embeddings


def test_load_and_save_embedding(absent, nodes, loaded):
    from conftest import random_embedding
    from ti_core.embeddings import load_embedding, save_embedding

    folder = absent / "models" / "embeddings"
    model = loaded("tiny-sd1")
    save_embedding(random_embedding(model, "cat", n=2), folder / "cat.safetensors")
    (folder / "cat.state.safetensors").write_bytes(b"not an embedding")
    choices = nodes["TILoadEmbedding"].INPUT_TYPES()["required"]["embedding_name"][0]
    assert choices == ["cat.safetensors"]
    out = call(nodes["TILoadEmbedding"], embedding_name="cat.safetensors")
    embedding, info = out["result"]
    assert embedding.name == "cat" and '"vectors": 2' in info and out["ui"]["text"] == [info]
    save = nodes["TISaveEmbedding"]
    for fmt, ext in (("safetensors", ".safetensors"), ("a1111-pt", ".pt"), ("diffusers", ".bin")):
        out = call(save, embedding=embedding, name="copy", format=fmt)
        assert out["ui"]["text"] == [f"saved copy{ext}", f"in {folder}"]
        again = load_embedding(folder / f"copy{ext}")
        assert torch.equal(again.vectors["emb_params"], embedding.vectors["emb_params"])
    with pytest.raises(ValueError, match="exists"):
        call(save, embedding=embedding, name="copy", format="safetensors")
    with pytest.raises(ValueError, match=r"\.\."):
        call(save, embedding=embedding, name="../escape", format="safetensors")
    with pytest.raises(ValueError, match="not in models/embeddings"):
        call(nodes["TILoadEmbedding"], embedding_name="gone.pt")


# ------------------------------------------------------------------------------------------ linked model files


def test_linked_checkpoint_embedding_and_picture_folder_load_as_in_comfyui(nodes, fake, single_file, tmp_path):
    """Users link files and folders into ComfyUI's folders; the nodes follow the links, as ComfyUI does."""
    from conftest import disc_images, random_embedding
    from ti_core.embeddings import save_embedding

    outside = tmp_path / "elsewhere"
    for sub in ("models/checkpoints", "models/embeddings", "input"):
        (fake.base / sub).mkdir(parents=True, exist_ok=True)
    (fake.base / "models" / "checkpoints" / "linked.safetensors").symlink_to(single_file("tiny-sd1"))
    model = result(call(nodes["TILoadModel"], model_name="linked.safetensors", dtype="fp32"))[0]
    assert model.family == "sd1" and model.source.endswith("linked.safetensors")
    save_embedding(random_embedding(model, "far"), outside / "embeddings" / "far.safetensors")
    (fake.base / "models" / "embeddings" / "shared").symlink_to(outside / "embeddings", target_is_directory=True)
    embedding = result(call(nodes["TILoadEmbedding"], embedding_name="shared/far.safetensors"))[0]
    assert embedding.name == "far" and embedding.vectors["emb_params"].shape == (2, 32)
    disc_images(outside / "pictures")
    (fake.base / "input" / "pictures").symlink_to(outside / "pictures", target_is_directory=True)
    images = result(call(nodes["TILoadImages"], folder="pictures", preview_size=64))[0]
    assert len(images) == 3


@pytest.mark.parametrize("name", ["../elsewhere/x.safetensors", "/etc/passwd", "sub/../../x.safetensors"])
def test_names_with_dotdot_or_absolute_paths_are_still_refused(nodes, fake, name):
    safe = pack_module("nodes.safe_paths")
    with pytest.raises(safe.PathEscapeError):
        call(nodes["TILoadModel"], model_name=name, dtype="fp32")
    with pytest.raises(safe.PathEscapeError):
        call(nodes["TILoadEmbedding"], embedding_name=name)
    with pytest.raises(safe.PathEscapeError):
        call(nodes["TILoadImages"], folder=name, preview_size=64)


def test_a_retrained_embedding_file_is_loaded_again_not_served_from_the_cache(nodes, fake, loaded):
    from conftest import random_embedding
    from ti_core.embeddings import save_embedding

    path = fake.base / "models" / "embeddings" / "word.safetensors"
    save_embedding(random_embedding(loaded("tiny-sd1"), "word", seed=1), path)
    before = nodes["TILoadEmbedding"].IS_CHANGED("word.safetensors")
    assert before == nodes["TILoadEmbedding"].IS_CHANGED("word.safetensors")  # unchanged: cached
    path.unlink()
    save_embedding(random_embedding(loaded("tiny-sd1"), "word", seed=2), path)
    assert nodes["TILoadEmbedding"].IS_CHANGED("word.safetensors") != before  # ComfyUI runs the node again
