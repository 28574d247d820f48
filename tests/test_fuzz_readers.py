"""Fuzzing the file readers: random and mutated bytes give a valid result or a typed TIError, never another
exception, a hang or a crash. Seeds are the real shared embedding fixtures and a tiny single-file model."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ti_core.checkpoint_io import load_tensors
from ti_core.embeddings import load_embedding
from ti_core.errors import TIError

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "embeddings"
SEEDS = sorted(p for p in FIXTURES.glob("*") if p.suffix in (".pt", ".bin", ".safetensors", ".png")) \
    if FIXTURES.is_dir() else []
COUNT = {"cases": 0}


def _mutate(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    kind = rng.choice(["flip", "truncate", "splice", "zero-run", "header"])
    if kind == "flip":
        for _ in range(rng.randint(1, 16)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del data[rng.randrange(len(data)):]
    elif kind == "splice":
        i = rng.randrange(len(data))
        data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == "zero-run":
        i = rng.randrange(len(data))
        data[i:i + rng.randint(1, 256)] = bytes(min(256, len(data) - i))
    else:  # damage the first bytes, where headers and the zip directory's neighbours live
        for i in range(min(len(data), 64)):
            if rng.random() < 0.2:
                data[i] = rng.randrange(256)
    return bytes(data)


def _result_or_typed_error(path: Path, *readers):
    """Run each reader on `path`: any result is fine, and so is a TIError; any other exception fails the test.
    Returns the last reader's result, or the TIError it raised."""
    COUNT["cases"] += 1
    outcome = None
    for reader in readers:
        try:
            outcome = reader(path)
        except TIError as e:
            outcome = e
    return outcome


def _read_all(path: Path) -> None:
    _result_or_typed_error(path, load_embedding, load_tensors)


@pytest.mark.skipif(not SEEDS, reason=f"shared fixtures not found at {FIXTURES}")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), which=st.integers(0, 10_000))
def test_mutated_embedding_files(tmp_path, seed, which):
    source = SEEDS[which % len(SEEDS)]
    target = tmp_path / f"case{source.suffix}"
    target.write_bytes(_mutate(source.read_bytes(), random.Random(seed)))
    _read_all(target)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=2048),
       suffix=st.sampled_from([".pt", ".safetensors", ".bin", ".png", ".ckpt"]))
def test_random_bytes(tmp_path, data, suffix):
    target = tmp_path / f"random{suffix}"
    target.write_bytes(data)
    _read_all(target)


@pytest.mark.slow
def test_mutated_single_file_models(tmp_path, single_file):
    from ti_core.models import load_model

    source = single_file("tiny-sd1").read_bytes()
    rng = random.Random(0)
    for i in range(12):
        target = tmp_path / f"model{i}.safetensors"
        target.write_bytes(_mutate(source, rng))
        _result_or_typed_error(target, load_model)


@pytest.mark.skipif(not SEEDS, reason=f"shared fixtures not found at {FIXTURES}")
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_mutated_training_images(tmp_path, seed):
    """Training images: a mutated PNG either opens as an RGB image or is an ImageSetError naming it."""
    from ti_core.data import open_image

    source = next(p for p in SEEDS if p.suffix == ".png")
    target = tmp_path / "photo.png"
    target.write_bytes(_mutate(source.read_bytes(), random.Random(seed)))
    outcome = _result_or_typed_error(target, open_image)
    if isinstance(outcome, TIError):
        assert "photo.png" in str(outcome)
    else:
        assert outcome.rgb.mode == "RGB"


def test_report_case_count():
    """Runs last in this file: prints how many fuzz cases ran (for the closing note)."""
    print(f"\nfuzz cases run: {COUNT['cases']}")
    assert COUNT["cases"] >= 60
