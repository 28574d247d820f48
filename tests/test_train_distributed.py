"""One word on several processes (torchrun, gloo on the CPU): the same vectors as one process with the same global
batch, rank 0 alone writes, a killed rank leaves whole files that one process resumes; and the shares' arithmetic
checked in one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import disc_images
from ti_core.cli import main
from ti_core.distributed import World, current
from ti_core.embeddings import load_embedding
from ti_core.errors import SettingError
from ti_core.train import TrainConfig, Trainer, _as_images
from ti_core.train_draws import Rng
from ti_core.train_state import load_state

ROOT = Path(__file__).resolve().parents[1]


def test_shares_cover_a_batch_once_and_evenly():
    for size in range(1, 6):
        for count in range(size, 13):
            parts = [range(count)[World(size, rank).share(count)] for rank in range(size)]
            assert [i for part in parts for i in part] == list(range(count))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_a_single_process_is_a_world_of_one_that_sums_nothing():
    world = current()
    assert world == World() and world.is_main
    grad = torch.ones(2, 3)
    world.sum_([grad])
    assert torch.equal(grad, torch.ones(2, 3)) and world.sum(2.5) == 2.5 and world.any(True) and not world.any(False)


@pytest.mark.parametrize("vector_norm", ["free", "vocab"])  # vocab: the length penalty is counted once
def test_the_shares_losses_and_gradients_sum_to_the_whole_batch(vector_norm, tmp_path, loaded):
    """What the all-reduce adds up: each rank's share of the same draw, over the global batch size."""
    model = loaded("tiny-sd1")
    config = TrainConfig(name="disc", batch_size=5, vectors=2, validate_every=0, crop="random",
                         vector_norm=vector_norm, norm_weight=1.0)
    images = _as_images(disc_images(tmp_path / "img"))

    def loss_and_grad(world):
        with torch.inference_mode(False), torch.enable_grad():
            trainer = Trainer(model, images, config, None, world)
            trainer.rng = Rng.seeded(3)  # the same draw for every share
            loss = trainer.objective()
            loss.backward()
        return float(loss.detach()), trainer.params[0].grad.clone()

    whole_loss, whole_grad = loss_and_grad(World())
    shares = [loss_and_grad(World(2, rank)) for rank in (0, 1)]
    assert shares[0][0] != pytest.approx(whole_loss)  # a share is only part of it
    assert sum(loss for loss, _ in shares) == pytest.approx(whole_loss, rel=1e-5)
    assert torch.allclose(shares[0][1] + shares[1][1], whole_grad, rtol=1e-4, atol=1e-7)


def test_one_named_gpu_for_several_processes_is_refused_before_the_group_starts(monkeypatch):
    from ti_core.distributed import process_group

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SettingError, match="--device cuda:1 names one GPU for all 2 processes"):
        with process_group("cuda:1"):
            pass


def test_a_batch_smaller_than_the_processes_is_refused(tmp_path, loaded):
    with pytest.raises(SettingError, match="batch_size 1 is smaller than the 2 processes"):
        Trainer(loaded("tiny-sd1"), _as_images(disc_images(tmp_path / "img")), TrainConfig(name="disc"), None,
                World(2, 0))


# ---------------------------------------------------------------------------------------------------------
# torchrun, 2 processes, on the built-in toy model


def _toy_images(folder: Path) -> Path:
    from ti_core.toyworld.concept import Concept, draw_concept

    return draw_concept(folder, Concept.parse("green dotted heart"), count=4, seed=0)


def _train_args(images: Path, out: Path, *extra) -> list:
    from ti_core.toyworld.model import builtin_model_path

    return ["train", "--model", str(builtin_model_path()), "--images", str(images), "--name", "w",
            "--init-text", "heart", "--template", "captions", "--batch", "4", "--device", "cpu", "--out", str(out),
            *extra]


def _torchrun(args: list, processes: int = 2, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             f"--nproc-per-node={processes}", "-m", "ti_core", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _vectors(path: Path) -> torch.Tensor:
    return load_embedding(path).vectors["emb_params"]


@pytest.mark.slow
def test_two_processes_train_the_vectors_of_one_and_only_rank_0_writes(tmp_path):
    images = _toy_images(tmp_path / "images")
    options = ["--steps", "8", "--validate-every", "4", "--validation-samples", "6", "--save-every", "4",
               "--grad-accum", "2", "--latents", "resample"]  # every draw of a step is the same whatever N is
    proc = _torchrun(_train_args(images, tmp_path / "two" / "w.safetensors", *options))
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert main(_train_args(images, tmp_path / "one" / "w.safetensors", *options)) == 0

    assert stdout.count("w: finished at step 8 of 8") == 1  # rank 0 alone reports
    assert "device: cpu x 2 processes" in stderr
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["w.safetensors", "w.state.safetensors"]
    one, two = _vectors(tmp_path / "one" / "w.safetensors"), _vectors(tmp_path / "two" / "w.safetensors")
    assert float((one - two).abs().max()) < 1e-4  # the same draws; only the sums' order differs
    states = [load_state(tmp_path / run / "w.state.safetensors") for run in ("one", "two")]
    assert [s for s, _ in states[0].val_losses] == [s for s, _ in states[1].val_losses] == [0, 4, 8]
    for (_, a), (_, b) in zip(states[0].val_losses, states[1].val_losses):
        assert b == pytest.approx(a, rel=1e-5)  # each rank measured a share of the same fixed draws
    assert states[1].losses == pytest.approx(states[0].losses, rel=1e-4)


def _rank_of_child(parent: int, rank: int) -> int | None:
    """The pid of torchrun's worker with RANK=`rank` (a child of `parent`), from /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds torchrun's workers through /proc")
def test_a_killed_rank_leaves_whole_files_and_one_process_resumes(tmp_path):
    images = _toy_images(tmp_path / "images")
    out = tmp_path / "w.safetensors"
    state_file = tmp_path / "w.state.safetensors"
    options = ["--validate-every", "0", "--save-every", "2"]
    proc = _torchrun(_train_args(images, out, "--steps", "100000", *options), start_new_session=True)
    try:
        deadline = time.time() + 180
        while not out.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert out.exists(), proc.communicate()[1][-3000:] if proc.poll() is not None else "no save within 180 s"
        worker = _rank_of_child(proc.pid, 1)
        assert worker is not None
        os.kill(worker, signal.SIGKILL)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0  # torchrun ends the run when a worker dies

    state = load_state(state_file)  # whole: both files load
    saved = load_embedding(out)
    assert 2 <= int(saved.metadata["step"]) <= state.step and state.step % 2 == 0
    steps = str(state.step + 4)
    assert main(_train_args(images, out, "--steps", steps, "--resume", str(state_file), *options)) == 0
    assert load_embedding(out).metadata["step"] == steps
    assert main(_train_args(images, tmp_path / "ref" / "w.safetensors", "--steps", steps, *options)) == 0
    assert float((_vectors(out) - _vectors(tmp_path / "ref" / "w.safetensors")).abs().max()) < 1e-4


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_every_rank_at_one_step_and_rank_0_saves_it(tmp_path):
    """What a Slurm preemption or Ctrl-C does: torchrun passes the signal on, the ranks stop together, rank 0 saves."""
    images = _toy_images(tmp_path / "images")
    out = tmp_path / "w.safetensors"
    proc = _torchrun(_train_args(images, out, "--steps", "100000", "--validate-every", "0", "--save-every", "5"),
                     start_new_session=True)
    try:
        deadline = time.time() + 180
        while not out.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert out.exists(), proc.communicate()[1][-3000:] if proc.poll() is not None else "no save within 180 s"
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert stdout.count("w: stopped on request at step") == 1, stderr[-3000:]
    step = int(stdout.split("stopped on request at step ")[1].split(" ")[0])
    assert step >= 5  # the stop's own save, not only the last periodic one:
    assert load_embedding(out).metadata["step"] == str(step) == str(load_state(tmp_path / "w.state.safetensors").step)


API_SCRIPT = """
import json, sys
import torch.distributed as dist
from ti_core.toyworld.model import load_toy_model
from ti_core.train import TrainConfig, train

dist.init_process_group("gloo")
seen = []
config = TrainConfig(name="w", init_text="heart", template="captions", batch_size=5, flip=False, steps=6,
                     validate_every=3, validation_samples=5,
                     output=sys.argv[2] if dist.get_rank() == 0 else sys.argv[3])
result = train(load_toy_model(), sys.argv[1], config, on_step=seen.append)
print(json.dumps({"rank": dist.get_rank(), "path": result.path, "reports": len(seen), "val": result.val_losses,
                  "vectors": result.embedding.vectors["emb_params"].tolist()}))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_the_python_api_finds_a_group_started_by_the_caller(tmp_path):
    """Each rank passes its own output path here, to show that only rank 0 writes (and reports) whatever it gets;
    a batch of 5 from 4 pictures is warned about, by rank 0 alone."""
    images = _toy_images(tmp_path / "images")
    script = tmp_path / "api.py"
    script.write_text(API_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(script), str(images), *(str(tmp_path / f"r{rank}.safetensors") for rank in (0, 1))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = sorted((json.loads(line) for line in done.stdout.splitlines()), key=lambda r: r["rank"])
    assert [(r["path"], r["reports"]) for r in ranks] == [(str(tmp_path / "r0.safetensors"), 6), (None, 0)]
    assert not (tmp_path / "r1.safetensors").exists() and not (tmp_path / "r1.state.safetensors").exists()
    assert ranks[0]["val"] == ranks[1]["val"] and ranks[0]["vectors"] == ranks[1]["vectors"]  # the same everywhere
    assert done.stderr.count("batch_size 5 is larger than the 4 pictures") == 1

    from ti_core.toyworld.model import load_toy_model
    from ti_core.train import train

    one = train(load_toy_model(), images, TrainConfig(name="w", init_text="heart", template="captions", batch_size=5,
                                                      flip=False, steps=6, validate_every=3, validation_samples=5))
    assert float((one.embedding.vectors["emb_params"] - torch.tensor(ranks[0]["vectors"])).abs().max()) < 1e-4
    assert [v for _, v in one.val_losses] == pytest.approx([v for _, v in ranks[0]["val"]], rel=1e-5)
