"""How well a learned word draws what it was taught, in the toy world: generate, let the judge name what it sees.

A concept word ("green dotted heart") is scored on
- reconstruction: "a photo of a <word>" / "a <word>" shows the concept's shape, colour and pattern;
- editability: "a <word> on a yellow background" shows the concept on the asked background, one it was never
  trained on and never its own colour.
A style word (a pattern learned from pictures of several shapes and colours) is scored on
- reconstruction: "a <word> red heart, blue background" for the shape/colour pairs of its training pictures;
- editability: "a red <word> heart on a yellow background" for pairs it never saw: the asked shape, colour and
  background, in the learned pattern.
The same prompts with the init word instead of the learned one give the baseline.
"""

from __future__ import annotations

import random

from . import render
from .concept import Concept, edit_backgrounds

RECONSTRUCTION_FORMS = ("a photo of a {w}", "a {w}")


def concept_prompts(word: str, concept: Concept, n: int) -> tuple:
    """([(reconstruction prompt, wanted label)], [(editability prompt, wanted label)]), n of each; reconstruction
    wants the concept on any background."""
    wanted = {"shape": concept.shape, "colour": concept.colour, "pattern": concept.pattern}
    recon = [(RECONSTRUCTION_FORMS[i % 2].format(w=word), wanted) for i in range(n)]
    backgrounds = edit_backgrounds(concept.colour)
    edits = [(f"a {word} on a {b} background", {**wanted, "background": b})
             for b in (backgrounds[i % len(backgrounds)] for i in range(n))]
    return recon, edits


def style_prompts(word: str, pattern: str, seen: list, n: int, seed: int = 0) -> tuple:
    """Style word prompts: (reconstruction [(prompt, wanted)], editability [(prompt, wanted)]), n each. `seen`
    is the (colour, shape, background) of each training picture; editability asks for pairs not among them."""
    rng = random.Random(seed)
    recon = []
    for i in range(n):
        colour, shape, background = seen[i % len(seen)]
        recon.append((f"a {word} {colour} {shape}, {background} background",
                      {"shape": shape, "colour": colour, "pattern": pattern, "background": background}))
    pairs = {(c, s) for c, s, _ in seen}
    fresh = [(c, s) for c in render.COLOUR_NAMES for s in render.SHAPES
             if (c, s) not in pairs and (c, s) not in render.HELD_OUT]
    edits = []
    for _ in range(n):
        colour, shape = rng.choice(fresh)
        background = rng.choice([b for b in render.COLOUR_NAMES if b != colour])
        edits.append((f"a {colour} {word} {shape} on a {background} background",
                      {"shape": shape, "colour": colour, "pattern": pattern, "background": background}))
    return recon, edits


def _share(labels: list, wanted: list) -> float:
    right = [all(label[k] == v for k, v in w.items()) for label, w in zip(labels, wanted)]
    return sum(right) / max(1, len(right))


def judge_prompts(model, judge, recon: list, edits: list, embeddings=(), *, cfg: float, steps: int, seed: int) -> dict:
    """{"reconstruction", "editability", "images"}; `recon` and `edits` hold (prompt, wanted) pairs, wanted
    being the attributes the picture must show."""
    from .fidelity import generate

    recon_images = generate(model, [p for p, _ in recon], embeddings,
                            cfg=cfg, steps=steps, seed=seed)
    edit_images = generate(model, [p for p, _ in edits], embeddings, cfg=cfg, steps=steps, seed=seed)
    return {"reconstruction": _share(judge.classify(recon_images), [w for _, w in recon]),
            "editability": _share(judge.classify(edit_images), [w for _, w in edits]),
            "images": (recon_images, edit_images)}


def measure_concept(model, judge, word: str, concept: Concept, n: int, embeddings=(), *, cfg: float, steps: int,
                    seed: int) -> dict:
    """Reconstruction and editability of a concept word (`embedding:name` or plain words)."""
    recon, edits = concept_prompts(word, concept, n)
    return judge_prompts(model, judge, recon, edits, embeddings, cfg=cfg, steps=steps, seed=seed)


def measure_style(model, judge, word: str, pattern: str, seen: list, n: int, embeddings=(), *, cfg: float,
                  steps: int, seed: int) -> dict:
    """Reconstruction and editability of a style (pattern) word; `seen` as in style_prompts."""
    recon, edits = style_prompts(word, pattern, seen, n, seed)
    return judge_prompts(model, judge, recon, edits, embeddings, cfg=cfg, steps=steps, seed=seed)
