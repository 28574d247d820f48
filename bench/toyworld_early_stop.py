"""Does early stopping on the validation loss keep the fidelity of a fixed-step run, in fewer steps?

    .venv/bin/python bench/toyworld_early_stop.py [--steps 300] [--patience 3] [--samples 64] [--seeds 0 1]

For each seed: trains the demo concept on the built-in toy-world model for the full number of steps, and again
with early stopping (a validation every 25 steps, stop after --patience validations without a 0.2% better loss),
then measures both embeddings with the judge (reconstruction and editability, --samples pictures each). Prints
one line per run and the ratios; takes a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run(config, out: Path) -> dict:
    from ti_core.demo import measure
    from ti_core.embeddings import load_embedding
    from ti_core.toyworld.concept import draw_concept
    from ti_core.toyworld.judge import load_judge
    from ti_core.toyworld.model import load_toy_model
    from ti_core.train import TrainConfig, train

    model, judge = load_toy_model(), load_judge()
    images = draw_concept(out / "images", config.concept, seed=config.seed)
    target = out / f"{config.name}-{config.early_stop}.safetensors"
    result = train(model, images, TrainConfig(
        name=config.name, init_text=config.init_text, steps=config.steps, learning_rate=config.learning_rate,
        batch_size=config.batch_size, crop="center", template="captions", save_every=0,
        validate_every=config.validate_every, validation_samples=config.validation_samples,
        early_stop=config.early_stop, seed=config.seed, output=str(target)))
    scores = measure(model, judge, f"embedding:{config.name}", config.concept, config,
                     [load_embedding(target, name=config.name)])
    return {"steps": result.steps_done, "seconds": round(result.seconds, 1), "early_stopped": result.early_stopped,
            "reconstruction": scores["reconstruction"], "editability": scores["editability"],
            "val_losses": [[s, round(v, 5)] for s, v in result.val_losses]}


def main() -> int:
    from ti_core.demo import DemoConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=DemoConfig.steps)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=None, help="step cap of the early-stop run (default --steps)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            base = replace(DemoConfig(), steps=args.steps, samples=args.samples, seed=seed)
            for early in (0, args.patience):
                started = time.perf_counter()
                config = replace(base, early_stop=early, steps=(args.max_steps or args.steps) if early else args.steps)
                row = {"seed": seed, "early_stop": early, **run(config, Path(tmp) / str(seed))}
                row["wall"] = round(time.perf_counter() - started, 1)
                rows.append(row)
                print(json.dumps(row), flush=True)
    for seed in args.seeds:
        full, early = [r for r in rows if r["seed"] == seed]
        print(f"seed {seed}: early stop at step {early['steps']} of {full['steps']} "
              f"({early['steps'] / full['steps']:.0%} of the steps); reconstruction {early['reconstruction']:.0%} vs "
              f"{full['reconstruction']:.0%} ({early['reconstruction'] / max(full['reconstruction'], 1e-9):.0%}), "
              f"editability {early['editability']:.0%} vs {full['editability']:.0%} "
              f"({early['editability'] / max(full['editability'], 1e-9):.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
