"""Many words through the jobs runner on the built-in toy world: 4 concepts drawn at random (one pattern drawn for
each shape/colour pair the model never saw), one job line each with the demo's recipe, run by
`python -m ti_core jobs`, then each word judged as the demo judges it (reconstruction and editability over
--samples pictures, against the init word's baseline).

    python bench/toyworld_words.py [--out bench_out/words] [--seed 0] [--samples 32] [--processes 2]

A rerun skips the words already trained (their NAME.report.json is there) and judges them again; --processes N runs
the jobs under torchrun, each word data parallel over N processes (one CPU thread each).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def drawn_concepts(seed: int) -> list:
    from ti_core.toyworld import render
    from ti_core.toyworld.concept import Concept

    rng = random.Random(seed)
    return [Concept(shape, colour, rng.choice(render.PATTERNS)) for colour, shape in sorted(render.HELD_OUT)]


def write_jobs(out: Path, seed: int) -> list:
    """The jobs file and, per word, its DemoConfig (pictures drawn on the first run only)."""
    from ti_core.demo import DemoConfig, resolved, training_config
    from ti_core.jobs import job_options
    from ti_core.toyworld.concept import draw_concept
    from ti_core.toyworld.model import builtin_model_path

    words, lines = [], []
    for concept in drawn_concepts(seed):
        config = resolved(DemoConfig(concept=concept, seed=seed))
        images = out / "images" / config.name
        if not images.is_dir():
            draw_concept(images, concept, count=config.pictures, seed=seed)
        train = training_config(config, out / "words" / f"{config.name}.safetensors", preview_every=0)
        lines.append(json.dumps(job_options(train, model=str(builtin_model_path()), images=str(images),
                                            device="cpu")))
        words.append(config)
    (out / "words.jsonl").write_text("\n".join(lines) + "\n")
    return words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench_out/words")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=32, help="pictures per measure (the demo's 32)")
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    words = write_jobs(out, args.seed)
    jobs = out / "words.jsonl"
    print(f"{len(words)} words: {', '.join(c.concept.words for c in words)}; jobs in {jobs}")

    launcher = [sys.executable, "-m"] if args.processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.processes}", "-m"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run([*launcher, "ti_core", "jobs", str(jobs)], env=env, cwd=ROOT, capture_output=True,
                          text=True)
    if done.returncode:
        raise SystemExit(f"the jobs failed:\n{done.stderr[-3000:]}")
    records = {r["name"]: r for r in map(json.loads, done.stdout.splitlines())}
    print(f"jobs: {time.perf_counter() - started:.1f} s ({args.processes} process(es)); "
          + ", ".join(f"{n} {r['status']}" for n, r in records.items()))

    import torch

    from ti_core.demo import measure
    from ti_core.embeddings import load_embedding
    from ti_core.jobs import report_path_for
    from ti_core.toyworld.judge import load_judge
    from ti_core.toyworld.model import load_toy_model

    torch.set_num_threads(1)
    model, judge = load_toy_model(), load_judge()
    print(f"judged as the demo does, {args.samples} pictures per measure (shape, colour and pattern right; "
          "editability also the asked background)")
    print(f"  {'word':22s} {'concept':22s} {'steps':>5s} {'outcome':>10s} {'train s':>7s}  "
          f"{'reconstruction':>14s} {'editability':>11s}   baseline (init word)")
    rows = []
    for config in words:
        config = replace(config, samples=args.samples)
        path = out / "words" / f"{config.name}.safetensors"
        report = json.loads(report_path_for(path).read_text())
        learned = measure(model, judge, f"embedding:{config.name}", config.concept, config,
                          [load_embedding(path, name=config.name)])
        base = measure(model, judge, config.init_text, config.concept, config)
        rows.append((learned["reconstruction"], learned["editability"], base["reconstruction"], base["editability"]))
        print(f"  {config.name:22s} {config.concept.words:22s} {report['step']:5d} {report['outcome']:>10s} "
              f"{report['seconds']:7.1f}  {learned['reconstruction']:14.0%} {learned['editability']:11.0%}   "
              f"{base['reconstruction']:.0%} / {base['editability']:.0%} ({config.init_text!r})")
    means = [sum(r[i] for r in rows) / len(rows) for i in range(4)]
    print(f"  {'mean':22s} {'':22s} {'':5s} {'':>10s} {'':7s}  {means[0]:14.0%} {means[1]:11.0%}   "
          f"{means[2]:.0%} / {means[3]:.0%}")


if __name__ == "__main__":
    main()
