"""Helpers for the node-pack tests: load the pack the way ComfyUI does, fake ComfyUI modules, run API graphs.

ComfyUI imports `custom_nodes/<pack>/__init__.py` as a package named after its path, so the nodes reach ti_core
with relative imports (`..ti_core`). `load_pack` does the same under the name `ti_pack`.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

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
            return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []

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
