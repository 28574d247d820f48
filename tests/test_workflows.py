"""Example workflows: UI files match their API twins and the nodes' inputs; the API twins run end to end."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, FakeComfy, load_pack, pack_module, run_api_graph

WORKFLOWS = ROOT / "workflows"
TOY = ("ti_train_embedding", "ti_generate_with_embedding", "ti_train_then_generate")
NATIVE = ("ti_native_train_then_generate", "ti_native_generate_with_embedding")
NAMES = TOY + NATIVE
FILE_LISTS = {"model_name", "embedding_name"}  # combos of files: their choices depend on the machine


def builder():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ti_build_workflows", WORKFLOWS / "build_workflows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_files_are_what_the_builder_writes():
    files = builder().render(load_pack().NODE_CLASS_MAPPINGS)
    assert sorted(p.name for p in files) == sorted([f"{n}.json" for n in NAMES] * 2)
    for path, text in files.items():
        assert path.read_text() == text, f"{path.name} is stale: run python -m workflows.build_workflows"


def test_template_browser_lists_each_workflow_once():
    # ComfyUI's template browser reads the top-level *.json of example_workflows/, example/, examples/, workflow/
    # and workflows/ alike, adding up what it finds (checked in ComfyUI 0.3.64): a second such folder, even a link
    # to this one, would list every workflow twice.
    others = ("example_workflows", "example", "examples", "workflow")
    assert not [name for name in others if (ROOT / name).exists()]
    assert sorted(p.stem for p in WORKFLOWS.glob("*.json")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_each_workflow_has_a_note_a_card_picture_and_no_stored_view(name):
    from PIL import Image

    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    notes = [n for n in ui["nodes"] if n["type"] == "Note"]
    assert len(notes) == 1 and len(notes[0]["widgets_values"][0]) > 80
    assert "ds" not in ui["extra"]  # without a stored offset and zoom, the front end fits the graph in the window
    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    assert "Note" not in {n["class_type"] for n in api.values()}  # the front end never queues a Note
    assert len(api) == len(ui["nodes"]) - 1
    with Image.open(WORKFLOWS / f"{name}.jpg") as card:  # the template browser's card (a 404 shows grey)
        assert card.format == "JPEG" and card.size == (512, 384)
        assert len(set(card.convert("L").getdata())) > 20  # a drawing, not a blank


def test_native_workflows_use_comfyuis_own_loader_and_sampler():
    for name in NATIVE:
        api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
        kinds = [n["class_type"] for n in api.values()]
        assert {"CheckpointLoaderSimple", "CLIPTextEncode", "KSampler", "VAEDecode", "SaveImage"} <= set(kinds)
        assert not {"TILoadModel", "TIEncodePrompt", "TISample"} & set(kinds)
        positive = next(n for n in api.values() if n["class_type"] == "CLIPTextEncode")
        assert "embedding:my-concept" in positive["inputs"]["text"]
        clip_source = api[positive["inputs"]["clip"][0]]["class_type"]
        assert clip_source in ("TITrainEmbeddingNative", "TIApplyEmbedding")  # the link orders encode after training


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_uses_registered_nodes_and_valid_widgets(name):
    mappings = load_pack().NODE_CLASS_MAPPINGS
    build = builder()
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    nodes = {n["id"]: n for n in ui["nodes"]}
    for node in ui["nodes"]:
        assert node["type"] in mappings or node["type"] in build.CORE_NODES, node["type"]
        sockets, widgets, outputs = build.node_signature(node["type"], mappings)
        assert [i["name"] for i in node["inputs"]] == list(sockets)
        assert len(node["widgets_values"]) == len(widgets), node["type"]
        if node["type"] not in mappings:
            continue
        spec = {**mappings[node["type"]].INPUT_TYPES()["required"],
                **mappings[node["type"]].INPUT_TYPES().get("optional", {})}
        for widget, value in zip(widgets, node["widgets_values"]):
            if widget is None:
                assert value in ("fixed", "increment", "decrement", "randomize")
                continue
            kind, options = spec[widget][0], spec[widget][1]
            if isinstance(kind, list):
                assert widget in FILE_LISTS or value in kind, (node["type"], widget, value)
            elif kind in ("INT", "FLOAT"):
                assert isinstance(value, (int, float)) and not isinstance(value, bool)
                assert options.get("min", value) <= value <= options.get("max", value), (widget, value)
            elif kind == "STRING":
                assert isinstance(value, str)
            elif kind == "BOOLEAN":
                assert isinstance(value, bool)
    for link_id, src, src_slot, dst, dst_slot, kind in ui["links"]:
        assert nodes[src]["outputs"][src_slot]["type"] == kind and link_id in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["type"] == kind and nodes[dst]["inputs"][dst_slot]["link"] == link_id
    assert ui["last_link_id"] == len(ui["links"]) and ui["last_node_id"] == max(nodes)


class ImageScaleBy:
    """Stands in for ComfyUI's ImageScaleBy (nearest-exact) in graph runs."""

    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    def upscale(self, image, upscale_method, scale_by):
        factor = int(scale_by)
        return (image.repeat_interleave(factor, 1).repeat_interleave(factor, 2),)


class PreviewImage:
    """Stands in for ComfyUI's PreviewImage in graph runs."""

    shown = []
    FUNCTION = "save_images"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}

    def save_images(self, images):
        PreviewImage.shown.append(tuple(images.shape))
        return {"ui": {"images": []}}


def quick(api: dict) -> dict:
    """The same graph with few steps and a small batch, so the test stays fast."""
    api = json.loads(json.dumps(api))
    for node in api.values():
        inputs = node["inputs"]
        if node["class_type"] in ("TITrainEmbedding", "TITrainEmbeddingNative"):
            inputs.update(steps=3, batch_size=2, save_every=0, preview_every=0)
        if node["class_type"] == "TISample":
            inputs.update(steps=2)
    return api


@pytest.mark.slow
def test_api_workflows_run_through_the_nodes_on_the_built_in_model(tmp_path, monkeypatch):
    import torch

    fake = FakeComfy(tmp_path).install(monkeypatch)
    mappings = {**load_pack().NODE_CLASS_MAPPINGS, "PreviewImage": PreviewImage, "ImageScaleBy": ImageScaleBy}
    apis = {n: json.loads((WORKFLOWS / "api" / f"{n}.json").read_text()) for n in TOY}
    assert {api["1"]["inputs"]["model_name"] for api in apis.values()} == {builder().BUILTIN_NAME}
    PreviewImage.shown.clear()
    with torch.inference_mode():
        trained = run_api_graph(quick(apis["ti_train_embedding"]), mappings)
        generated = run_api_graph(quick(apis["ti_generate_with_embedding"]), mappings)
        both = run_api_graph(quick(apis["ti_train_then_generate"]), mappings)
    embeddings = tmp_path / "models" / "embeddings"
    assert (embeddings / "purple-star.safetensors").is_file() and (embeddings / "my-star.safetensors").is_file()
    assert trained["3"][0].name == "purple-star" and trained["3"][0].vectors["emb_params"].shape == (1, 128)
    # size 0 = the model's own: 32 px for the built-in model
    assert generated["5"][0].shape == (4, 32, 32, 3) and both["6"][0].shape == (4, 32, 32, 3)
    # the toy model's 32 px samples are shown 8x larger (a thin strip otherwise); the training pictures at 128
    assert (4, 256, 256, 3) in PreviewImage.shown and (4, 128, 128, 3) in PreviewImage.shown
    assert any(e == "textual_inversion.progress" for e, _ in fake.events)
    assert pack_module("nodes.model_nodes").model_choices()[0] == builder().BUILTIN_NAME


def native_core_nodes(fake_base, log: list) -> dict:
    """Stand-ins for the ComfyUI core nodes of the native workflows, over test_nodes_native's MODEL/CLIP/VAE.
    CLIPTextEncode asks the CLIP's tokenizer for each `embedding:` word as ComfyUI's tokenizer does."""
    import torch
    from test_nodes_native import checkpoint_objects

    def node(function, inputs, run):
        return type(function, (), {"FUNCTION": "run", "INPUT_TYPES": classmethod(lambda cls: {"required": inputs}),
                                   "run": lambda self, **kw: run(**kw)})

    def load(ckpt_name):
        log.append("CheckpointLoaderSimple")
        return checkpoint_objects(fake_base / "models" / "checkpoints" / ckpt_name)

    def encode(text, clip):
        log.append("CLIPTextEncode")
        words = [w for w in text.split(" embedding:")[1:]]
        return ([[[clip.tokenizer.clip_l._try_get_embedding(w)[0] for w in words], {"text": text}]],)

    def save(images, filename_prefix):
        log.append("SaveImage")
        return {"ui": {"images": []}}

    return {
        "CheckpointLoaderSimple": node("CheckpointLoaderSimple", {}, load),
        "CLIPTextEncode": node("CLIPTextEncode", {}, encode),
        "EmptyLatentImage": node("E", {}, lambda width, height, batch_size: ({"samples": torch.zeros(1, 4, 8, 8)},)),
        "KSampler": node("K", {}, lambda **kw: (kw["latent_image"],)),
        "VAEDecode": node("V", {}, lambda samples, vae: (torch.zeros(1, 64, 64, 3),)),
        "SaveImage": node("S", {}, save),
        "PreviewImage": PreviewImage,
    }


@pytest.mark.slow
def test_native_workflows_train_first_then_encode_the_new_word(tmp_path, monkeypatch):
    """One queue: Load Checkpoint -> trainer -> CLIPTextEncode 'embedding:my-concept' -> KSampler -> Save Image,
    then the saved word in the standard text-to-image graph (ComfyUI's objects and core nodes stood in for)."""
    import sys

    import torch

    from ti_core.make_model import make_model

    FakeComfy(tmp_path).install(monkeypatch)
    monkeypatch.setattr(sys.modules["comfy.model_management"], "load_models_gpu", lambda *a, **k: None,
                        raising=False)
    apis = {n: json.loads((WORKFLOWS / "api" / f"{n}.json").read_text()) for n in NATIVE}
    make_model("tiny-sd1", tmp_path / "models" / "checkpoints" / builder().CHECKPOINT, single_file=True,
               dtype="fp16")
    log = []
    mappings = {**load_pack().NODE_CLASS_MAPPINGS, **native_core_nodes(tmp_path, log)}
    with torch.inference_mode():
        trained = run_api_graph(quick(apis["ti_native_train_then_generate"]), mappings)
        word = trained["3"][0].vectors["emb_params"]
        assert torch.equal(trained["4"][0][0][0][0], word)  # CLIPTextEncode got the trained vectors
        assert log.index("CLIPTextEncode") > 0 and log[-1] == "SaveImage"
        generated = run_api_graph(apis["ti_native_generate_with_embedding"], mappings)
    assert torch.equal(generated["4"][0][0][0][0], word)  # from models/embeddings/my-concept.safetensors
    assert (tmp_path / "models" / "embeddings" / "my-concept.safetensors").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_no_node_covers_another(name):
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    boxes = [(n["type"], n["pos"][0], n["pos"][1] - 30, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in ui["nodes"]]  # 30: the title bar above pos
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[3] <= b[1] or b[3] <= a[1] or a[4] <= b[2] or b[4] <= a[2], (a[0], b[0])
