"""Early stop against fixed-length runs, across the fidelity matrix: does a stop rule keep the word's fidelity in
fewer steps, and does it ever stop a run that continuing would make 10 points better?

    .venv/bin/python bench/toyworld_early_stop.py bench_out/trace-*.jsonl bench_out/fidelity-*.jsonl \\
        [--rule patience=2,fraction=0.05 ...] [--judge [--snapshots bench_out/snap] [--shard 0/2]] [--keep-margin 1]

Input: records of `bench/toyworld_fidelity.py run` for the same cells and recipe (one run per cell passes through
every shorter fixed-length run: constant learning rate, and validation draws never touch the training draws),
with their validation losses, the steps judged there, and (with `run --snapshots`) the vectors at every
validation. For each rule (`ti_core.train_callbacks.plateaued` with its `patience` and `fraction`), the step where
it would stop each cell is found from the validation losses; with --judge, a step no record judged is judged
(from the snapshots, or by training the cell again up to it) and cached in --judged. Printed per rule: mean and
spread of stop steps, the fidelity at the stop against the best judged fixed length, and every cell where a later
judged step is 10 points better in reconstruction or editability. With --keep-margin, the runs are read as if
they had kept their words with that `picture_keep_margin` (from each check picture's cosine, which runs record since
the option exists), and --judge judges every word such a run would save. With --every C, runs that validated every
K steps (C a multiple of K) are read as if they had validated every C steps: checks and validations draw the same
pictures and noise whenever they run and never touch the training draws, so that is exactly the coarser run.
With --picture-samples N, runs whose checks drew more pictures are read as if each drew its first N (one batch from
one seed: the first N pictures of a larger batch, within 2e-6 per pixel).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ti_core.toyworld.trial import kept_step  # noqa: E402  (the word a run with picture checks saves)
from ti_core.train_callbacks import plateau_step as stop_step  # noqa: E402  (the trainer's own rule)

RULE_FIELDS = ("patience", "fraction")
BAR = {"reconstruction": 0.85, "editability": 0.90}  # the minimum for a cell


def at_bar(scores: dict) -> bool:
    return all(scores[k] >= bar for k, bar in BAR.items())


def _records(paths: list, tag: str | None = None, same_as: str | None = None) -> dict:
    """key -> {"cell", "val_losses", "steps", "points", "overrides", "run_tags", "picture_scores"}: every judged
    point of a cell under the recipe `tag` (None: the default recipe, whatever its runs were tagged) merged over the
    files (runs of the same cell and recipe are the same run: the trainer is deterministic on one thread). With
    `same_as` (a recipe whose runs train exactly as `tag`'s, e.g. the defaults for runs that only add picture
    checks), that recipe's judged points are merged too, where its validation losses are the same."""
    cells, twins = {}, defaultdict(list)
    for path in paths:
        for row in (json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()):
            if row["tag"] == "baseline":
                continue
            if same_as and (row["tag"] == same_as or (same_as == "defaults" and not row.get("overrides"))):
                twins[row["key"]].append(row)
            if row["tag"] != tag if tag else row.get("overrides"):
                continue
            cell = cells.setdefault(row["key"], {"cell": row["cell"], "val_losses": row["val_losses"],
                                                 "steps": row["steps"], "points": {}, "tag": tag or "defaults",
                                                 "overrides": row.get("overrides", {}), "run_tags": set(),
                                                 "picture_scores": row.get("picture_scores") or [],
                                                 "kept_steps": dict(map(tuple, row.get("kept_steps") or [])),
                                                 "picture_cosines": dict(map(tuple,
                                                                             row.get("picture_cosines") or []))})
            cell["run_tags"].add(row["tag"])
            if cell["val_losses"] != row["val_losses"]:
                raise SystemExit(f"{row['key']}: two runs with different validation losses ({path}): not the same "
                                 "recipe; pass files of one recipe only")
            cell["picture_scores"] = cell["picture_scores"] or row.get("picture_scores") or []  # from any run of it
            _merge_points(cell, row)
    for key, rows in twins.items():
        for row in rows:
            if key in cells and row["tag"] != cells[key]["tag"]:
                if row["val_losses"] != cells[key]["val_losses"]:
                    raise SystemExit(f"{key}: the {same_as} run's validation losses differ from the {tag} run's: "
                                     "they do not train alike; drop --same-as")
                _merge_points(cells[key], row)
                cells[key]["run_tags"].add(row["tag"])
    return cells


def every(cells: dict, steps: int) -> dict:
    """The cells read as if their runs had validated (and checked pictures) every `steps` steps: the validations,
    likeness and check pictures' cosines at those steps only, and the keep decisions made again over them (the
    best-scored word, as the trainer keeps it; the recorded decisions saw the checks in between)."""
    def coarse(pairs):
        return [pair for pair in pairs if pair[0] % steps == 0]

    out = {}
    for key, c in cells.items():
        own = c["val_losses"][1][0] - c["val_losses"][0][0]
        if steps % own:
            raise SystemExit(f"--every {steps}: {key} validated every {own} steps; give a multiple of that")
        out[key] = {**c, "val_losses": coarse(c["val_losses"]), "picture_scores": coarse(c["picture_scores"]),
                    "picture_cosines": {s: v for s, v in c["picture_cosines"].items() if s % steps == 0},
                    "kept_steps": {}}
    return out


def fewer_pictures(cells: dict, count: int) -> dict:
    """The cells read as if each picture check had drawn only its first `count` pictures: a check draws its pictures
    as one batch from one seed, so a smaller batch draws the first pictures of the larger one (the same within 2e-6
    per pixel on CPU). The likeness is the mean of those pictures' recorded cosines, and the keep decisions are made
    again over it. Runs recorded before check cosines were kept are skipped."""
    out = {}
    for key, c in cells.items():
        cosines = c["picture_cosines"]
        if not cosines:
            continue
        drawn = min(map(len, cosines.values()))
        if count > drawn:
            raise SystemExit(f"--picture-samples {count}: {key} drew {drawn} a check")
        out[key] = {**c, "kept_steps": {}, "picture_cosines": {s: v[:count] for s, v in cosines.items()},
                    "picture_scores": [(s, sum(cosines[s][:count]) / count) for s, _ in c["picture_scores"]]}
    return out


def _merge_points(cell: dict, row: dict) -> None:
    cell["points"].update({int(k): v for k, v in row["points"].items()})
    early = row.get("early_stop") or {}
    if "reconstruction" in early:
        word = early.get("kept_step", early["step"])  # with picture checks, the word saved at the stop
        cell["points"][word] = {k: early[k] for k in ("reconstruction", "editability")}


def stop_and_word(cell: dict, rule: dict) -> tuple:
    """(the step where `rule` ends the cell's run, the step of the word it saves): the same, unless the run checked
    pictures, which saves the best-scored word up to its stop."""
    scores = cell.get("picture_scores") or []
    stop = stop_step(cell["val_losses"], **rule, picture_scores=scores) or cell["steps"]
    return stop, saved_at(cell, stop)


def _snapshot_file(folder: Path, key: str, tags) -> Path | None:
    """The snapshots `run --snapshots` kept of `key` under one of the runs' `tags` (never another recipe's)."""
    name = key.replace(" ", "_").replace(":", "-")
    return next((path for tag in sorted(tags) if (path := folder / f"{tag}-{name}.pt").is_file()), None)


def _judge_missing(cells: dict, wanted: dict, snapshots: Path | None, judged_path: Path, shard=(0, 1)) -> None:
    """Judge every (key, step) in `wanted` that no record judged: from the run's snapshots when there are some,
    else by training the cell again up to the last such step (a shorter fixed-length run of the same recipe is a
    prefix of the long one: checked on the validation losses). Results are cached in `judged_path`."""
    missing = defaultdict(set)
    for key, steps in sorted(wanted.items())[shard[0]::shard[1]]:
        missing[key] |= {s for s in steps if s not in cells[key]["points"]}
    missing = {k: v for k, v in missing.items() if v}
    if not missing:
        return
    from dataclasses import replace

    from ti_core.demo import DemoConfig
    from ti_core.toyworld.judge import load_judge
    from ti_core.toyworld.model import load_toy_model
    from ti_core.toyworld.trial import Cell, judge_snapshots, run_cell

    model, judge = load_toy_model(), load_judge()
    config = DemoConfig(samples=16)
    for key, steps in missing.items():
        c = cells[key]
        path = _snapshot_file(snapshots, key, c["run_tags"]) if snapshots else None
        if path:
            scores = judge_snapshots(model, judge, Cell(**c["cell"]), config, path, sorted(steps))
        else:
            record = run_cell(model, judge, Cell(**c["cell"]), replace(config, steps=max(steps)), set(steps),
                              judge_end=False, **c["overrides"])
            if record["val_losses"] != c["val_losses"][:len(record["val_losses"])]:
                raise SystemExit(f"{key}: retrained to step {max(steps)}, its validation losses differ from the "
                                 "record's: not the same run (another thread count or version?)")
            scores = record["points"]
        for step, s in scores.items():
            c["points"][int(step)] = s
            with judged_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "tag": c["tag"], "step": int(step), "scores": s}) + "\n")
        print(f"{key}: judged at {sorted(int(s) for s in scores)}", file=sys.stderr, flush=True)


def _read_judged(cells: dict, judged_path: Path) -> None:
    for path in judged_path.parent.glob(judged_path.name.replace(".jsonl", "*.jsonl")):
        for row in map(json.loads, path.read_text().splitlines()):
            cell = cells.get(row["key"])
            # cached before tags were kept: the defaults; a twin recipe's (--same-as) count as the cell's own
            if cell and row.get("tag", "defaults") in cell["run_tags"] | {cell["tag"]}:
                cell["points"][row["step"]] = row["scores"]


def _fid(scores: dict) -> float:
    return (scores["reconstruction"] + scores["editability"]) / 2


def saved_at(cell: dict, stop: int) -> int | None:
    """The step of the word a run of this cell saves when it ends at `stop`: the last step's, unless the run checked
    pictures, which saves the best-scored word up to there."""
    scores = cell.get("picture_scores") or []
    if not scores:
        return stop
    if cell.get("kept_steps") and "keep_margin" not in cell:  # the run's own decisions, where it recorded them
        return cell["kept_steps"][max(s for s in cell["kept_steps"] if s <= stop)]
    return kept_step(scores, stop, cell.get("picture_cosines"), cell.get("keep_margin", 0.0))


def report(cells: dict, rules: list, samples: int = 16) -> list:
    """Per rule: the mean stop against the best fixed length (a fixed-length run of the same recipe, judged on the
    word it saves: with picture checks its best-scored word), the fidelity kept, and the cells that continuing would
    make 10 points better, read two ways: a later step's word (any later step, whether a run saves it or not) and
    a later stop's (the word the run would save had it stopped at a later validation: the same reading without
    picture checks)."""
    lines = []
    # a fixed length counts where every cell's word at that length is judged (with picture checks, the word the run
    # saves there, whichever step it is from)
    fixed = sorted(set.intersection(*({n for n in {*c["points"], *(s for s, _ in c["val_losses"] if s)}
                                       if saved_at(c, n) in c["points"]} for c in cells.values())))
    fixed_fid = {n: statistics.mean(_fid(c["points"][saved_at(c, n)]) for c in cells.values()) for n in fixed}
    for length in fixed:
        fids = [_fid(c["points"][saved_at(c, length)]) for c in cells.values()]
        lines.append(f"fixed {length:4d} steps: fidelity mean {100 * fixed_fid[length]:5.1f}%, "
                     f"min {100 * min(fids):3.0f}%")
    best_length = max(fixed, key=lambda n: (fixed_fid[n], -n))
    lines.append(f"best fixed length: {best_length} steps (mean fidelity {100 * fixed_fid[best_length]:.1f}%)")
    seer = [_foresight(c, samples) for c in cells.values()]
    if all(step is not None for step in seer):
        lines.append(f"a rule that could see the judge's verdicts ahead: mean stop {statistics.mean(seer):.0f} steps "
                     f"({statistics.mean(seer) / best_length:.0%} of {best_length}), the earliest validation after "
                     f"which no later stop saves a word 10 points better; {sum(s > best_length / 2 for s in seer)} "
                     f"cells after half of {best_length}")
    for rule in rules:
        steps, fids, bests, regrets, stop_regrets = [], [], [], [], []
        for key, c in sorted(cells.items()):
            step, word = stop_and_word(c, rule)
            steps.append(step)
            scores = c["points"].get(word)
            if scores is None:
                continue
            fids.append(_fid(scores))
            bests.append(_fid(c["points"][saved_at(c, best_length)]))
            later_steps = [(n, s) for n, s in sorted(c["points"].items()) if n > step]
            for later, found in ((later_steps, regrets), (_later_stops(c, step), stop_regrets)):
                regret = _regret(key, step, word, scores, later, samples)
                if regret:
                    found.append(regret)
        name = ",".join(f"{k}={v}" for k, v in rule.items())
        mean_steps = statistics.mean(steps)
        kept = statistics.mean(fids) / statistics.mean(bests) if fids else float("nan")
        lines.append(f"rule {name}: mean stop {mean_steps:.0f} steps ({mean_steps / best_length:.0%} of "
                     f"{best_length}; range {min(steps)}-{max(steps)}), fidelity {100 * statistics.mean(fids):.1f}% "
                     f"= {kept:.1%} of the best fixed length on the same {len(fids)}/{len(steps)} judged cells, "
                     f"{len(regrets)} cells 10 points better later ({sum(b for b, _ in regrets)} beyond the "
                     f"judge's noise); by a later stop: {len(stop_regrets)} "
                     f"({sum(b for b, _ in stop_regrets)} beyond the judge's noise)")
        lines.extend(f"    {text}" for _, text in regrets)
        if stop_regrets != regrets:
            lines.append("  by a later stop (the word the run would save had it stopped there):")
            lines.extend(f"    {text}" for _, text in stop_regrets)
    return lines


def _later_words(cell: dict, stop_word: tuple) -> set:
    """The steps of the words the run would save had it stopped at a validation after `stop_word`'s stop, when its
    word (judged) leaves room for one 10 points better in reconstruction or editability; else none."""
    step, word = stop_word
    scores = cell["points"].get(word)
    if scores is None or all(scores[k] > 0.9 + 1e-9 for k in BAR):
        return set()
    return {word for _, word in _saved_after(cell, step)}


def _saved_after(cell: dict, step: int) -> list:
    """(validation, the step of the word the run would save had it stopped there) for each validation after `step`."""
    return [(n, saved_at(cell, n)) for n, _ in cell["val_losses"] if n > step]


def _later_stops(cell: dict, step: int) -> list:
    """(step, scores) of the word the run would save had it stopped at each later validation (those judged)."""
    return [(n, cell["points"][word]) for n, word in _saved_after(cell, step) if word in cell["points"]]


def _foresight(cell: dict, samples: int) -> int | None:
    """The earliest validation step at which stopping has no regret by a later stop (the run's last step if every
    earlier one has); None when a step needed is not judged."""
    steps = [s for s, _ in cell["val_losses"] if s]
    for i, step in enumerate(steps):
        word = saved_at(cell, step)
        later = [(n, cell["points"].get(saved_at(cell, n))) for n in steps[i + 1:]]
        if word not in cell["points"] or any(s is None for _, s in later):
            if word == 0:  # the init word (step 0 kept): never judged, never a stop to keep
                continue
            return None
        if _regret("", step, word, cell["points"][word], later, samples) is None:
            return step
    return cell["steps"]


def _regret(key: str, step: int, word: int, scores: dict, later: list, samples: int) -> tuple | None:
    """(beyond the judge's noise, what) when one of the `later` (step, scores) is 10 points better than `scores`
    in reconstruction or editability; None otherwise."""
    gains = [(max(s["reconstruction"] - scores["reconstruction"], s["editability"] - scores["editability"]), n, s)
             for n, s in later]
    gain, n, s = max(gains, key=lambda g: g[0], default=(0.0, None, None))
    if gain < 0.10 - 1e-9:
        return None
    beyond = _beyond_noise(scores, s, samples)
    saved = "" if word == step else f" (the word of step {word})"
    return beyond, (f"{key} stops at {step} with {100 * scores['reconstruction']:.0f}/"
                    f"{100 * scores['editability']:.0f}{saved}; at {n}: {100 * s['reconstruction']:.0f}/"
                    f"{100 * s['editability']:.0f}" + ("" if beyond else " (within the judge's noise)"))


def by_concept(cells: dict, rule: dict) -> list:
    """Per concept (over its seeds and picture counts): reconstruction and editability, min / mean, where `rule`
    stops, and how many cells reach the bar (>= 85 % and >= 90 %)."""
    groups = defaultdict(list)
    for c in cells.values():
        scores = c["points"].get(stop_and_word(c, rule)[1])
        if scores is not None:
            groups[c["cell"]["what"]].append(scores)
    lines = ["| concept | cells | reconstruction min / mean | editability min / mean | at the bar |",
             "|---|---|---|---|---|"]
    everything = [scores for rows in groups.values() for scores in rows]
    for what, rows in [*sorted(groups.items()), ("all", everything)]:
        recon = [100 * s["reconstruction"] for s in rows]
        edit = [100 * s["editability"] for s in rows]
        bar = sum(map(at_bar, rows))
        lines.append(f"| {what} | {len(rows)} | {min(recon):.0f} / {statistics.mean(recon):.0f} % | "
                     f"{min(edit):.0f} / {statistics.mean(edit):.0f} % | {bar} |")
    return lines


def grid(cells: dict, samples: int = 16) -> list:
    """Separate patiences and fractions for the loss and the likeness (2-4 validations each, fractions 0.05, 0.1,
    0.2: 81 rules the trainer does not offer), each read as `report` reads a rule: mean stop, the fidelity kept
    against the 300-step runs' saved words, the cells a later stop would make 10 points better, the cells at the
    bar. Sorted by mean stop."""
    from ti_core.train_callbacks import plateaued

    values = [(p, f) for p in (2, 3, 4) for f in (0.05, 0.1, 0.2)]
    rows = []
    for (loss_p, loss_f), (like_p, like_f) in itertools.product(values, values):
        steps, fids, bests, regrets, beyond, bar = [], [], [], 0, 0, 0
        for key, c in sorted(cells.items()):
            scores = dict(c.get("picture_scores") or [])
            seen = [step for step, _ in c["val_losses"]]
            stop = next((step for i, step in enumerate(seen)
                         if plateaued([loss for _, loss in c["val_losses"][:i + 1]], loss_p, loss_f)
                         and plateaued([-scores[s] for s in seen[:i + 1]], like_p, like_f)), c["steps"])
            word = saved_at(c, stop)
            if word not in c["points"] or saved_at(c, c["steps"]) not in c["points"]:
                continue
            got = c["points"][word]
            steps.append(stop)
            fids.append(_fid(got))
            bests.append(_fid(c["points"][saved_at(c, c["steps"])]))
            bar += at_bar(got)
            regret = _regret(key, stop, word, got, _later_stops(c, stop), samples)
            regrets += regret is not None
            beyond += bool(regret and regret[0])
        mean, kept = statistics.mean(steps), statistics.mean(fids) / statistics.mean(bests)
        rows.append((mean, f"loss {loss_p} under {loss_f:.0%}, likeness {like_p} under {like_f:.0%}: mean stop "
                           f"{mean:.0f}, fidelity {kept:.1%} of the last steps' saved words, {regrets} cells a later "
                           f"stop makes 10 points better ({beyond} beyond noise), {bar}/{len(steps)} at the bar"))
    return [text for _, text in sorted(rows)]


def why(cells: dict, rule: dict, snapshots: Path, samples: int = 16) -> list:
    """For each cell whose saved word misses the bar where `rule` stops: what the judge sees in its pictures instead
    (the attributes drawn wrong, counted over the reconstruction and the editability pictures, with the values
    drawn), drawn again from the run's snapshot with the judge's own prompts and seeds."""
    from collections import Counter

    import torch

    from ti_core.demo import DemoConfig
    from ti_core.embeddings import Embedding
    from ti_core.toyworld.concept import Concept
    from ti_core.toyworld.judge import load_judge
    from ti_core.toyworld.model import load_toy_model
    from ti_core.toyworld.scoring import concept_prompts, judge_prompts

    model, judge, config = load_toy_model(), load_judge(), DemoConfig()
    lines = []
    for key, c in sorted(cells.items()):
        step, word = stop_and_word(c, rule)
        scores = c["points"].get(word)
        path = _snapshot_file(snapshots, key, c["run_tags"])
        if scores is None or c["cell"].get("kind") != "concept" or not path or at_bar(scores):
            continue
        vectors = torch.load(path, weights_only=True)[word]
        concept = Concept.parse(c["cell"]["what"])
        recon, edits = concept_prompts("embedding:w", concept, samples)
        drawn = judge_prompts(model, judge, recon, edits, [Embedding("w", vectors)], cfg=config.cfg,
                              steps=config.sample_steps, seed=c["cell"]["seed"])
        parts = []
        for name, prompts, images in (("reconstruction", recon, drawn["images"][0]),
                                      ("editability", edits, drawn["images"][1])):
            wrong = Counter(f"{k} {label[k]}" for label, (_, wanted) in zip(judge.classify(images), prompts)
                            for k, v in wanted.items() if label[k] != v)
            parts.append(f"{name} {100 * scores[name]:.0f} %: " + (", ".join(
                f"{what} x{n}" for what, n in wrong.most_common()) or "nothing wrong"))
        lines.append(f"{key} (the word of step {word}, stopped at {step}): " + "; ".join(parts))
        print(lines[-1], file=sys.stderr, flush=True)
    return lines


def _beyond_noise(a: dict, b: dict, samples: int) -> bool:
    """Whether b is better than a by more than two standard errors of the difference of two judged fractions
    (each over `samples` pictures), in reconstruction or editability."""
    for k in ("reconstruction", "editability"):
        se = ((a[k] * (1 - a[k]) + b[k] * (1 - b[k])) / samples) ** 0.5
        if b[k] - a[k] > 2 * max(se, 0.5 / samples):
            return True
    return False


def _rule(text: str) -> dict:
    values = dict(pair.split("=") for pair in text.split(","))
    if set(values) != set(RULE_FIELDS):
        raise SystemExit(f"--rule {text!r}: give exactly {', '.join(RULE_FIELDS)}")
    return {"patience": int(values["patience"]), "fraction": float(values["fraction"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="results of bench/toyworld_fidelity.py run (one recipe)")
    parser.add_argument("--tag", help="the recipe to read (the fidelity bench's --tag, e.g. vector_norm=fixed; "
                        "default: the default recipe's runs)")
    parser.add_argument("--same-as", help="a recipe whose runs train exactly as --tag's (checked on the validation "
                        "losses), whose judged steps count too, e.g. defaults for runs that only add picture checks")
    parser.add_argument("--rule", action="append", type=_rule, help="patience=N,fraction=F (repeatable; default: "
                                                                    "the trainer's default rule)")
    parser.add_argument("--snapshots", help="the --snapshots folder of the runs, to judge steps not judged yet")
    parser.add_argument("--judged", default="bench_out/judged.jsonl",
                        help="cache of the steps judged here (judged*.jsonl beside it are read too: one per shard)")
    parser.add_argument("--judge", action="store_true", help="judge the steps where the rules stop that no record "
                        "judged (from --snapshots, else by training again up to them)")
    parser.add_argument("--judge-all", action="store_true", help="judge every validation step of every cell (from "
                        "--snapshots): every fixed length becomes a complete column, and any rule reads offline")
    parser.add_argument("--by-concept", action="store_true", help="a table per concept where the first rule stops")
    parser.add_argument("--grid", action="store_true", help="also 81 rules with separate patiences and fractions "
                        "for the loss and the likeness (runs with picture checks)")
    parser.add_argument("--why", action="store_true", help="for each cell that misses the bar where the first rule "
                        "stops, what its word draws wrong (needs --snapshots)")
    parser.add_argument("--keep-margin", type=float, help="read the runs as if they kept words with this "
                        "picture_keep_margin (from each check picture's recorded cosine; runs recorded before those "
                        "were: skipped)")
    parser.add_argument("--every", type=int, help="read the runs as if they had validated every N steps (a multiple "
                        "of their own validate_every), e.g. runs made with validate_every 5 read at 10 and 25")
    parser.add_argument("--picture-samples", type=int, help="read the runs as if each picture check had drawn only "
                        "its first N pictures (from each check picture's recorded cosine)")
    parser.add_argument("--cells-of", help="only the cells that this results file holds, e.g. to read two recipes "
                        "on the cells both ran")
    parser.add_argument("--seeds", help="only the cells of these picture seeds, e.g. 0,1 to choose a rule and 2 to "
                        "check it on cells it was not chosen on")
    parser.add_argument("--shard", default="0/1", help="i/n: judge every n-th cell from the i-th")
    args = parser.parse_args(argv)
    from ti_core.demo import DemoConfig
    from ti_core.train import TrainConfig

    rules = args.rule or [{"patience": DemoConfig().early_stop, "fraction": TrainConfig.early_stop_fraction}]
    cells = _records(args.files, args.tag, args.same_as)
    if args.seeds:
        seeds = {int(s) for s in args.seeds.split(",")}
        cells = {k: c for k, c in cells.items() if c["cell"].get("seed") in seeds}
    if args.cells_of:
        held = {json.loads(line).get("key") for line in Path(args.cells_of).read_text().splitlines() if line.strip()}
        cells = {k: c for k, c in cells.items() if k in held}
    if args.every:
        cells = every(cells, args.every)
    if args.picture_samples:
        cells = fewer_pictures(cells, args.picture_samples)
    if args.keep_margin is not None:
        import torch

        cells = {k: {**c, "keep_margin": args.keep_margin,
                     "picture_cosines": {s: torch.tensor(v) for s, v in c["picture_cosines"].items()}}
                 for k, c in cells.items() if c["picture_cosines"]}
    _read_judged(cells, Path(args.judged))
    if args.judge or args.judge_all:
        wanted = {k: ({s for s, _ in c["val_losses"] if s} if args.judge_all else set())
                  | {stop_and_word(c, r)[1] for r in rules} for k, c in cells.items()}
        if args.keep_margin is not None:  # every word such a run saves, for the later stops' regrets
            wanted = {k: steps | {saved_at(cells[k], n) for n, _ in cells[k]["val_losses"]} - {0}
                      for k, steps in wanted.items()}
        shard = tuple(int(x) for x in args.shard.split("/"))
        snapshots = Path(args.snapshots) if args.snapshots else None
        _judge_missing(cells, wanted, snapshots, Path(args.judged), shard)
        # then, where a stop's word leaves 10 points to gain, every word a later stop would save (for the regrets by
        # a later stop), and the last step's (the fixed-length yardstick)
        later = {k: {saved_at(c, c["steps"])} | set().union(*(_later_words(c, stop_and_word(c, r)) for r in rules))
                 for k, c in cells.items()}
        _judge_missing(cells, {k: steps - {0} for k, steps in later.items()}, snapshots, Path(args.judged), shard)
    print(f"{len(cells)} cells")
    for line in report(cells, rules):
        print(line)
    if args.grid:
        print("\nseparate patiences for the loss and the likeness:")
        for line in grid(cells):
            print(line)
    if args.why:
        if not args.snapshots:
            raise SystemExit("--why draws the missing cells' words again: give --snapshots")
        print(f"\nwhat the words that miss the bar draw wrong, where {rules[0]} stops:")
        for line in why(cells, rules[0], Path(args.snapshots)):
            print(line)
    if args.by_concept:
        print(f"\nwhere {','.join(f'{k}={v}' for k, v in rules[0].items())} stops:")
        for line in by_concept(cells, rules[0]):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
