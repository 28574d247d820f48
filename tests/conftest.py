"""Shared fixtures and helpers: tiny random models of every family (written once per test session), training
pictures, and the node pack loaded the way ComfyUI loads it, over fake ComfyUI modules.

ComfyUI imports `custom_nodes/<pack>/__init__.py` as a package named after its path, so the nodes reach ti_core
with relative imports (`..ti_core`). `load_pack` does the same under the name `ti_pack`.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
import types
from pathlib import Path

import pytest
from hypothesis import settings
from PIL import Image, ImageDraw

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
    vectors = {keys[0]: torch.randn(n, width, generator=g)
               for keys, width in zip(model.embedding_keys, model.embedding_widths)}
    return Embedding(name, vectors)


@pytest.fixture
def fake(tmp_path, monkeypatch, model_dir):
    """Fake ComfyUI modules (folder_paths, progress bar, interrupt, PromptServer) over folders in tmp_path."""
    comfy = FakeComfy(tmp_path).install(monkeypatch)
    link_demo_model(tmp_path / "models", model_dir("tiny-sd1"))
    return comfy


@pytest.fixture
def nodes():
    """The pack's NODE_CLASS_MAPPINGS, imported as ComfyUI imports the pack."""
    return load_pack().NODE_CLASS_MAPPINGS


@pytest.fixture
def node_setup(nodes, fake, loaded):
    """(the random tiny demo model, the demo pictures) as TILoadModel and TILoadImages give them. The model is the
    session's copy of the same weights (TILoadModel's demo entry links to them), loaded once: training leaves it
    unchanged, and loading it took a second per test."""
    model = loaded("tiny-sd1")
    images = nodes["TILoadImages"]().load("ti-demo-images", 64)["result"][0]
    return model, images


def disc_images(folder, count=3, seed=0):
    """Non-square pictures of a red disc on blue, saved as PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(count):
        w, h = rng.choice([(96, 64), (64, 96), (80, 72)])
        image = Image.new("RGB", (w, h), (30, 40, 200))
        x, y, r = rng.randint(20, w - 20), rng.randint(20, h - 20), rng.randint(8, 18)
        ImageDraw.Draw(image).ellipse([x - r, y - r, x + r, y + r], fill=(220, 40, 30))
        image.save(folder / f"img{i}.png")
    return folder


def loss_probe(model, images, config, samples: int, seed: int):
    """vectors -> the loss of a run of `config` on `images` over `samples` fixed draws from `seed` (the
    validation loss's function), so that losses of different vectors compare."""
    import torch

    from ti_core.train import Trainer, _as_images

    with torch.inference_mode(False):
        trainer = Trainer(model, _as_images(images), config, None)

    def loss(vectors: list) -> float:
        with torch.inference_mode(False):
            return trainer.loss.fixed([torch.as_tensor(v, dtype=torch.float32) for v in vectors], samples, seed)

    return loss


# ---------------------------------------------------------------------------------------------------------
# the node pack over fake ComfyUI modules


ROOT = Path(__file__).resolve().parent.parent
PACK = "ti_pack"


def load_pack():
    if PACK not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK] = module
        spec.loader.exec_module(module)
    return sys.modules[PACK]


def pack_module(name: str):
    load_pack()
    return importlib.import_module(f"{PACK}.{name}")


class InterruptProcessingException(Exception):
    """Stands in for comfy.model_management.InterruptProcessingException (matched by class name)."""


class FakeComfy:
    """Fake `folder_paths`, `comfy.utils`, `comfy.model_management` and `server` modules that record calls."""

    def __init__(self, base: Path):
        self.base = base
        self.bars, self.events, self.interrupt_after, self.freed = [], [], None, []
        self.interrupted = False
        self.routes = FakeRoutes()
        fake = self

        folder_paths = types.ModuleType("folder_paths")
        folder_paths.models_dir = str(base / "models")

        def get_folder_paths(kind):
            return [str(base / "models" / kind)]

        def get_filename_list(kind):
            root = base / "models" / kind
            if not root.exists():
                return []
            return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

        folder_paths.get_folder_paths = get_folder_paths
        folder_paths.get_filename_list = get_filename_list
        folder_paths.get_input_directory = lambda: str(base / "input")
        folder_paths.get_temp_directory = lambda: str(base / "temp")

        class ProgressBar:
            def __init__(self, total):
                self.total, self.calls = total, []
                fake.bars.append(self)

            def update_absolute(self, value, total=None, preview=None):
                self.calls.append((value, total, preview))
                if fake.interrupt_after is not None and value >= fake.interrupt_after:
                    fake.interrupted = True
                if fake.interrupted:  # ComfyUI's hook raises the interrupt itself
                    fake.throw()

        utils = types.ModuleType("comfy.utils")
        utils.ProgressBar = ProgressBar
        mm = types.ModuleType("comfy.model_management")
        mm.InterruptProcessingException = InterruptProcessingException
        mm.processing_interrupted = lambda: fake.interrupted
        mm.throw_exception_if_processing_interrupted = fake.throw
        mm.get_torch_device = lambda: __import__("torch").device("cpu")
        mm.free_memory = lambda required, device, keep_loaded=(): fake.freed.append((required, str(device)))
        comfy = types.ModuleType("comfy")
        comfy.utils, comfy.model_management = utils, mm

        class Instance:
            routes = fake.routes

            @staticmethod
            def send_sync(event, data, sid=None):
                fake.events.append((event, data))

        server = types.ModuleType("server")
        server.PromptServer = types.SimpleNamespace(instance=Instance())
        self.modules = {"folder_paths": folder_paths, "comfy": comfy, "comfy.utils": utils,
                        "comfy.model_management": mm, "server": server}

    def throw(self):
        if self.interrupted:
            self.interrupted = False
            raise InterruptProcessingException()

    def install(self, monkeypatch):
        for name, module in self.modules.items():
            monkeypatch.setitem(sys.modules, name, module)
        for env in ("TI_MODELS_DIR", "TI_INPUT_DIR", "TI_TEMP_DIR"):
            monkeypatch.delenv(env, raising=False)
        return self


class FakeRoutes:
    def __init__(self):
        self.handlers = {}

    def get(self, path):
        def add(handler):
            self.handlers[path] = handler
            return handler
        return add


def link_demo_model(models_root: Path, tiny_sd1: Path) -> None:
    """Put the session's tiny SD1 where TILoadModel's demo entry looks, so it is not built again."""
    target = models_root / "textual_inversion" / "tiny-sd1"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(tiny_sd1, target_is_directory=True)


def run_api_graph(graph: dict, mappings: dict) -> dict:
    """Execute an API-format prompt through the node classes in dependency order, as ComfyUI does.

    Returns node id -> the node's outputs (a tuple). Inputs `[id, index]` are links; the rest are widget values.
    Hidden `unique_id` is passed to nodes that declare it.
    """
    results, visiting = {}, set()

    def run(node_id):
        if node_id in results:
            return results[node_id]
        if node_id in visiting:
            raise ValueError(f"cycle at node {node_id}")
        visiting.add(node_id)
        node = graph[node_id]
        cls = mappings[node["class_type"]]
        kwargs = {}
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                kwargs[name] = run(value[0])[value[1]]
            else:
                kwargs[name] = value
        if "unique_id" in cls.INPUT_TYPES().get("hidden", {}):
            kwargs["unique_id"] = node_id
        out = getattr(cls(), cls.FUNCTION)(**kwargs)
        results[node_id] = tuple(out["result"]) if isinstance(out, dict) and "result" in out else (
            () if isinstance(out, dict) else tuple(out))
        return results[node_id]

    for node_id in sorted(graph, key=int):
        run(node_id)
    return results
