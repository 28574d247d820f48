"""Text-faithfulness in the toy world: generate from prompts, let the judge name what was drawn, count agreement.

    python -m ti_core.toyworld.fidelity [--model FILE] [-n 64] [--cfg 5] [--steps 25]

prints the base model's share of samples with every attribute right, on held-in captions (combinations seen in
training) and on held-out ones (shape/colour pairs never shown). The demo uses the same pieces to score a learned
word (reconstruction and editability).
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass

import torch

from . import render

ATTRS = ("shape", "colour", "pattern", "background")
SAMPLER, STEPS, CFG = "ddim", 25, 5.0  # what every number in the docs was measured with


def generate(model, prompts: list, embeddings=(), *, cfg: float = CFG, steps: int = STEPS, sampler: str = SAMPLER,
             seed: int = 0, chunk: int = 64) -> torch.Tensor:
    """One picture per prompt, [N, 3, H, W] in 0..1 at the model's size; prompts are batched `chunk` at a time
    (chunk i uses seed + i), so the same prompts and seed give the same pictures."""
    from ..prompt import Conditioning, encode_prompt
    from ..sample import sample

    empty = encode_prompt(model, "").embeds
    out = []
    for i, start in enumerate(range(0, len(prompts), chunk)):
        part = prompts[start:start + chunk]
        positive = torch.cat([encode_prompt(model, p, embeddings).embeds for p in part])
        negative = Conditioning(empty.expand(len(part), -1, -1).contiguous())
        images = sample(model, Conditioning(positive), negative, sampler=sampler, steps=steps, cfg=cfg, seed=seed + i)
        out.append(images.permute(0, 3, 1, 2))
    return torch.cat(out) if out else torch.zeros(0, 3, model.resolution, model.resolution)


@dataclass(frozen=True)
class Score:
    """Shares (0..1) of samples with each attribute right, and with all the asked-for ones right."""
    n: int
    attributes: dict  # attribute -> share right
    all: float

    def row(self) -> str:
        cells = " / ".join(f"{100 * self.attributes[a]:.0f}" for a in self.attributes)
        return f"{cells} -> {100 * self.all:.1f} % (n={self.n})"


def score(labels: list, wanted: list) -> Score:
    """Compare judge labels with the wanted attributes (dicts; only the keys given in each are checked)."""
    keys = [a for a in ATTRS if any(a in w for w in wanted)]
    right = {a: sum(lab[a] == w[a] for lab, w in zip(labels, wanted) if a in w) for a in keys}
    asked = {a: sum(a in w for w in wanted) for a in keys}
    every = sum(all(lab[a] == v for a, v in w.items()) for lab, w in zip(labels, wanted))
    n = len(wanted)
    return Score(n, {a: right[a] / max(1, asked[a]) for a in keys}, every / max(1, n))


def scenes_for(kind: str, n: int, seed: int) -> list:
    """`n` random labels: held-in (combinations of base training) or held-out (the never-shown pairs, each
    equally often, random pattern and background)."""
    rng = random.Random(seed)
    if kind == "held-in":
        return [render.random_scene(rng) for _ in range(n)]
    pairs = sorted(render.HELD_OUT)
    return [render.random_scene(rng, held_out="only", colour=pairs[i % len(pairs)][0], shape=pairs[i % len(pairs)][1])
            for i in range(n)]


def base_fidelity(model, judge, n: int = 64, seed: int = 0, **sampling) -> dict:
    """{"held-in": Score, "held-out": Score} for full captions "a {c} {p} {s} on a {b} background"."""
    result = {}
    for kind in ("held-in", "held-out"):
        scenes = scenes_for(kind, n, seed)
        prompts = [render.caption(s) for s in scenes]
        labels = judge.classify(generate(model, prompts, seed=seed, **sampling))
        result[kind] = score(labels, [{a: getattr(s, a) for a in ATTRS} for s in scenes])
    return result


def main(argv=None) -> int:
    from ..errors import TIError
    from ..models import load_model
    from .judge import load_judge
    from .model import builtin_model_path

    parser = argparse.ArgumentParser(prog="python -m ti_core.toyworld.fidelity", description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a toy-world checkpoint (default: the built-in one)")
    parser.add_argument("-n", type=int, default=64, help="samples per set (default 64)")
    parser.add_argument("--cfg", type=float, default=CFG)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--sampler", default=SAMPLER)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model or builtin_model_path())
        scores = base_fidelity(model, load_judge(), args.n, args.seed, cfg=args.cfg, steps=args.steps,
                               sampler=args.sampler)
    except TIError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.sampler} {args.steps} steps, cfg {args.cfg}; shape / colour / pattern / background -> all four")
    for kind, value in scores.items():
        print(f"{kind:9s} {value.row()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
