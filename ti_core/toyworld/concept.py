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
EDIT_BACKGROUNDS = ("yellow", "green", "orange", "red")  # what "a [word] on a ... background" asks for


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


DEMO_CONCEPT = Concept("star", "purple", "striped")  # held out of base training (render.HELD_OUT)


def concept_images(concept: Concept = DEMO_CONCEPT, count: int = 4, seed: int = 0) -> list:
    """`count` (picture [3, H, W] in 0..1, background) pairs: sizes from `SIZES`, backgrounds from
    `TRAIN_BACKGROUNDS` (never the concept's colour), the object somewhere in the central square so a centre crop
    keeps it whole."""
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    backgrounds = [b for b in TRAIN_BACKGROUNDS if b != concept.colour] or ["white"]
    out = []
    for i in range(count):
        width, height = SIZES[i % len(SIZES)]
        side = min(width, height)
        radius = rng.uniform(0.30, 0.42)
        # centre inside the central side x side square, the whole shape within it
        margin_x, margin_y = (width - side) / 2, (height - side) / 2
        cx = (margin_x + rng.uniform(radius * side, side - radius * side)) / width
        cy = (margin_y + rng.uniform(radius * side, side - radius * side)) / height
        background = backgrounds[i % len(backgrounds)]
        scene = render.Scene(concept.shape, concept.colour, concept.pattern, background, cx, cy, radius)
        out.append((render.render([scene], width=width, height=height, generator=gen)[0], background))
    return out


def draw_concept(folder: Path, concept: Concept = DEMO_CONCEPT, count: int = 4, seed: int = 0) -> Path:
    """Write the pictures as PNGs, each with a .txt caption naming its background; returns the folder."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (image, background) in enumerate(concept_images(concept, count, seed)):
        stem = f"{concept.colour}-{concept.pattern}-{concept.shape}_{i}"
        pixels = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{stem}.png")
        (folder / f"{stem}.txt").write_text(f"on a {background} background\n", encoding="utf-8")
    return folder
