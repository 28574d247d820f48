"""The demo's concept: a held-out shape/colour pair the base model never saw, drawn as a few varied pictures.

The pictures are non-square (the trainer crops them, never stretches), on different backgrounds, with a caption
file each that names the background ("on a blue background"), so the learned word takes the object and not the
scene. Training uses the "captions" templates ("a photo of a [name] on a blue background").
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from . import render

SIZES = ((44, 32), (32, 40), (48, 32), (32, 44))  # width x height: all non-square, short side the model's 32 px
TRAIN_BACKGROUNDS = ("white", "blue", "black", "red")  # varied, so no single background becomes part of the word
EDIT_BACKGROUNDS = ("yellow", "green", "orange", "purple")  # for "a [word] on a ... background": never trained on


@dataclass(frozen=True)
class Concept:
    shape: str
    colour: str
    pattern: str

    def __post_init__(self):
        if self.shape not in render.SHAPES or self.colour not in render.COLOURS or self.pattern not in render.PATTERNS:
            raise ValueError(f"unknown concept {self}; shapes {render.SHAPES}, colours {render.COLOUR_NAMES}, "
                             f"patterns {render.PATTERNS}")

    @property
    def words(self) -> str:
        return f"{self.colour} {self.pattern} {self.shape}"

    def matches(self, label: dict) -> bool:
        """Whether a judge label shows this concept (shape, colour and pattern; any background)."""
        return (label["shape"], label["colour"], label["pattern"]) == (self.shape, self.colour, self.pattern)

    @classmethod
    def parse(cls, text: str) -> "Concept":
        """"green dotted heart" (a colour, a pattern and a shape the renderer knows, in any order)."""
        words = text.lower().replace(",", " ").split()
        found = {kind: [w for w in words if w in names] for kind, names in
                 (("colour", render.COLOUR_NAMES), ("pattern", render.PATTERNS), ("shape", render.SHAPES))}
        unknown = [w for w in words if not any(w in v for v in found.values())]
        if unknown or any(len(v) != 1 for v in found.values()):
            raise ValueError(
                f"concept {text!r}: name one colour ({', '.join(render.COLOUR_NAMES)}), one pattern "
                f"({', '.join(render.PATTERNS)}) and one shape ({', '.join(render.SHAPES)}), e.g. 'green dotted heart'"
                + (f"; not known: {', '.join(unknown)}" if unknown else ""))
        return cls(found["shape"][0], found["colour"][0], found["pattern"][0])

    @property
    def held_out(self) -> bool:
        """Whether the built-in model never saw this shape/colour pair."""
        return (self.colour, self.shape) in render.HELD_OUT


def training_backgrounds(colour: str) -> tuple:
    """The backgrounds a concept of `colour` is drawn on: varied, never its own colour."""
    return tuple(b for b in TRAIN_BACKGROUNDS if b != colour) or ("white",)


def edit_backgrounds(colour: str) -> tuple:
    """Three backgrounds to ask for in editability prompts: never the concept's colour (a green heart on a green
    background cannot be seen), and none the training pictures had."""
    return tuple(b for b in EDIT_BACKGROUNDS if b != colour and b not in training_backgrounds(colour))[:3]


DEMO_CONCEPT = Concept("star", "purple", "striped")  # held out of base training (render.HELD_OUT)


def concept_images(concept: Concept = DEMO_CONCEPT, count: int = 4, seed: int = 0) -> list:
    """`count` (picture [3, H, W] in 0..1, background) pairs: sizes from `SIZES`, backgrounds from
    `TRAIN_BACKGROUNDS` (never the concept's colour), the object somewhere in the central square so a centre crop
    keeps it whole."""
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    backgrounds = training_backgrounds(concept.colour)
    out = []
    for i in range(count):
        background = backgrounds[i % len(backgrounds)]
        out.append((_picture(i, concept.shape, concept.colour, concept.pattern, background, rng, gen), background))
    return out


def _picture(i: int, shape: str, colour: str, pattern: str, background: str, rng: random.Random,
             gen: torch.Generator) -> torch.Tensor:
    """The i-th picture [3, H, W]: size SIZES[i], the object inside the central square so a centre crop keeps it."""
    width, height = SIZES[i % len(SIZES)]
    side = min(width, height)
    radius = rng.uniform(0.30, 0.42)
    cx = ((width - side) / 2 + rng.uniform(radius * side, side - radius * side)) / width
    cy = ((height - side) / 2 + rng.uniform(radius * side, side - radius * side)) / height
    scene = render.Scene(shape, colour, pattern, background, cx, cy, radius)
    return render.render([scene], width=width, height=height, generator=gen)[0]


def _save_png(image: torch.Tensor, path: Path) -> None:
    from PIL import Image

    Image.fromarray((image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()).save(path)


def draw_concept(folder: Path, concept: Concept = DEMO_CONCEPT, count: int = 4, seed: int = 0) -> Path:
    """Write the pictures as PNGs, each with a .txt caption naming its background, except on the default (white)
    background, which the base model's captions leave unnamed: a word that never met a prompt without a background
    paints the unnamed one in its own colour ("a photo of a <word>" gave a green heart on green). Returns the
    folder."""

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (image, background) in enumerate(concept_images(concept, count, seed)):
        stem = f"{concept.colour}-{concept.pattern}-{concept.shape}_{i}"
        _save_png(image, folder / f"{stem}.png")
        if background != render.default_background(concept.colour):
            (folder / f"{stem}.txt").write_text(f"on a {background} background\n", encoding="utf-8")
    return folder


def style_scenes(pattern: str, count: int = 4, seed: int = 0) -> list:
    """(colour, shape, background) of `count` pictures for a style word: one `pattern` on varied shape/colour pairs
    the base model knows (distinct, never held out), each on a training background that is not its colour."""
    if pattern not in render.PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; patterns {render.PATTERNS}")
    rng = random.Random(seed)
    pairs = [(c, s) for c in render.COLOUR_NAMES for s in render.SHAPES if (c, s) not in render.HELD_OUT]
    picked = rng.sample(pairs, count)
    return [(c, s, training_backgrounds(c)[i % len(training_backgrounds(c))]) for i, (c, s) in enumerate(picked)]


def draw_style(folder: Path, pattern: str, count: int = 4, seed: int = 0) -> tuple:
    """Write a style word's pictures (PNG + a caption naming the shape, colour and background, so the word takes
    only the pattern); returns (folder, style_scenes)."""

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scenes = style_scenes(pattern, count, seed)
    rng, gen = random.Random(seed + 1), torch.Generator().manual_seed(seed)
    for i, (colour, shape, background) in enumerate(scenes):
        stem = f"{pattern}-{colour}-{shape}_{i}"
        _save_png(_picture(i, shape, colour, pattern, background, rng, gen), folder / f"{stem}.png")
        (folder / f"{stem}.txt").write_text(f"{colour} {shape}, {background} background\n", encoding="utf-8")
    return folder, scenes
