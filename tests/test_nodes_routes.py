"""Routes under /textual_inversion/ and the one path check every browser-given name goes through."""

from __future__ import annotations

import asyncio
import json
import sys
import types

import pytest

from conftest import FakeComfy, pack_module


@pytest.mark.parametrize("name", ["../x.pt", "a/../../x.pt", "/etc/passwd", "\\\\server\\share\\x", "C:\\x.pt",
                                  "C:x.pt", "..", "a\\..\\..\\x", "", " ", "a\x00b"])
def test_resolve_inside_refuses_escapes(tmp_path, name):
    safe = pack_module("nodes.safe_paths")
    with pytest.raises(safe.PathEscapeError):
        safe.resolve_inside(tmp_path, name)


def test_resolve_inside_allows_subfolders_and_follows_links_the_user_made(tmp_path):
    safe = pack_module("nodes.safe_paths")
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    assert safe.resolve_inside(root, "sub/a.pt") == root / "sub" / "a.pt"
    assert safe.resolve_inside(root, "a..b.pt").name == "a..b.pt"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.pt").write_bytes(b"x")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)  # a folder linked in by the user
    assert safe.resolve_inside(root, "linked/x.pt").read_bytes() == b"x"
    (root / "y.pt").symlink_to(elsewhere / "x.pt")  # a file linked in: keeps its own name
    assert safe.resolve_inside(root, "y.pt").name == "y.pt" and safe.resolve_inside(root, "y.pt").is_file()
    with pytest.raises(safe.PathEscapeError, match=r"'\.\.'"):
        safe.resolve_inside(root, "linked/../../elsewhere/x.pt")
    with pytest.raises(safe.PathEscapeError, match="absolute"):
        safe.resolve_inside(root, str(elsewhere / "x.pt"))


def test_relative_inside_takes_absolute_paths_inside_the_root_only(tmp_path):
    safe = pack_module("nodes.safe_paths")
    root = tmp_path / "input"
    (root / "pics").mkdir(parents=True)
    (tmp_path / "mine").mkdir()
    (root / "linked").symlink_to(tmp_path / "mine", target_is_directory=True)
    assert safe.relative_inside(root, str(root / "pics")) == "pics"
    assert safe.relative_inside(root, str(root / "linked")) == "linked"  # as written: inside
    assert safe.relative_inside(root, "pics") == "pics"
    for outside in (str(tmp_path / "mine"), str(root / ".." / "mine"), "/etc"):
        with pytest.raises(safe.PathEscapeError, match="is outside"):
            safe.relative_inside(root, outside)


@pytest.fixture
def server(tmp_path, monkeypatch, loaded):
    from conftest import random_embedding
    from ti_core.embeddings import save_embedding

    fake = FakeComfy(tmp_path).install(monkeypatch)
    web = types.ModuleType("aiohttp.web")
    web.json_response = lambda body, status=200: {"status": status, "body": json.loads(json.dumps(body))}
    aiohttp = types.ModuleType("aiohttp")
    aiohttp.web = web
    monkeypatch.setitem(sys.modules, "aiohttp", aiohttp)
    monkeypatch.setitem(sys.modules, "aiohttp.web", web)
    folder = tmp_path / "models" / "embeddings"
    save_embedding(random_embedding(loaded("tiny-sd1"), "cat"), folder / "cat.safetensors")
    (folder / "broken.pt").write_bytes(b"junk")
    pack_module("nodes.routes").register(fake.modules["server"].PromptServer.instance)
    return fake


def get(fake, path, **query):
    return asyncio.run(fake.routes.handlers[path](types.SimpleNamespace(query=query)))


def test_routes_list_embeddings_with_info_and_check_names(server):
    listed = get(server, "/textual_inversion/embeddings")["body"]["embeddings"]
    by_name = {e["file"]: e for e in listed}
    assert by_name["cat.safetensors"]["vectors"] == 2 and by_name["cat.safetensors"]["format"] == "safetensors"
    assert "error" in by_name["broken.pt"]
    assert get(server, "/textual_inversion/embeddings/info", name="cat.safetensors")["status"] == 200
    assert get(server, "/textual_inversion/embeddings/info", name="../../x")["status"] == 403
    assert get(server, "/textual_inversion/embeddings/info", name="/etc/passwd")["status"] == 403
    assert get(server, "/textual_inversion/embeddings/info", name="nope.pt")["status"] == 404


def test_status_route_reports_training_runs(server):
    pack_module("nodes.status").report("42", name="cat", state="training", step=3, steps=10)
    runs = get(server, "/textual_inversion/status")["body"]["runs"]
    assert runs["42"]["step"] == 3 and runs["42"]["state"] == "training"


def test_routes_are_added_when_the_pack_loads_in_comfyui(tmp_path, monkeypatch):
    import importlib.util

    from conftest import ROOT

    fake = FakeComfy(tmp_path).install(monkeypatch)
    monkeypatch.setitem(sys.modules, "aiohttp", types.ModuleType("aiohttp"))
    monkeypatch.setitem(sys.modules, "aiohttp.web", types.ModuleType("aiohttp.web"))
    spec = importlib.util.spec_from_file_location("ti_pack_routes", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "ti_pack_routes", module)
    spec.loader.exec_module(module)
    assert set(fake.routes.handlers) == {"/textual_inversion/embeddings", "/textual_inversion/embeddings/info",
                                         "/textual_inversion/status"}
