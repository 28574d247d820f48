"""One word on one process against the same command on 2 processes (torchrun, gloo, one CPU thread each): wall time,
training time, the vectors' difference, and which files each run wrote.

    python bench/distributed_speed.py                      # the demo's recipe: batch 8, 150 steps, validation
    python bench/distributed_speed.py --batch 16 --repeats 3

Runs alternate (1, 2, 1, 2, ...) so both see the same load on a shared machine; the load average before and after is
printed because other work on the same cores slows the 2-process runs more (they need both cores at once, and each
step waits for the slower one). The CPU seconds of all processes (torchrun's too) tell whether the work is shared
or repeated whatever the load: shared, 2 processes spend about what 1 does, plus a second process's start. A
1-step run of each gives the start's CPU seconds; what is left is the steps', and 1 process's steps against half of
2 processes' steps is the speedup the steps would have on two free cores.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def command(processes: int, args, images: Path, out: Path) -> list:
    from ti_core.toyworld.model import builtin_model_path

    launcher = [sys.executable, "-m"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", "-m"]
    return launcher + [
        "ti_core", "train", "--model", str(builtin_model_path()), "--images", str(images), "--name", "w",
        "--init-text", "heart", "--template", "captions", "--crop", "center", "--device", "cpu",
        "--steps", str(args.steps), "--batch", str(args.batch), "--validate-every", str(args.validate_every),
        "--validation-samples", "32", "--save-every", "50", "--seed", "0", "--out", str(out)]


def run(processes: int, args, images: Path, folder: Path) -> dict:
    out = folder / "w.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(command(processes, args, images, out), env=env, cwd=ROOT, capture_output=True, text=True)
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if done.returncode:
        raise SystemExit(f"{processes} process(es) failed:\n{done.stderr[-3000:]}")
    trained = float(re.search(r" in ([0-9.]+) s;", done.stdout).group(1))
    return {"wall": wall, "train": trained, "cpu": cpu, "out": out, "files": sorted(p.name for p in folder.iterdir())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--validate-every", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each (default 2)")
    args = parser.parse_args()

    from ti_core.embeddings import load_embedding
    from ti_core.toyworld.concept import Concept, draw_concept

    print(f"toy model, green dotted heart (4 pictures), batch {args.batch}, {args.steps} steps, validation every "
          f"{args.validate_every} (32 draws), OMP_NUM_THREADS=1, {os.cpu_count()} cores; "
          f"load average before {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = draw_concept(tmp / "images", Concept.parse("green dotted heart"), count=4, seed=0)
        results = {1: [], 2: []}
        for i in range(args.repeats):
            for n in (1, 2):
                folder = tmp / f"run{n}-{i}"
                folder.mkdir()
                results[n].append(run(n, args, images, folder))
                r = results[n][-1]
                print(f"  {n} process(es), run {i + 1}: wall {r['wall']:.1f} s, training {r['train']:.1f} s, "
                      f"CPU {r['cpu']:.1f} s, files {', '.join(r['files'])}")
        start = {}
        for n in (1, 2):  # the same command with 1 step: start, model load, latents, 2 validations, saves
            folder = tmp / f"start{n}"
            folder.mkdir()
            start[n] = run(n, argparse.Namespace(**{**vars(args), "steps": 1}), images, folder)["cpu"]
            print(f"  {n} process(es), 1 step: CPU {start[n]:.1f} s")
        one, two = (load_embedding(results[n][0]["out"]).vectors["emb_params"] for n in (1, 2))
        diff = float((one - two).abs().max())
        rows = []
        for key, label in (("train", "training (the run's own seconds)"), ("wall", "wall (start to exit)"),
                           ("cpu", "CPU, all processes")):
            a, b = (statistics.median(r[key] for r in results[n]) for n in (1, 2))
            rows.append(f"  {label:34s} 1 process {a:6.1f} s   2 processes {b:6.1f} s   ratio {a / b:.2f}x")
        steps = [statistics.median(r["cpu"] for r in results[n]) - start[n] for n in (1, 2)]
        rows.append(f"  {'CPU of the steps alone':34s} 1 process {steps[0]:6.1f} s   2 processes "
                    f"{steps[1]:6.1f} s   per process {steps[1] / 2:.1f} s: {2 * steps[0] / steps[1]:.2f}x on two "
                    "free cores")
        shutil.rmtree(tmp / "images")
    print(f"medians over {args.repeats} run(s) each; load average after {os.getloadavg()[0]:.2f}")
    print("\n".join(rows))
    print(f"  vectors, 1 against 2 processes: max |difference| {diff:.2e}")


if __name__ == "__main__":
    main()
