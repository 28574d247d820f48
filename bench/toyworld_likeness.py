"""Which likeness should a picture check score? The features of every check's pictures, read again from a run's
snapshots, and each candidate statistic compared on the same cells: how often it ranks the better of two words
first, and where the trainer's early stop would end the runs and what word they would save had it scored that way.

    # 1. the encoder features of every picture check of the runs (from `run --set picture_check=true --snapshots`)
    OMP_NUM_THREADS=1 .venv/bin/python bench/toyworld_likeness.py features --snapshots bench_out/snap3 \\
        --tag pictures --out bench_out/feats [--shard 0/2]
    # 2. the statistics compared, on the cells judged at every validation (toyworld_early_stop.py --judge-all)
    .venv/bin/python bench/toyworld_likeness.py compare bench_out/pic-*.jsonl bench_out/fidelity-*.jsonl \\
        --tag pictures --same-as defaults --features bench_out/feats [--seeds 0,1]

    # the checks drawn from another prompt too, and both prompts' pictures scored together (4 of each: a check's cost)
    OMP_NUM_THREADS=1 .venv/bin/python bench/toyworld_likeness.py features --snapshots bench_out/snap3 \\
        --tag pictures --out bench_out/featsbare --picture-prompt "a [name]"
    .venv/bin/python bench/toyworld_likeness.py compare ... --features bench_out/feats bench_out/featsbare \\
        --per-folder 4

The features are those of the toy world's image encoder (the judge's feature layers) for the pictures the trainer
draws at each check (the same prompt, seeds and sampler: `features` checks that the mean cosine it recomputes is
the likeness the run recorded), for the init word's pictures (step 0) and for the training pictures.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import types
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toyworld_early_stop import _fid, _read_judged, _records, _snapshot_file, by_concept, report  # noqa: E402


def _mean_cosine(drawn, training, origin):  # the trainer's (picture_check.likeness)
    return float((drawn @ F.normalize(training.mean(0), dim=0)).mean())


def _centred(drawn, training, origin):  # each picture's cosine to the training pictures, seen from the init word's
    direction = F.normalize(training.mean(0) - origin.mean(0), dim=0)
    return float((F.normalize(drawn - origin.mean(0), dim=1) @ direction).mean())


def _direction(drawn, training, origin):  # the mean's move from the init word's pictures, against the training's
    return float(F.cosine_similarity(drawn.mean(0) - origin.mean(0), training.mean(0) - origin.mean(0), dim=0))


def _distance(drawn, training, origin):  # how near the mean feature is to the training pictures'
    return -float((drawn.mean(0) - training.mean(0)).norm())


def _nearest(drawn, training, origin):  # each drawn picture against its nearest training picture
    return float((drawn @ training.T).max(1).values.mean())


STATISTICS = {"mean cosine (the trainer's)": _mean_cosine, "centred": _centred, "direction": _direction,
              "distance": _distance, "nearest": _nearest}  # (every drawn picture against every training picture ranks
# as the mean cosine does: the same sum, over a reference of another length)


def _file(folder: Path, key: str) -> Path:
    return folder / (key.replace(" ", "_").replace(":", "-") + ".pt")


def check_changes(args) -> dict:
    """The TrainConfig fields `features` draws the checks with instead of the trainer's (its --picture-* flags)."""
    given = {"picture_steps": args.picture_steps, "picture_prompt": args.picture_prompt,
             "picture_cfg": args.picture_cfg}
    return {field: value for field, value in given.items() if value is not None}


def features(args) -> int:
    from ti_core.data import load_images
    from ti_core.demo import DemoConfig, training_config
    from ti_core.picture_check import PictureCheck, encode, square_pictures
    from ti_core.toyworld.judge import load_judge
    from ti_core.toyworld.model import load_toy_model
    from ti_core.toyworld.trial import _draw, cell_config, matrix
    from ti_core.train import initial_vectors

    model, judge = load_toy_model(), load_judge()
    encoder = judge.encoder()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    index, count = (int(x) for x in args.shard.split("/"))
    keys = [k[0] for k in model.embedding_keys]
    changes = check_changes(args)
    for cell in [c for c in matrix(styles=()) if c.kind == "concept"][index::count]:
        key = cell.key()
        target, snapshot = _file(out, key), _snapshot_file(Path(args.snapshots), key, {args.tag})
        if target.exists() or snapshot is None:
            continue
        config = training_config(cell_config(cell, DemoConfig()), None, **changes)
        with tempfile.TemporaryDirectory() as tmp:
            images, _ = load_images(_draw(cell, Path(tmp) / "pictures")[0])
        check = PictureCheck(config, encoder, images, model.resolution)
        words = {0: dict(zip(keys, initial_vectors(model, config))), **torch.load(snapshot, weights_only=True)}
        steps = {step: encode(encoder, check.draw(types.SimpleNamespace(model=model, vector_dict=lambda v=v: v)))
                 for step, v in sorted(words.items())}
        training = encode(encoder, square_pictures(images, model.resolution))
        torch.save({"training": training, "steps": steps}, target)
        print(f"{key}: mean cosine at {sorted(steps)[-1]}: {_mean_cosine(steps[max(steps)], training, None):.6f}",
              flush=True)
    return 0


def compare(args) -> int:
    cells = _records(args.files, args.tag, args.same_as)
    _read_judged(cells, Path(args.judged))
    seeds = {int(s) for s in args.seeds.split(",")} if args.seeds else None
    folders = [Path(f) for f in args.features]
    cells = {k: c for k, c in cells.items() if all(_file(folder, k).is_file() for folder in folders)
             and (seeds is None or c["cell"].get("seed") in seeds)
             and all(s in c["points"] for s, _ in c["val_losses"] if s)}
    if not cells:
        raise SystemExit("no cell has both features and a judgement at every validation: run `features`, and the "
                         "early-stop bench with --judge-all")
    loaded = {k: _joined([torch.load(_file(folder, k), weights_only=True) for folder in folders], args.per_folder)
              for k in cells}
    recorded = max(abs(_mean_cosine(f["steps"][s], f["training"], None) - v)
                   for k, f in loaded.items() for s, v in cells[k]["picture_scores"])
    print(f"{len(cells)} cells judged at every validation; the mean cosine from these features differs from the "
          f"recorded likeness by at most {recorded:.1e} (more than ~1e-6: the features were drawn otherwise)")
    rule = [{"patience": args.patience, "fraction": args.fraction}]
    for name, statistic in STATISTICS.items():
        scored = {}
        for key, c in cells.items():
            f = loaded[key]
            scores = [(s, statistic(f["steps"][s], f["training"], f["steps"][0])) for s in sorted(f["steps"])]
            scored[key] = {**c, "picture_scores": scores}
        right, pairs = _ranked(scored)
        print(f"\n{name}: ranks the better of two words (fidelity 25 points apart or more) first in {right} of "
              f"{pairs} pairs ({right / pairs:.0%})")
        for line in report(scored, rule):
            if line.startswith(("rule", "best")):
                print(f"  {line}")
        if args.by_concept:
            for line in by_concept(scored, rule[0]):
                print(f"  {line}")
    return 0


def _joined(features: list, count: int | None) -> dict:
    """One check's pictures drawn from several prompts: the features of the first `count` pictures (None: all) of
    each folder's check at the same step, together (the training pictures' are the same in every folder)."""
    steps = {s: torch.cat([f["steps"][s][:count] for f in features]) for s in features[0]["steps"]}
    return {"training": features[0]["training"], "steps": steps}


def _ranked(cells: dict) -> tuple:
    right = pairs = 0
    for c in cells.values():
        scores = dict(c["picture_scores"])
        for a, b in itertools.combinations(sorted(s for s in scores if s in c["points"]), 2):
            fa, fb = _fid(c["points"][a]), _fid(c["points"][b])
            if abs(fa - fb) >= 0.25:
                pairs += 1
                right += (scores[a] > scores[b]) == (fa > fb)
    return right, pairs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("features", help="the encoder features of every picture check, from the runs' snapshots")
    f.add_argument("--snapshots", required=True, help="the runs' --snapshots folder")
    f.add_argument("--tag", default="pictures", help="the runs' recipe tag (their snapshots are TAG-KEY.pt)")
    f.add_argument("--out", required=True)
    f.add_argument("--shard", default="0/1")
    f.add_argument("--picture-steps", type=int, help="draw the checks' pictures with this many sampling steps "
                   "instead of the trainer's (what a cheaper check would score; `compare` then reads the likeness "
                   "from these features, not the recorded one)")
    f.add_argument("--picture-prompt", help="draw the checks' pictures from this prompt instead of the trainer's "
                   "([name] becomes the word)")
    f.add_argument("--picture-cfg", type=float, help="draw the checks' pictures at this guidance scale instead of "
                   "the trainer's")
    c = sub.add_parser("compare", help="each statistic's ranking and early stop, on the judged cells")
    c.add_argument("files", nargs="+", help="results of bench/toyworld_fidelity.py run")
    c.add_argument("--tag", default="pictures")
    c.add_argument("--same-as", default="defaults")
    c.add_argument("--judged", default="bench_out/judged.jsonl")
    c.add_argument("--features", required=True, nargs="+", help="features folders; several: each check's "
                   "pictures from all of them together (e.g. drawn from two prompts)")
    c.add_argument("--per-folder", type=int, help="with several folders, the first N pictures of each (the same cost "
                   "as one folder's N x folders)")
    c.add_argument("--seeds", help="only these picture seeds, e.g. 2")
    c.add_argument("--by-concept", action="store_true", help="each statistic's table per concept where it stops")
    c.add_argument("--patience", type=int, default=3)
    c.add_argument("--fraction", type=float, default=0.1)
    args = parser.parse_args(argv)
    return features(args) if args.command == "features" else compare(args)


if __name__ == "__main__":
    sys.exit(main())
