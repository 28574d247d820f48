"""`inspect` and `convert` on embedding files, run in-process through `ti_core.cli.main`."""

from __future__ import annotations

import json

import pytest
import torch

from ti_core.cli import main
from ti_core.embeddings import Embedding, load_embedding, save_embedding


@pytest.fixture
def a1111_file(tmp_path):
    v = torch.randn(4, 768, generator=torch.Generator().manual_seed(0))
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": v}, "name": "my style", "step": 300,
                "sd_checkpoint": "0123456789", "sd_checkpoint_name": "v1-5"}, tmp_path / "my-style.pt")
    return tmp_path / "my-style.pt", v


def test_inspect_prints_format_name_widths_stats_and_metadata(a1111_file, capsys):
    path, v = a1111_file
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    v64 = v.double()
    for line in ("kind: embedding", "format: a1111-pt", "name: my-style", "vectors: 4", "  emb_params: 768",
                 f"  emb_params: shape [4, 768], sum {float(v64.sum())}, norm {float(v64.norm())}",
                 "  step: 300", "  base_hash: 0123456789", "  base_name: v1-5", "  token: my style"):
        assert line in out.splitlines(), (line, out)


def test_inspect_json_is_one_object_with_the_documented_fields(a1111_file, capsys):
    path, v = a1111_file
    assert main(["inspect", str(path), "--json", "--compact"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    info = json.loads(out)
    assert (info["format"], info["name"], info["vectors"], info["widths"]) == ("a1111-pt", "my-style", 4,
                                                                              {"emb_params": 768})
    stats = info["tensors"]["emb_params"]
    assert stats["shape"] == [4, 768]
    assert stats["sum"] == pytest.approx(float(v.double().sum()), abs=1e-12)
    assert stats["norm"] == pytest.approx(float(v.double().norm()), abs=1e-12)
    assert info["metadata"]["step"] == "300"


@pytest.mark.parametrize("to, out_name, fmt", [
    ("safetensors", "out.safetensors", "safetensors"),
    ("a1111-pt", "out.pt", "a1111-pt"),
    ("diffusers", "learned_embeds.safetensors", "diffusers-safetensors"),
    ("diffusers", "learned_embeds.bin", "diffusers-bin"),
])
def test_convert_writes_each_format_and_it_reads_back(a1111_file, tmp_path, capsys, to, out_name, fmt):
    path, v = a1111_file
    out = tmp_path / "converted" / out_name
    assert main(["convert", str(path), str(out), "--to", to]) == 0
    assert f"wrote {out} ({to}, 4 vectors, from a1111-pt)" in capsys.readouterr().out
    back = load_embedding(out)
    assert back.source_format == fmt and torch.equal(back.vectors["emb_params"], v)


def test_convert_keeps_a1111_metadata_in_the_safetensors_header(a1111_file, tmp_path):
    path, _ = a1111_file
    assert main(["convert", str(path), str(tmp_path / "s.safetensors")]) == 0
    assert load_embedding(tmp_path / "s.safetensors").metadata == {
        "step": "300", "base_hash": "0123456789", "base_name": "v1-5", "token": "my style", "name": "my-style"}


def test_convert_never_replaces_a_file_unless_asked(a1111_file, tmp_path, capsys):
    path, v = a1111_file
    out = tmp_path / "taken.safetensors"
    save_embedding(Embedding("other", {"emb_params": torch.zeros(1, 768)}), out)
    assert main(["convert", str(path), str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert load_embedding(out).num_vectors == 1
    assert main(["convert", str(path), str(out), "--overwrite"]) == 0
    assert torch.equal(load_embedding(out).vectors["emb_params"], v)


def test_convert_sdxl_to_a1111_pt_fails_in_one_line(tmp_path, capsys):
    xl = save_embedding(Embedding("xl", {"clip_l": torch.ones(1, 768), "clip_g": torch.ones(1, 1280)}),
                        tmp_path / "xl.safetensors")
    assert main(["convert", str(xl), str(tmp_path / "xl.pt"), "--to", "a1111-pt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "clip_l, clip_g" in err[0]
    assert not (tmp_path / "xl.pt").exists()


def test_inspect_of_a_file_that_is_no_embedding_fails_in_one_line(tmp_path, capsys):
    (tmp_path / "readme.bin").write_text("not an embedding")
    assert main(["inspect", str(tmp_path / "readme.bin")]) == 2
    assert "not an embedding file" in capsys.readouterr().err
