"""The many-words runner: a JSON Lines file of `train` options; finished jobs are skipped, stopped ones resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ti_core.cli import main
from ti_core.embeddings import load_embedding
from ti_core.errors import SettingError
from ti_core.jobs import job_argv, job_options, parse_job, read_jobs, report_path_for
from ti_core.train_config import TrainConfig, config_from_args

ROOT = Path(__file__).resolve().parents[1]


def test_a_job_line_is_the_train_command_line():
    assert job_argv({"model": "m", "lr": "5e-3", "flip": False, "use_alpha": True, "resume": None, "steps": 9}) == [
        "--model", "m", "--lr", "5e-3", "--no-flip", "--use-alpha", "--steps", "9"]


def test_a_config_written_as_a_job_reads_back_the_same():
    config = TrainConfig(name="w", output="words/w.safetensors", steps=300, learning_rate="5e-3:100, 1e-3",
                         batch_size=8, flip=False, crop="center", early_stop=4, snr_gamma=0.0)
    job = job_options(config, model="m.safetensors", images="pictures/")
    assert job["model"] == "m.safetensors" and job["flip"] is False and "seed" not in job  # defaults left out
    args = parse_job(json.loads(json.dumps(job)), "jobs.jsonl:1")
    assert config_from_args(args) == config and args.model == "m.safetensors" and args.images == "pictures/"


def test_mistakes_name_the_line(tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"model": "m", "images": "i", "name": "a", "out": "a.safetensors"}\n\n["not", "an object"]\n')
    with pytest.raises(SettingError, match=r"jobs.jsonl:3: a list, not an object"):
        read_jobs(jobs)
    jobs.write_text('{"model": "m", "images": "i", "name": "a", "out": "a.safetensors"}\n{"model": \n')
    with pytest.raises(SettingError, match=r"jobs.jsonl:2: not a JSON object"):
        read_jobs(jobs)
    with pytest.raises(SettingError, match=r"jobs.jsonl:7: the following arguments are required: --images"):
        parse_job({"model": "m", "name": "a", "out": "a.safetensors"}, "jobs.jsonl:7")
    with pytest.raises(SettingError, match=r"jobs.jsonl:7: .*--crop.*'square'"):
        parse_job({"model": "m", "images": "i", "name": "a", "out": "a.safetensors", "crop": "square"}, "jobs.jsonl:7")
    jobs.write_text('{"model": "m", "images": "i", "name": "a", "out": "a.safetensors"}\n')
    assert main(["jobs", str(jobs), "--index", "1"]) == 2  # one line error, before any work


@pytest.mark.slow
def test_a_preempted_job_resumes_and_finished_jobs_are_skipped(tmp_path, capsys):
    from ti_core.toyworld.concept import Concept, draw_concept
    from ti_core.toyworld.model import builtin_model_path

    images = draw_concept(tmp_path / "images", Concept.parse("blue striped circle"), count=4, seed=0)
    common = {"model": str(builtin_model_path()), "images": str(images), "batch": 4, "validate-every": 0,
              "save-every": 2, "device": "cpu", "init-text": "circle"}
    outs = {name: tmp_path / "words" / f"{name}.safetensors" for name in ("a", "b")}
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({**common, "name": n, "out": str(o), "steps": s}) + "\n"
                            for (n, o), s in zip(outs.items(), (4, 40))))
    state_b = outs["b"].with_name("b.state.safetensors")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "ti_core", "jobs", str(jobs), "--index", "1"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while not state_b.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert state_b.exists() and proc.poll() is None, "job b was not caught between its first save and its end"
        os.kill(proc.pid, signal.SIGKILL)  # preempted
    finally:
        proc.kill()
        proc.communicate()
    assert not report_path_for(outs["b"]).exists()

    assert main(["jobs", str(jobs)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["name"], r["status"], r["outcome"], r["step"]) for r in records] == [
        ("a", "trained", "finished", 4), ("b", "resumed", "finished", 40)]
    assert records[1]["first_step"] >= 2
    assert load_embedding(outs["b"]).metadata["step"] == "40"
    reports = {n: json.loads(report_path_for(o).read_text()) for n, o in outs.items()}
    assert reports["b"]["outcome"] == "finished" and reports["b"]["path"] == str(outs["b"])
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "words").iterdir()}

    assert main(["jobs", str(jobs)]) == 0  # everything done: nothing is trained or written again
    assert [json.loads(line)["status"] for line in capsys.readouterr().out.splitlines()] == ["skipped", "skipped"]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "words").iterdir()} == written


@pytest.mark.slow
def test_jobs_under_torchrun_train_each_word_on_both_processes_and_rank_0_reports(tmp_path):
    from ti_core.toyworld.concept import Concept, draw_concept
    from ti_core.toyworld.model import builtin_model_path

    images = draw_concept(tmp_path / "images", Concept.parse("orange solid cross"), count=4, seed=0)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"model": str(builtin_model_path()), "images": str(images), "name": n,
                                        "out": str(tmp_path / "words" / f"{n}.safetensors"), "steps": 3, "batch": 4,
                                        "validate-every": 3, "validation-samples": 4, "device": "cpu"}) + "\n"
                            for n in ("a", "b")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
                           "ti_core", "jobs", str(jobs)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [(r["name"], r["status"], r["step"]) for r in map(json.loads, done.stdout.splitlines())] == [
        ("a", "trained", 3), ("b", "trained", 3)]  # one line per job: rank 0's
    assert done.stderr.count("device: cpu x 2 processes") == 2
    assert sorted(p.name for p in (tmp_path / "words").iterdir()) == [
        f"{n}.{kind}" for n in ("a", "b") for kind in ("report.json", "safetensors", "state.safetensors")]
