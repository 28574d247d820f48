"""Example workflows: UI files match their API twins and the nodes' inputs; the API twins run end to end."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, FakeComfy, load_pack, pack_module, run_api_graph

WORKFLOWS = ROOT / "workflows"
NAMES = ("ti_train_embedding", "ti_generate_with_embedding", "ti_train_then_generate")
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
        if node["class_type"] == "TITrainEmbedding":
            inputs.update(steps=3, batch_size=2, save_every=0, preview_every=0)
        if node["class_type"] == "TISample":
            inputs.update(steps=2)
    return api


@pytest.mark.slow
def test_api_workflows_run_through_the_nodes_on_the_built_in_model(tmp_path, monkeypatch):
    import torch

    fake = FakeComfy(tmp_path).install(monkeypatch)
    mappings = {**load_pack().NODE_CLASS_MAPPINGS, "PreviewImage": PreviewImage}
    apis = {n: json.loads((WORKFLOWS / "api" / f"{n}.json").read_text()) for n in NAMES}
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
    assert (4, 32, 32, 3) in PreviewImage.shown and (4, 128, 128, 3) in PreviewImage.shown
    assert any(e == "textual_inversion.progress" for e, _ in fake.events)
    assert pack_module("nodes.model_nodes").model_choices()[0] == builder().BUILTIN_NAME
