"""Real embedding files from other tools (../shared/fixtures/embeddings, see its MANIFEST.md) load with the
manifest's check values, through the library and through `inspect --json`, and convert without loss."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ti_core.cli import main
from ti_core.embeddings import load_embedding, save_embedding
from ti_core.errors import EmbeddingError

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "embeddings"
pytestmark = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason=f"the shared embedding fixtures are not at {FIXTURES} (a checkout without ../shared)"
)
TOLERANCE = 1e-4

# MANIFEST.md "Check values": file -> (format we detect, vectors, {our key: (sum, norm, first element)}).
CHECK = {
    "hlky_anya.pt": ("textual-inversion-pt", 1, {"emb_params": (-1.166320, 15.325492, 0.063608)}),
    "ljzd_gasai_yuno-1000.pt": ("a1111-pt", 8, {"emb_params": (-0.127815, 8.135312, -0.149131)}),
    "ljzd_gasai_yuno-1000.png": ("a1111-png-text", 8, {"emb_params": (-0.127815, 8.135312, -0.149131)}),
    "mayaru_bad-hands-5.pt": ("a1111-pt", 2, {"emb_params": (-0.306923, 5.892193, 0.011328)}),
    "kaleidia_SD1.5-HairDetail.pt": ("a1111-pt", 3, {"emb_params": (0.023941, 0.682257, -0.019989)}),
    "narn0_test-input.safetensors": ("safetensors", 37, {"emb_params": (0.369570, 2.267493, 0.000743)}),
    "narn0_expected-output.safetensors": ("safetensors", 37, {"clip_l": (0.369570, 2.267493, 0.000743),
                                                              "clip_g": (-1.955980, 3.541692, 0.005123)}),
    "kaleidia_SDXL-Detail.safetensors": ("safetensors", 2, {"clip_l": (0.221026, 0.550092, -0.023666),
                                                             "clip_g": (-0.148006, 0.745704, -0.016449)}),
    "fastai_learned_embeds.bin": ("diffusers-bin", 1, {"emb_params": (0.511783, 3.013576, 0.170092)}),
    "rummd_learned_embeds.bin": ("diffusers-bin", 1, {"emb_params": (-0.147629, 1.071803, 0.017496)}),
    "waymonx_learned_embeds.bin": ("diffusers-bin", 1, {"emb_params": (-0.369808, 2.844950, 0.064212)}),
    "koalbert_learned_embeds.safetensors": ("diffusers-safetensors", 1,
                                            {"emb_params": (-0.487797, 2.993935, 0.082277)}),
    "roettger_myPuppet768.pt": ("xl-inversion-pt", 1, {"clip_l": (-0.251053, 0.427655, 0.006531),
                                                      "clip_g": (0.257358, 0.565040, -0.021851)}),
}
FILES = sorted(p.name for p in FIXTURES.glob("*") if p.suffix != ".md") if FIXTURES.is_dir() else []


def _fixture(name: str) -> Path:
    return FIXTURES / name


@pytest.mark.parametrize("name", FILES)
def test_every_fixture_file_loads(name):
    emb = load_embedding(_fixture(name))
    assert emb.name == Path(name).stem
    assert {k: v.shape[-1] for k, v in emb.vectors.items()} in (
        {"emb_params": 768}, {"emb_params": 1024}, {"clip_l": 768, "clip_g": 1280})
    assert name in CHECK, f"{name} is new in the fixtures: add its MANIFEST check values to CHECK"


@pytest.mark.parametrize("name", sorted(CHECK))
def test_fixture_check_values(name):
    fmt, n, expected = CHECK[name]
    emb = load_embedding(_fixture(name))
    assert (emb.source_format, emb.num_vectors) == (fmt, n)
    assert set(emb.vectors) == set(expected)
    for key, (total, norm, first) in expected.items():
        v = emb.vectors[key].double()
        assert float(v.sum()) == pytest.approx(total, abs=TOLERANCE)
        assert float(v.norm()) == pytest.approx(norm, abs=TOLERANCE)
        assert float(v.flatten()[0]) == pytest.approx(first, abs=TOLERANCE)


@pytest.mark.parametrize("name", sorted(CHECK))
def test_inspect_json_reports_the_check_values(name, capsys):
    fmt, n, expected = CHECK[name]
    assert main(["inspect", str(_fixture(name)), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["format"], info["name"], info["vectors"]) == (fmt, Path(name).stem, n)
    for key, (total, norm, _) in expected.items():
        assert info["tensors"][key]["sum"] == pytest.approx(total, abs=TOLERANCE)
        assert info["tensors"][key]["norm"] == pytest.approx(norm, abs=TOLERANCE)
        assert info["widths"][key] == info["tensors"][key]["shape"][1]


def test_a1111_metadata_maps_onto_ours():
    emb = load_embedding(_fixture("mayaru_bad-hands-5.pt"))
    assert emb.metadata == {"step": "1419", "base_hash": "5d2f8777af", "base_name": "7th7-any3",
                            "token": "bad-hands-5"}
    assert load_embedding(_fixture("waymonx_learned_embeds.bin")).metadata == {"token": "<Le Petit Prince-moon >"}


def test_png_text_chunk_pixels_and_pt_hold_the_same_vectors(tmp_path):
    pt = load_embedding(_fixture("ljzd_gasai_yuno-1000.pt")).vectors["emb_params"]
    with Image.open(_fixture("ljzd_gasai_yuno-1000.png")) as image:
        pixels = np.asarray(image.convert("RGB"))
    Image.fromarray(pixels).save(tmp_path / "stripped.png")  # the text chunk is gone, the pixels stay
    Image.fromarray(pixels).save(tmp_path / "stripped.webp", lossless=True)
    for path, fmt in [(_fixture("ljzd_gasai_yuno-1000.png"), "a1111-png-text"),
                      (tmp_path / "stripped.png", "a1111-png-pixels"),
                      (tmp_path / "stripped.webp", "a1111-webp-pixels")]:
        emb = load_embedding(path)
        assert emb.source_format == fmt and emb.metadata["step"] == "1000"
        assert torch.equal(emb.vectors["emb_params"], pt)


def test_sd1_and_sdxl_fixtures_share_clip_l():
    sd1 = load_embedding(_fixture("narn0_test-input.safetensors"))
    xl = load_embedding(_fixture("narn0_expected-output.safetensors"))
    assert torch.equal(sd1.vectors["emb_params"], xl.vectors["clip_l"])


@pytest.mark.parametrize("name", sorted(CHECK))
def test_every_fixture_converts_and_reads_back_unchanged(name, tmp_path):
    emb = load_embedding(_fixture(name))
    targets = {"safetensors": "out.safetensors", "a1111-pt": "out.pt", "diffusers": "out.bin"}
    for fmt, file in targets.items():
        if len(emb.vectors) > 1 and fmt != "safetensors":
            with pytest.raises(EmbeddingError, match="--to safetensors"):
                save_embedding(emb, tmp_path / file, format=fmt)
            continue
        back = load_embedding(save_embedding(emb, tmp_path / file, format=fmt))
        assert back.vectors.keys() == emb.vectors.keys()
        assert all(torch.equal(back.vectors[k], v) for k, v in emb.vectors.items())
