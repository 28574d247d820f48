"""Shared fixtures: tiny random models of every family, written once per test session."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# Property tests draw the same cases on every run, so CI never fails by luck; explore new cases locally
# with HYPOTHESIS_PROFILE=explore.
settings.register_profile("fixed", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fixed"))

TINY = ("tiny-sd1", "tiny-sd2", "tiny-sdxl")


def _tiny_models(root, single_file: bool):
    """arch name -> that tiny arch (seed 0) written under `root`, made on first use."""
    from ti_core.make_model import make_model

    made = {}

    def get(arch: str):
        if arch not in made:
            out = root / (f"{arch}.safetensors" if single_file else arch)
            made[arch] = make_model(arch, out, single_file=single_file, seed=0)
        return made[arch]

    return get


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """arch name -> diffusers folder of that tiny arch (seed 0)."""
    return _tiny_models(tmp_path_factory.mktemp("models"), single_file=False)


@pytest.fixture(scope="session")
def single_file(tmp_path_factory):
    """arch name -> single .safetensors (original key layout) of the same weights as model_dir(arch)."""
    return _tiny_models(tmp_path_factory.mktemp("single"), single_file=True)


@pytest.fixture(scope="session")
def loaded(model_dir):
    """arch name -> SDModel loaded (fp32, CPU) from the tiny folder; shared, so tests must not modify it."""
    from ti_core.models import load_model

    cache = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = load_model(model_dir(arch))
        return cache[arch]

    return get


def random_embedding(model, name: str, n: int = 2, seed: int = 0):
    import torch

    from ti_core.embeddings import Embedding

    g = torch.Generator().manual_seed(seed)
    vectors = {keys[0]: torch.randn(n, width, generator=g) for keys, width in zip(model.embedding_keys, model.embedding_widths)}
    return Embedding(name, vectors)


@pytest.fixture
def fake(tmp_path, monkeypatch, model_dir):
    """Fake ComfyUI modules (folder_paths, progress bar, interrupt, PromptServer) over folders in tmp_path."""
    from test_nodes_support import FakeComfy, link_demo_model

    comfy = FakeComfy(tmp_path).install(monkeypatch)
    link_demo_model(tmp_path / "models", model_dir("tiny-sd1"))
    return comfy


@pytest.fixture
def nodes():
    """The pack's NODE_CLASS_MAPPINGS, imported as ComfyUI imports the pack."""
    from test_nodes_support import load_pack

    return load_pack().NODE_CLASS_MAPPINGS


@pytest.fixture
def node_setup(nodes, fake):
    """(the random tiny demo model, the demo pictures) as TILoadModel and TILoadImages give them."""
    from test_nodes_support import pack_module

    model = nodes["TILoadModel"]().load(pack_module("nodes.model_nodes").DEMO_MODEL, "fp32")[0]
    images = nodes["TILoadImages"]().load("ti-demo-images", 64)["result"][0]
    return model, images
