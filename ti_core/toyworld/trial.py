"""One cell of the fidelity matrix: draw a concept's (or a style's) pictures, train a word on them with the demo's
recipe, and judge the word at chosen steps, where early stop would have ended the run, and at the last step.

A run with a constant learning rate passes through every shorter fixed-length run of the same seed (validation
draws never touch the training draws), so one run to the step cap gives the fixed-length results at every
snapshot step as well as the early-stop result: early stop is decided by the same rule as in training
(`train.plateaued`), evaluated at each validation, and the vectors at that step are judged.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from . import render
from .concept import Concept, draw_concept, draw_style

STYLE_INIT = "pattern"  # the toy world's captions say "a red heart with a dotted pattern": the class word of a style


@dataclass(frozen=True)
class Cell:
    kind: str  # "concept" (a shape/colour/pattern to reconstruct) | "style" (a pattern on any shape and colour)
    what: str  # "green dotted heart" | "dotted"
    pictures: int
    seed: int  # of the pictures, the run and the sampling

    def key(self) -> str:
        return f"{self.kind}:{self.what}:{self.pictures}:{self.seed}"


def matrix(pairs=None, patterns=render.PATTERNS, seeds=(0, 1, 2), pictures=(3, 5), styles=()) -> list:
    """Every held-out shape/colour pair (or `pairs`) x pattern x seed x picture count, then the style cells."""
    pairs = sorted(render.HELD_OUT) if pairs is None else pairs
    cells = [Cell("concept", f"{c} {p} {s}", n, seed) for c, s in pairs for p in patterns for n in pictures
             for seed in seeds]
    return cells + [Cell("style", p, n, seed) for p in styles for n in pictures for seed in seeds]


def _draw(cell: Cell, folder: Path):
    if cell.kind == "concept":
        return draw_concept(folder, Concept.parse(cell.what), count=cell.pictures, seed=cell.seed), None
    return draw_style(folder, cell.what, count=cell.pictures, seed=cell.seed)


def _measure(model, judge, cell: Cell, word: str, seen, config, embeddings=()) -> dict:
    from .scoring import measure_concept, measure_style

    sampling = dict(cfg=config.cfg, steps=config.sample_steps, seed=cell.seed)
    if cell.kind == "concept":
        scores = measure_concept(model, judge, word, Concept.parse(cell.what), config.samples, embeddings, **sampling)
    else:
        scores = measure_style(model, judge, word, cell.what, seen, config.samples, embeddings, **sampling)
    return {"reconstruction": scores["reconstruction"], "editability": scores["editability"]}


def init_word(cell: Cell, config) -> str:
    if config.init_text:
        return config.init_text
    return Concept.parse(cell.what).shape if cell.kind == "concept" else STYLE_INIT


def baseline(model, judge, cell: Cell, config) -> dict:
    """The init word's own scores on the cell's prompts (what the word must beat)."""
    with tempfile.TemporaryDirectory() as tmp:
        _, seen = _draw(cell, Path(tmp))
    return _measure(model, judge, cell, init_word(cell, config), seen, config)


def kept_step(picture_scores: list, until: int | None, cosines: dict | None = None, margin: float = 0.0) -> int | None:
    """The step whose word a run with picture checks saves when it ends at `until` (None: at its last check): the
    first best-scored check up to there. With `cosines` (step -> each check picture's cosine) and a `margin`, as
    `picture_check.replaces` decides: a later word replaces the kept one only when clearly better."""
    seen = [(step, score) for step, score in picture_scores if until is None or step <= until]
    if not seen:
        return None
    if cosines is not None and margin:
        from ..picture_check import replaces

        kept = seen[0][0]
        for step, _ in seen[1:]:
            if replaces(cosines[step], cosines[kept], margin):
                kept = step
        return kept
    best = max(score for _, score in seen)
    return next(step for step, score in seen if score == best)


def cell_config(cell: Cell, config):
    """The demo recipe `config` (a DemoConfig) for `cell`: its concept, init word, picture count and seed, the
    word named "w"."""
    return replace(config, concept=Concept.parse(cell.what) if cell.kind == "concept" else config.concept,
                   name="w", init_text=init_word(cell, config), pictures=cell.pictures, seed=cell.seed)


def run_cell(model, judge, cell: Cell, config, at=(), snapshots_to=None, judge_end=True, **overrides) -> dict:
    """Train `cell` with the demo recipe `config` (a DemoConfig; `overrides` replace TrainConfig fields) up to
    config.steps without stopping, and judge the vectors at the steps in `at`, at the early-stop step (if the
    rule fires) and at the end. With config.picture_check (the judge's features as the image encoder), the words
    judged for early stop and the end are the ones such a run saves: the best-scored up to there ("kept"); with
    judge_end False, those are judged and the last step is not. With `snapshots_to` (a .pt path), the vectors at
    every validation are kept there too, so other steps can be judged later (`judge_snapshots`) without training
    again. Returns a JSON-able record."""
    from ..demo import training_config
    from ..embeddings import Embedding
    from ..train import train
    from ..train_callbacks import plateau_step

    config = cell_config(cell, config)
    name = config.name
    train_config = training_config(config, None, early_stop=0, save_every=0, preview_every=0, **overrides)
    kept, elapsed = {}, {}  # step -> the vectors and seconds at every validation (and at the `at` steps)

    def on_step(info):
        if info.val_loss is not None or info.step in at:
            kept[info.step], elapsed[info.step] = info.vectors, info.elapsed

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder, seen = _draw(cell, Path(tmp) / "pictures")
        encoded, features_of = [], judge.encoder()  # what the checks encode: the training pictures, then each check's

        def encoder(pictures):
            encoded.append(features_of(pictures))
            return encoded[-1]

        result = train(model, folder, train_config, on_step=on_step,
                       image_encoder=encoder if config.picture_check else None)
    seconds = time.perf_counter() - started
    # Where the trainer's early stop would have ended the run: its rule over the validation losses (and picture
    # scores) from step 0 on (the init vectors' values, measured before the first step, are where the change the
    # rule compares with starts)
    stop = plateau_step(result.val_losses, config.early_stop, train_config.early_stop_fraction,
                        result.picture_scores)
    early = {} if stop is None else {"step": stop, "seconds": round(elapsed[stop], 2)}
    judged = set(at)
    saved = {}
    if result.picture_scores:  # the word such a run saves: the best-scored one up to its stop, or up to the end
        kept_after = dict(result.kept_steps)  # the trainer's own keep decisions, check by check
        saved = {"early_stop": kept_after[stop] if stop is not None else result.kept_step, "end": result.kept_step}
        judged |= {step for step in saved.values() if step}  # a step-0 word is the init word: not kept vectors
        if early:
            early["kept_step"] = saved["early_stop"]
    if judge_end:
        judged |= {train_config.steps, *([early["step"]] if early and not saved else [])}
    if snapshots_to:
        import torch

        from ..atomic import atomic_write

        validations = {step: kept[step] for step, _ in result.val_losses if step in kept}
        atomic_write(snapshots_to, lambda f: torch.save(validations, f), overwrite=True)
    points = {step: _measure(model, judge, cell, f"embedding:{name}", seen, config, [Embedding(name, kept[step])])
              for step in sorted(judged) if step in kept}
    judged_step = early.get("kept_step", early.get("step")) if early else None
    if judged_step in points:
        early.update(points[judged_step])
    record = {
        "cell": asdict(cell), "overrides": overrides, "steps": result.steps_done, "seconds": round(seconds, 1),
        "seconds_per_step": round(result.seconds / max(1, result.steps_done), 4),
        "val_losses": [[s, round(v, 6)] for s, v in result.val_losses],
        "points": {str(s): v for s, v in points.items()}, "early_stop": early or None,
        "picture_scores": [[s, round(v, 6)] for s, v in result.picture_scores], "kept": saved or None,
        "kept_steps": [list(pair) for pair in result.kept_steps],
        "picture_cosines": _cosines(encoded, result.picture_scores),
    }
    return record


def _cosines(encoded: list, picture_scores: list) -> list:
    """[step, each check picture's cosine to the training pictures' mean feature] per check (what its likeness
    averages; a keep margin compares them), from the features the checks encoded in order."""
    from ..picture_check import reference_of, unit_features

    if not encoded:
        return []
    unit = [unit_features(f) for f in encoded]
    reference = reference_of(unit[0])
    return [[step, [round(float(c), 6) for c in features @ reference]]
            for (step, _), features in zip(picture_scores, unit[1:])]


def judge_snapshots(model, judge, cell: Cell, config, path, steps) -> dict:
    """Judge the vectors `run_cell(..., snapshots_to=path)` kept, at `steps` (each a validation step)."""
    import torch

    from ..embeddings import Embedding

    kept = torch.load(path, weights_only=True)
    with tempfile.TemporaryDirectory() as tmp:
        _, seen = _draw(cell, Path(tmp))
    return {str(s): _measure(model, judge, cell, "embedding:w", seen, config, [Embedding("w", kept[s])])
            for s in steps}
