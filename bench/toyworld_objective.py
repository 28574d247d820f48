"""Does the training objective itself prefer the right word? Each kept word of a run (its snapshots) scored by the
loss the trainer minimises, on many fixed draws instead of the validation's 32, beside its judged fidelity: if the
precise loss still ranks a worse word first, no stop rule or keep-best on the loss can find the better one, and
the lever is the objective, not the stop.

    # 1. the precise loss of every snapshot of the cells that miss the bar where the demo's early stop ends them
    OMP_NUM_THREADS=1 .venv/bin/python bench/toyworld_objective.py measure bench_out/pic-*.jsonl \\
        bench_out/fidelity-*.jsonl --tag pictures --same-as defaults --snapshots bench_out/snap3 \\
        --draws 1024,256 --missing --out bench_out/objective-0.jsonl --shard 0/2
    # 2. pairs of words 25 points apart ranked right by each, against the likeness on the same pairs
    .venv/bin/python bench/toyworld_objective.py summary bench_out/pic-*.jsonl bench_out/fidelity-*.jsonl \\
        --tag pictures --same-as defaults --losses bench_out/objective-*.jsonl

The draws are the validation's kind (`DenoisingLoss.fixed`: pictures, crops, captions, noise from one seed,
timesteps spread evenly, Min-SNR weighted as in training), the same for every word of a cell, so differences are
the words'. The cells need every validation judged (`toyworld_early_stop.py --judge-all`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toyworld_early_stop import _read_judged, _records, _snapshot_file, at_bar, stop_and_word  # noqa: E402
from toyworld_likeness import _ranked  # noqa: E402

SEED = 12345  # the precise draws' seed: one the validation (config.seed + ...) never uses


def _judged_cells(args) -> dict:
    cells = _records(args.files, args.tag, args.same_as)
    _read_judged(cells, Path(args.judged))
    return {k: c for k, c in cells.items() if all(s in c["points"] for s, _ in c["val_losses"] if s)}


def _misses(cell: dict) -> bool:
    """Whether the word the run saves where the demo's early stop ends it is under the bar."""
    from ti_core.demo import DemoConfig
    from ti_core.train import TrainConfig

    rule = {"patience": DemoConfig().early_stop, "fraction": TrainConfig.early_stop_fraction}
    return not at_bar(cell["points"][stop_and_word(cell, rule)[1]])


def measure(args) -> int:
    import torch

    from ti_core.data import load_images
    from ti_core.demo import DemoConfig, training_config
    from ti_core.toyworld.model import load_toy_model
    from ti_core.toyworld.trial import _draw, cell_config, matrix
    from ti_core.train import Trainer

    cells = _judged_cells(args)
    if args.missing:
        cells = {k: c for k, c in cells.items() if _misses(c)}
    draws = [int(n) for n in args.draws.split(",")]
    index, count = (int(x) for x in args.shard.split("/"))
    done = set()
    out = Path(args.out)
    if out.is_file():
        done = {json.loads(line)["key"] for line in out.read_text().splitlines() if line.strip()}
    model = load_toy_model()
    keys = [k[0] for k in model.embedding_keys]
    by_key = {c.key(): c for c in matrix(styles=()) if c.kind == "concept"}
    for key in sorted(cells)[index::count]:
        snapshot = _snapshot_file(Path(args.snapshots), key, {args.tag})
        if key in done or snapshot is None:
            continue
        cell = by_key[key]
        config = training_config(cell_config(cell, DemoConfig()), None)
        with tempfile.TemporaryDirectory() as tmp:
            images, _ = load_images(_draw(cell, Path(tmp) / "pictures")[0])
            loss = Trainer(model, images, config, None).loss
        words = torch.load(snapshot, weights_only=True)
        losses = {str(n): {str(s): loss.fixed([v[k] for k in keys], n, SEED) for s, v in sorted(words.items())}
                  for n in draws}
        with out.open("a") as f:
            f.write(json.dumps({"key": key, "losses": losses}) + "\n")
        print(f"{key}: {len(words)} words, {draws} draws", flush=True)
    return 0


def _pairs(cell: dict, scores: dict) -> tuple:
    """(ranked right, pairs): pairs of judged words 25 points apart or more whose lower `scores` is the better."""
    return _ranked({"k": {"points": cell["points"], "picture_scores": [(s, -v) for s, v in scores.items()]}})


def summary(args) -> int:
    cells = _judged_cells(args)
    rows = [json.loads(line) for path in args.losses for line in Path(path).read_text().splitlines() if line.strip()]
    if not rows:
        raise SystemExit("no losses: run `measure` first")
    totals, reachable = {}, 0
    for row in sorted(rows, key=lambda r: r["key"]):
        cell = cells[row["key"]]
        reachable += any(at_bar(p) for s, p in cell["points"].items() if s)
        signals = {f"loss, {n} draws": {int(s): v for s, v in losses.items()} for n, losses in row["losses"].items()}
        signals["loss, the validation's draws"] = {s: v for s, v in cell["val_losses"] if s}
        signals["likeness (negated)"] = {s: -v for s, v in cell["picture_scores"] if s}
        parts = []
        for name, scores in signals.items():
            right, pairs = _pairs(cell, scores)
            total = totals.setdefault(name, [0, 0, 0])
            total[0], total[1] = total[0] + right, total[1] + pairs
            best = min(scores, key=scores.get)
            good = at_bar(cell["points"][best])
            total[2] += good
            parts.append(f"{name} {right}/{pairs}, lowest at {best} {'at' if good else 'under'} the bar")
        print(f"{row['key']}: " + "; ".join(parts))
    print(f"\n{len(rows)} cells; pairs of words 25 points apart (or more) ranked right, and cells whose best-scored "
          "word (any validation step) is at the bar:")
    for name, (right, pairs, good) in totals.items():
        print(f"  {name}: {right} of {pairs} ({right / max(1, pairs):.0%}); {good} of {len(rows)} at the bar")
    print(f"  (cells with a word at the bar at some validation: {reachable} of {len(rows)})")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("measure", "summary"):
        p = sub.add_parser(name)
        p.add_argument("files", nargs="+", help="results of bench/toyworld_fidelity.py run")
        p.add_argument("--tag", default="pictures")
        p.add_argument("--same-as", default="defaults")
        p.add_argument("--judged", default="bench_out/judged.jsonl")
        if name == "measure":
            p.add_argument("--snapshots", required=True, help="the runs' --snapshots folder")
            p.add_argument("--draws", default="1024", help="how many fixed draws, comma-separated (e.g. 1024,256)")
            p.add_argument("--missing", action="store_true", help="only the cells whose word misses the bar where "
                           "the trainer's early stop ends them")
            p.add_argument("--out", required=True)
            p.add_argument("--shard", default="0/1")
        else:
            p.add_argument("--losses", nargs="+", required=True, help="the files `measure` wrote")
    args = parser.parse_args(argv)
    return measure(args) if args.command == "measure" else summary(args)


if __name__ == "__main__":
    sys.exit(main())
