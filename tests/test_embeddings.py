"""Embedding files: write-then-read round trips for every written format, layouts detected from content,
atomic writes that never replace a file silently, fit errors, and interoperability with diffusers."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import random_embedding
from ti_core.embeddings import METADATA_KEYS, Embedding, load_embedding, save_embedding
from ti_core.errors import EmbeddingError, EmbeddingWidthError
from ti_core.prompt import encode_prompt

METADATA = {
    "step": "1200", "base_family": "sd1", "base_hash": "5d2f8777af", "base_name": "v1-5", "init_text": "red cat",
    "training": json.dumps({"lr": 0.005, "batch": 4}), "software": "ti_core 0.1.0", "token": "<cat>",
}


def _vectors(n: int, *widths, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, w, generator=g) for w in widths]


def _same_vectors(a: Embedding, b: Embedding) -> bool:
    return a.vectors.keys() == b.vectors.keys() and all(torch.equal(a.vectors[k], b.vectors[k]) for k in a.vectors)


def test_metadata_documents_every_key_we_use():
    assert set(METADATA) == set(METADATA_KEYS)


@pytest.mark.parametrize("keys_widths", [{"emb_params": 768}, {"emb_params": 1024}, {"clip_l": 768, "clip_g": 1280}])
def test_safetensors_round_trip_keeps_vectors_name_and_metadata(tmp_path, keys_widths):
    vectors = dict(zip(keys_widths, _vectors(3, *keys_widths.values())))
    emb = Embedding("my-cat", vectors, dict(METADATA))
    path = save_embedding(emb, tmp_path / "my-cat.safetensors")
    with safe_open(str(path), framework="pt") as f:  # exactly the layout ComfyUI, A1111 and kohya read
        assert sorted(f.keys()) == sorted(keys_widths)
        assert f.metadata() == {**METADATA, "name": "my-cat"}
    back = load_embedding(path)
    assert (back.name, back.source_format, back.num_vectors) == ("my-cat", "safetensors", 3)
    assert _same_vectors(back, emb)
    assert back.metadata == {**METADATA, "name": "my-cat"}


def test_a1111_pt_has_the_keys_a1111_reads_and_round_trips(tmp_path):
    (v,) = _vectors(2, 768)
    emb = Embedding("bad-hands", {"emb_params": v.requires_grad_()}, {"step": "1419", "base_hash": "5d2f8777af",
                                                                     "base_name": "7th7-any3", "init_text": "hands"})
    path = save_embedding(emb, tmp_path / "bad-hands.pt", format="a1111-pt")
    data = torch.load(path, weights_only=True)  # no allow-list needed: plain dicts, str, int and one tensor
    assert set(data) == {"string_to_token", "string_to_param", "name", "step", "sd_checkpoint", "sd_checkpoint_name"}
    assert data["string_to_token"] == {"*": 265}
    assert list(data["string_to_param"]) == ["*"] and torch.equal(data["string_to_param"]["*"], v.detach())
    assert data["string_to_param"]["*"].dtype == torch.float32 and not data["string_to_param"]["*"].requires_grad
    assert (data["name"], data["step"], data["sd_checkpoint"], data["sd_checkpoint_name"]) == (
        "bad-hands", 1419, "5d2f8777af", "7th7-any3")
    back = load_embedding(path)
    assert back.source_format == "a1111-pt" and _same_vectors(back, emb)
    assert back.metadata == {"step": "1419", "base_hash": "5d2f8777af", "base_name": "7th7-any3", "token": "bad-hands"}


def test_a1111_pt_without_known_step_or_checkpoint_stores_none(tmp_path):
    (v,) = _vectors(1, 1024)
    data = torch.load(save_embedding(Embedding("e", {"emb_params": v}), tmp_path / "e.pt", format="a1111-pt"))
    assert (data["step"], data["sd_checkpoint"], data["sd_checkpoint_name"]) == (None, None, None)


@pytest.mark.parametrize("suffix, container", [(".safetensors", "diffusers-safetensors"), (".bin", "diffusers-bin")])
def test_diffusers_round_trip(tmp_path, suffix, container):
    (v,) = _vectors(4, 768)
    path = save_embedding(Embedding("cat toy", {"emb_params": v}), tmp_path / f"learned_embeds{suffix}",
                          format="diffusers")
    data = torch.load(path, weights_only=True) if suffix == ".bin" else _safetensors_dict(path)
    assert list(data) == ["<cat toy>"] and torch.equal(data["<cat toy>"], v)
    back = load_embedding(path)
    assert (back.name, back.source_format, back.metadata["token"]) == ("learned_embeds", container, "<cat toy>")
    assert torch.equal(back.vectors["emb_params"], v)


def _safetensors_dict(path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        return {k: f.get_tensor(k) for k in f.keys()}


def test_diffusers_keeps_a_files_own_token(tmp_path):
    (v,) = _vectors(1, 768)
    save_file({"<birb-style>": v[0]}, tmp_path / "in.safetensors")
    out = save_embedding(load_embedding(tmp_path / "in.safetensors"), tmp_path / "out.safetensors", format="diffusers")
    assert list(_safetensors_dict(out)) == ["<birb-style>"]


@pytest.mark.parametrize("fmt", ["a1111-pt", "diffusers"])
def test_sdxl_to_a_single_encoder_format_is_refused_with_the_way_out(tmp_path, fmt):
    emb = Embedding("xl", dict(zip(("clip_l", "clip_g"), _vectors(1, 768, 1280))))
    with pytest.raises(EmbeddingError, match=r"2 text encoders \(clip_l, clip_g\).*--to safetensors"):
        save_embedding(emb, tmp_path / "xl.pt", format=fmt)
    assert list(tmp_path.iterdir()) == []


def test_unknown_write_format_is_refused(tmp_path):
    with pytest.raises(EmbeddingError, match="'ckpt' is not one of safetensors, a1111-pt, diffusers"):
        save_embedding(Embedding("e", {"emb_params": torch.ones(1, 8)}), tmp_path / "e", format="ckpt")


def test_writing_never_replaces_a_file_unless_asked(tmp_path):
    first, second = (Embedding("e", {"emb_params": v}) for v in _vectors(1, 8, 8))
    path = save_embedding(first, tmp_path / "e.safetensors")
    before = path.read_bytes()
    with pytest.raises(EmbeddingError, match="already exists"):
        save_embedding(second, path)
    assert path.read_bytes() == before
    save_embedding(second, path, overwrite=True)
    assert _same_vectors(load_embedding(path), second)
    assert [p.name for p in tmp_path.iterdir()] == ["e.safetensors"]  # no temporary file left behind


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path, monkeypatch):
    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        save_embedding(Embedding("e", {"emb_params": torch.ones(1, 8)}), tmp_path / "e.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_written_files_follow_the_umask_not_private_temp_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_embedding(Embedding("e", {"emb_params": torch.ones(1, 8)}), tmp_path / "e.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_format_is_detected_from_content_not_extension(tmp_path):
    (v,) = _vectors(2, 768)
    emb = Embedding("x", {"emb_params": v})
    cases = {
        "safetensors": save_embedding(emb, tmp_path / "a.safetensors"),
        "a1111-pt": save_embedding(emb, tmp_path / "b.pt", format="a1111-pt"),
        "diffusers-bin": save_embedding(emb, tmp_path / "c.bin", format="diffusers"),
    }
    for fmt, path in cases.items():
        for wrong in (".pt", ".safetensors", ".png"):
            misnamed = path.with_name(f"{path.stem}-misnamed{wrong}")
            misnamed.write_bytes(path.read_bytes())
            back = load_embedding(misnamed)
            assert back.source_format == fmt and torch.equal(back.vectors["emb_params"], v)


def _write_pt(tmp_path, name, data):
    path = tmp_path / name
    torch.save(data, path)
    return load_embedding(path)


def test_other_layouts_map_onto_our_keys(tmp_path):
    a, b = _vectors(2, 768, 1280)
    one = _write_pt(tmp_path, "onetrainer.pt", {"emp_params": a})
    assert one.source_format == "onetrainer-pt" and torch.equal(one.vectors["emb_params"], a)
    save_file({"emp_params": a, "emp_params_out": a.clone()}, tmp_path / "ot.safetensors")
    assert load_embedding(tmp_path / "ot.safetensors").source_format == "onetrainer-safetensors"
    xl = _write_pt(tmp_path, "xl.pt", {"emb": a[0].bfloat16(), "emb2": b[0].bfloat16()})
    assert xl.source_format == "xl-inversion-pt"
    assert xl.vectors["clip_l"].shape == (1, 768) and xl.vectors["clip_g"].dtype == torch.float32
    assert torch.equal(xl.vectors["clip_g"][0], b[0].bfloat16().float())
    kohya = _write_pt(tmp_path, "kohya.pt", {"clip_g": b, "clip_l": a})
    assert kohya.source_format == "kohya-pt" and list(kohya.vectors) == ["clip_l", "clip_g"]
    spaced = _write_pt(tmp_path, "concept.bin", {"<Le Petit Prince-moon >": a[1]})
    assert spaced.metadata == {"token": "<Le Petit Prince-moon >"} and torch.equal(spaced.vectors["emb_params"], a[1:])
    bare = _write_pt(tmp_path, "bare.pt", a)
    assert bare.source_format == "tensor-pt" and torch.equal(bare.vectors["emb_params"], a)


def test_original_textual_inversion_parameterdict_is_read(tmp_path):
    (v,) = _vectors(2, 768)
    data = {"string_to_token": {"*": torch.tensor(265)},
            "string_to_param": torch.nn.ParameterDict({"*": torch.nn.Parameter(v.clone())})}
    emb = _write_pt(tmp_path, "embeddings_gs-6099.pt", data)
    assert emb.source_format == "textual-inversion-pt" and emb.name == "embeddings_gs-6099"
    assert torch.equal(emb.vectors["emb_params"], v) and not emb.vectors["emb_params"].requires_grad


@pytest.mark.parametrize("data, message", [
    ({"<a>": torch.ones(768), "<b>": torch.ones(768)}, r"keys '<a>', '<b>'\).*several tokens"),
    ({"IN01": torch.ones(1, 768), "MID": torch.ones(1, 768), "OUT11": torch.ones(1, 768)}, "unknown embedding layout"),
    ({"string_to_param": {"*": torch.ones(1, 8), "+": torch.ones(1, 8)}}, "one placeholder.*holds 2"),
    ({"emb_params": torch.ones(1, 8, dtype=torch.int64)}, "emb_params is a torch.int64 tensor"),
    ({"emb_params": torch.full((1, 8), float("nan"))}, "NaN or infinite"),
    ({"emb_params": torch.ones(76, 8)}, "more than 75 vectors"),
    ({"clip_l": torch.ones(2, 768), "clip_g": torch.ones(3, 1280)}, r"different vector counts \[2, 3\]"),
    ([1, 2, 3], "holds a list, not an embedding"),
])
def test_unusable_data_is_refused_with_a_reason(tmp_path, data, message):
    with pytest.raises(EmbeddingError, match=message) as refused:
        _write_pt(tmp_path, "bad.pt", data)
    assert str(tmp_path / "bad.pt") in str(refused.value)  # the message names the file


def test_files_that_are_no_embedding_are_refused(tmp_path):
    (tmp_path / "notes.pt").write_text("hello")
    with pytest.raises(EmbeddingError, match=r"notes.pt: not an embedding file.*starts with b'hello'"):
        load_embedding(tmp_path / "notes.pt")
    with pytest.raises(EmbeddingError, match="no such embedding file"):
        load_embedding(tmp_path / "absent.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(save_embedding(
        Embedding("e", {"emb_params": torch.ones(4, 8)}), tmp_path / "whole.safetensors").read_bytes()[:-20])
    with pytest.raises(EmbeddingError, match="corrupt or truncated"):
        load_embedding(tmp_path / "cut.safetensors")


@pytest.mark.slow
def test_loaded_file_of_another_width_names_both_widths(tmp_path, loaded):
    path = save_embedding(random_embedding(loaded("tiny-sd1"), "x"), tmp_path / "x.safetensors")
    with pytest.raises(EmbeddingWidthError, match="32-wide.*takes 48-wide"):
        encode_prompt(loaded("tiny-sd2"), "embedding:x", [load_embedding(path)])


def test_sdxl_file_missing_one_encoder_says_which(tmp_path, loaded):
    save_file({"clip_l": torch.randn(1, 32)}, tmp_path / "half.safetensors")
    with pytest.raises(EmbeddingError, match="text encoder 2.*this file lacks clip_g"):
        encode_prompt(loaded("tiny-sdxl"), "embedding:half", [load_embedding(tmp_path / "half.safetensors")])
    save_file({"clip_g": torch.randn(1, 64)}, tmp_path / "other.safetensors")
    with pytest.raises(EmbeddingError, match="text encoder 1.*this file lacks clip_l"):
        encode_prompt(loaded("tiny-sdxl"), "embedding:other", [load_embedding(tmp_path / "other.safetensors")])


def test_sdxl_file_on_a_single_encoder_model_says_it_is_for_another_family(tmp_path, loaded):
    save_file({"clip_l": torch.randn(1, 32), "clip_g": torch.randn(1, 64)}, tmp_path / "xl.safetensors")
    with pytest.raises(EmbeddingError, match=r"looked for emb_params; the file has clip_l \(1, 32\), clip_g "
                                             r"\(1, 64\)\)\. Use an embedding trained for this model family"):
        encode_prompt(loaded("tiny-sd2"), "embedding:xl", [load_embedding(tmp_path / "xl.safetensors")])


# ---------------------------------------------------------------------------------------------------------
# diffusers reads what we write, and conditions exactly as we do


@pytest.fixture(scope="module")
def sd1_pipe(model_dir):
    from diffusers import StableDiffusionPipeline

    return lambda: StableDiffusionPipeline.from_pretrained(model_dir("tiny-sd1"))


def test_diffusers_conditioning_matches_our_splice(tmp_path, loaded, sd1_pipe):
    model = loaded("tiny-sd1")
    path = save_embedding(random_embedding(model, "my-cat", n=3, seed=5), tmp_path / "my-cat.safetensors")
    ours = load_embedding(path)
    pipe = sd1_pipe()
    pipe.load_textual_inversion(str(path), token="<my-cat>")
    prompt = "a photo of <my-cat> on a beach"
    with torch.no_grad():
        theirs, _ = pipe.encode_prompt(prompt, "cpu", 1, False)
    mine = encode_prompt(model, "a photo of embedding:my-cat on a beach", [ours]).embeds
    assert theirs.shape == mine.shape == (1, 77, 32)
    assert torch.allclose(mine, theirs, atol=1e-5), float((mine - theirs).abs().max())
    with torch.no_grad():  # the embedding matters: without it the prompt conditions differently
        plain, _ = pipe.encode_prompt("a photo of my cat on a beach", "cpu", 1, False)
    assert not torch.allclose(mine, plain, atol=1e-3)


@pytest.mark.parametrize("fmt, suffix, token", [("a1111-pt", ".pt", "my-dog"), ("diffusers", ".bin", "<my-dog>")])
def test_diffusers_reads_our_other_formats_by_their_own_token(tmp_path, loaded, sd1_pipe, fmt, suffix, token):
    emb = random_embedding(loaded("tiny-sd1"), "my-dog", n=2, seed=3)
    path = save_embedding(emb, tmp_path / f"my-dog{suffix}", format=fmt)
    pipe = sd1_pipe()
    pipe.load_textual_inversion(str(path))
    ids = pipe.tokenizer.convert_tokens_to_ids([token, f"{token}_1"])
    rows = pipe.text_encoder.get_input_embeddings().weight[ids]
    assert torch.equal(rows, emb.vectors["emb_params"])
