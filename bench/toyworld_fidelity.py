"""Fidelity across the toy world: does the trainer's recipe learn every unseen concept, not just the demo's?

    .venv/bin/python bench/toyworld_fidelity.py run --out bench_out/fidelity.jsonl [--seeds 0 1 2] [--pictures 3 5]
        [--pairs "green heart" ...] [--patterns solid striped dotted] [--styles striped dotted] [--at 50,100,200]
        [--steps N] [--samples 32] [--set snr_gamma=5 --set learning_rate=1e-2 ...] [--shard 0/2]
    .venv/bin/python bench/toyworld_fidelity.py summary bench_out/fidelity*.jsonl [--tag T]

`run` trains one word per cell of the matrix (every held-out shape/colour pair x every pattern x seeds x picture
counts, plus style words if asked) with the demo's recipe (`ti_core.demo.DemoConfig`, changed with --set), judges
it at the --at steps, where early stop would have ended it and at the step cap (ti_core.toyworld.trial), and
appends one JSON line per cell; a cell already in the file is skipped, so a stopped run resumes and two shards
(`--shard 0/2` and `--shard 1/2`, one thread each: OMP_NUM_THREADS=1) can share the machine's two cores.
The init word's baseline is measured once per concept. `summary` prints per-cell rows, the minimum and mean over
cells and the spread across seeds, for every judged step and for early stop.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _settings(pairs: list) -> tuple:
    """--set key=value pairs split into DemoConfig fields and TrainConfig overrides."""
    from dataclasses import fields

    from ti_core.demo import DemoConfig
    from ti_core.train import TrainConfig

    demo_fields = {f.name for f in fields(DemoConfig)}
    train_fields = {f.name for f in fields(TrainConfig)}
    demo, train = {}, {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        if key in demo_fields:
            demo[key] = _value(text)
        elif key in train_fields:
            train[key] = _value(text)
        else:
            raise SystemExit(f"--set {pair}: {key!r} is neither a DemoConfig nor a TrainConfig field")
    return demo, train


def _done(path: Path) -> set:
    if not path.exists():
        return set()
    return {(r["tag"], r["key"]) for r in map(json.loads, path.read_text().splitlines()) if r.get("key")}


def _append(path: Path, record: dict) -> None:
    with path.open("a", encoding="utf-8") as f:  # one line per record: a killed run loses at most the cell it ran
        f.write(json.dumps(record) + "\n")


def cmd_run(args) -> int:
    from ti_core.demo import DemoConfig
    from ti_core.toyworld.judge import load_judge
    from ti_core.toyworld.model import load_toy_model
    from ti_core.toyworld.trial import Cell, baseline, matrix, run_cell

    demo, train = _settings(args.set)
    config = replace(DemoConfig(), samples=args.samples, **demo)
    if args.steps:
        config = replace(config, steps=args.steps)
    pairs = None if args.pairs is None else [tuple(p.split()) for p in args.pairs]
    cells = matrix(pairs, args.patterns, args.seeds, args.pictures, args.styles)
    index, count = (int(x) for x in args.shard.split("/"))
    cells = cells[index::count]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _done(out)
    tag = args.tag or ",".join(args.set) or "defaults"
    at = {int(s) for s in args.at.split(",")} if args.at else set()
    model, judge = load_toy_model(), load_judge()
    for cell in cells:
        base_key = f"baseline:{cell.kind}:{cell.what}:{config.init_text}"
        if index == 0 and ("baseline", base_key) not in done:
            base_cell = Cell(cell.kind, cell.what, 4, 0)
            _append(out, {"tag": "baseline", "key": base_key, **baseline(model, judge, base_cell, config)})
            done.add(("baseline", base_key))
        if (tag, cell.key()) in done:
            continue
        snapshots = (Path(args.snapshots) / f"{tag}-{cell.key().replace(' ', '_').replace(':', '-')}.pt"
                     if args.snapshots else None)
        record = run_cell(model, judge, cell, config, at, snapshots, not args.only_at, **train)
        _append(out, {"tag": tag, "key": cell.key(), **record})
        best = max(record["points"].items(), key=lambda kv: kv[1]["reconstruction"] + kv[1]["editability"],
                   default=None)
        print(f"{cell.key():36s} early {record['early_stop']}  best {best}", flush=True)
    return 0


def summarize(records: list, baselines: dict) -> list:
    """Lines of text: per-cell rows, then min / mean over cells and the spread across seeds, per judged step."""
    lines = []
    by_point = defaultdict(list)  # point name -> [(record, scores)]
    # fixed-length rows for the steps every cell was judged at (a constant-rate run passes through them)
    common = set.intersection(*(set(r["points"]) for r in records)) if records else set()
    for r in records:
        for step in common:
            by_point[f"step {int(step):4d}"].append((r, r["points"][step]))
        early = r["early_stop"] or {"step": r["steps"], **r["points"][str(r["steps"])]}
        by_point["early stop"].append((r, early))
    lines.append(f"{'cell':34s} {'steps':>5s} {'early stop':>22s} " + " ".join(
        f"{k:>11s}" for k in sorted(by_point) if k != "early stop"))
    for r in records:
        early = r["early_stop"]
        e = (f"{early['step']:4d}: {100 * early['reconstruction']:3.0f}/{100 * early['editability']:3.0f}"
             if early else f"none: {100 * r['points'][str(r['steps'])]['reconstruction']:3.0f}/"
                           f"{100 * r['points'][str(r['steps'])]['editability']:3.0f}")
        cells = " ".join(f"{100 * s['reconstruction']:5.0f}/{100 * s['editability']:3.0f}"
                         for _, s in sorted(((int(k), v) for k, v in r["points"].items() if k in common)))
        lines.append(f"{r['key']:34s} {r['steps']:5d} {e:>22s} {cells}")
    lines.append("")
    lines.append(f"{'point':12s} {'cells':>5s} {'recon min':>9s} {'mean':>6s} {'edit min':>9s} {'mean':>6s} "
                 f"{'seed spread (max-min), recon/edit':>34s} {'mean steps':>10s}")
    for name in sorted(by_point):
        rows = by_point[name]
        recon = [s["reconstruction"] for _, s in rows]
        edit = [s["editability"] for _, s in rows]
        groups = defaultdict(list)
        for r, s in rows:
            c = r["cell"]
            groups[(c["kind"], c["what"], c["pictures"])].append(s)
        spread_r = max((max(x["reconstruction"] for x in g) - min(x["reconstruction"] for x in g))
                       for g in groups.values())
        spread_e = max((max(x["editability"] for x in g) - min(x["editability"] for x in g))
                       for g in groups.values())
        steps = [s.get("step", int(name.split()[-1]) if name.startswith("step") else 0) for _, s in rows]
        lines.append(f"{name:12s} {len(rows):5d} {100 * min(recon):8.0f}% {100 * sum(recon) / len(recon):5.0f}% "
                     f"{100 * min(edit):8.0f}% {100 * sum(edit) / len(edit):5.0f}% "
                     f"{f'max {100 * spread_r:.0f} / {100 * spread_e:.0f} points':>34s} "
                     f"{sum(steps) / len(steps):10.0f}")
    if baselines:
        lines.append("")
        worst = max(baselines.values(), key=lambda b: max(b["reconstruction"], b["editability"]))
        lines.append(f"baseline (init word), worst of {len(baselines)}: reconstruction "
                     f"{100 * worst['reconstruction']:.0f}%, editability {100 * worst['editability']:.0f}%")
    return lines


def cmd_summary(args) -> int:
    rows, seen = [], set()
    for path in args.files:  # shards may share a file or not; a cell run twice (by two shards) counts once
        for row in (json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()):
            if (row["tag"], row["key"]) not in seen:
                seen.add((row["tag"], row["key"]))
                rows.append(row)
    baselines = {r["key"]: r for r in rows if r["tag"] == "baseline"}
    tags = sorted({r["tag"] for r in rows if r["tag"] != "baseline"})
    for tag in tags if not args.tag else [args.tag]:
        records = [r for r in rows if r["tag"] == tag]
        print(f"== {tag} ({len(records)} cells)")
        for line in summarize(records, baselines):
            print(line)
        print()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="train and judge the cells of the matrix")
    p.add_argument("--out", default="bench_out/fidelity.jsonl")
    p.add_argument("--pairs", nargs="*", help="shape/colour pairs as 'colour shape' (default: the held-out ones; "
                                              "none = style cells only)")
    p.add_argument("--patterns", nargs="*", default=["solid", "striped", "dotted"])
    p.add_argument("--styles", nargs="*", default=[], help="patterns to learn as style words too")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--pictures", nargs="+", type=int, default=[3, 5])
    p.add_argument("--at", default="", help="comma-separated steps to judge besides early stop and the last step")
    p.add_argument("--steps", type=int, help="the step cap (default: the demo's)")
    p.add_argument("--samples", type=int, default=32, help="pictures per measure (default 32)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a DemoConfig or TrainConfig field, e.g. snr_gamma=5 (repeatable)")
    p.add_argument("--tag", help="the name of this recipe in the file (default: the --set values)")
    p.add_argument("--shard", default="0/1", help="i/n: run every n-th cell from the i-th")
    p.add_argument("--only-at", action="store_true", help="judge only the --at steps (not early stop, not the end)")
    p.add_argument("--snapshots", help="a folder to keep the vectors of every validation step in (to judge later)")
    p.set_defaults(run=cmd_run)
    p = sub.add_parser("summary", help="print the tables of a results file")
    p.add_argument("files", nargs="+", help="results files (e.g. one per shard)")
    p.add_argument("--tag", help="only this recipe")
    p.set_defaults(run=cmd_summary)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
