"""The toy world: procedural pictures of one object, with captions, in which learning a word can be measured.

Each scene is a shape (8), a colour (8), a fill pattern (3) and a background colour (8, never the shape's),
at a random position and size. Rendering is vectorised torch (supersampled, then averaged, so edges are
anti-aliased) and deterministic for a given generator. Some shape/colour pairs are held out of base-model
training, so a textual-inversion run can be tested on a concept the model has never seen.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SHAPES = ("circle", "square", "triangle", "star", "heart", "cross", "ring", "diamond")
COLOURS = {
    "red": (0.86, 0.12, 0.12), "green": (0.13, 0.66, 0.22), "blue": (0.14, 0.26, 0.86), "yellow": (0.95, 0.86, 0.15),
    "purple": (0.56, 0.20, 0.74), "orange": (0.96, 0.55, 0.10), "white": (0.96, 0.96, 0.96),
    "black": (0.06, 0.06, 0.06),
}
PATTERNS = ("solid", "striped", "dotted")
# Never shown in base training (every pattern, every background): the concepts textual inversion must learn.
HELD_OUT = frozenset({("purple", "star"), ("green", "heart"), ("orange", "cross"), ("blue", "circle")})
TEMPLATES = (
    "a {c} {p} {s} on a {b} background",
    "a photo of a {c} {p} {s} on a {b} background",
    "a {p} {c} {s}, {b} background",
    "{c} {s} with a {p} pattern on {b}",
)
COLOUR_NAMES = tuple(COLOURS)


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    pattern: str
    background: str
    cx: float  # centre, as a fraction of the image width/height
    cy: float
    radius: float  # as a fraction of the image size

    @property
    def held_out(self) -> bool:
        return (self.colour, self.shape) in HELD_OUT


def default_background(colour: str) -> str:
    """The background a caption that names none stands for: white (black behind a white shape).

    Base training captions leave the background out only on this colour, so a prompt without one gives a plain,
    predictable background; a model that learned "any background" paints held-out concepts on their own colour.
    """
    return "black" if colour == "white" else "white"


def random_scene(rng: random.Random, held_out: str = "exclude", **fixed) -> Scene:
    """A random scene; `held_out`: exclude | include | only. Any field may be fixed (e.g. shape="star")."""
    while True:
        values = {
            "shape": rng.choice(SHAPES), "colour": rng.choice(COLOUR_NAMES), "pattern": rng.choice(PATTERNS),
            "background": rng.choice(COLOUR_NAMES), "radius": rng.uniform(0.22, 0.42),
        }
        values.update({k: v for k, v in fixed.items() if k in values})
        if values["background"] == values["colour"]:
            if "background" in fixed and "colour" in fixed:
                raise ValueError("the background must differ from the shape's colour")
            continue
        pair = (values["colour"], values["shape"]) in HELD_OUT
        if (held_out == "exclude" and pair) or (held_out == "only" and not pair):
            if {"colour", "shape"} <= fixed.keys():
                break  # the caller asked for this pair explicitly
            continue
        break
    r = values["radius"]
    values["cx"] = fixed.get("cx", rng.uniform(r, 1 - r))
    values["cy"] = fixed.get("cy", rng.uniform(r, 1 - r))
    return Scene(**values)


def caption(scene: Scene, rng: random.Random | None = None) -> str:
    """A caption from one of the templates; with `rng`, the variations base training uses (dropped words)."""
    if rng is None:
        return TEMPLATES[0].format(c=scene.colour, p=scene.pattern, s=scene.shape, b=scene.background)
    pattern = "" if scene.pattern == "solid" and rng.random() < 0.5 else scene.pattern
    shape = "shape" if rng.random() < 0.1 else scene.shape
    colour = "" if rng.random() < 0.1 else scene.colour
    text = rng.choice(TEMPLATES).format(c=colour, p=pattern, s=shape, b=scene.background)
    if scene.background == default_background(scene.colour) and rng.random() < 0.5:  # the unnamed background
        text = text.split(" on ")[0].split(",")[0]
    return " ".join(text.split())


def _shape_mask(shape: str, dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Inside-test for one shape kind; dx, dy are offsets from the centre (y down), r the radius, all in pixels."""
    d = torch.sqrt(dx**2 + dy**2)
    if shape == "circle":
        return d <= r
    if shape == "ring":
        return (d <= r) & (d >= 0.55 * r)
    if shape == "square":
        return torch.maximum(dx.abs(), dy.abs()) <= 0.82 * r
    if shape == "diamond":
        return dx.abs() + dy.abs() <= r
    if shape == "cross":
        arm = 0.34 * r
        return ((dx.abs() <= arm) & (dy.abs() <= r)) | ((dy.abs() <= arm) & (dx.abs() <= r))
    if shape == "triangle":  # apex up, base at 0.6 r below the centre
        return (dy <= 0.6 * r) & (dx.abs() <= (dy + r) * (1.0 / math.sqrt(3.0)) * 1.25)
    if shape == "star":  # five points; the boundary radius swings between r and 0.45 r
        angle = torch.atan2(dx, -dy)
        phase = torch.remainder(angle, 2 * math.pi / 5) / (2 * math.pi / 5)
        reach = 0.45 * r + 0.55 * r * (1 - 2 * torch.abs(phase - 0.5)) ** 1.6
        return d <= reach
    if shape == "heart":
        x, y = dx / (0.95 * r), -(dy + 0.1 * r) / (0.95 * r)
        return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0
    raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


def render(scenes: list, size: int = 32, supersample: int = 2, generator: torch.Generator | None = None,
           jitter: float = 0.04, width: int | None = None, height: int | None = None) -> torch.Tensor:
    """[N, 3, height, width] float32 in 0..1 (both default to `size`). A scene's centre is a fraction of the width
    and height, its radius a fraction of the shorter side. With `generator`, colours vary by up to +-`jitter` per
    channel."""
    n, w, h = len(scenes), width or size, height or size
    side = min(w, h)
    xs = ((torch.arange(w * supersample, dtype=torch.float32) + 0.5) / supersample).view(1, 1, -1)  # pixel centres
    ys = ((torch.arange(h * supersample, dtype=torch.float32) + 0.5) / supersample).view(1, -1, 1)
    sh, sw = h * supersample, w * supersample
    cx = torch.tensor([sc.cx * w for sc in scenes]).view(n, 1, 1)
    cy = torch.tensor([sc.cy * h for sc in scenes]).view(n, 1, 1)
    r = torch.tensor([sc.radius * side for sc in scenes]).view(n, 1, 1)
    dx, dy = xs - cx, ys - cy
    inside = torch.zeros(n, sh, sw, dtype=torch.bool)
    for shape in SHAPES:
        rows = [i for i, sc in enumerate(scenes) if sc.shape == shape]
        if rows:
            inside[rows] = _shape_mask(shape, dx[rows].expand(-1, sh, sw), dy[rows].expand(-1, sh, sw), r[rows])
    stripes = (torch.floor(ys / 2) % 2 == 1).expand(n, sh, sw)  # period 4 px
    dots = (((xs % 4) - 2) ** 2 + ((ys % 4) - 2) ** 2 <= 1.1**2).expand(n, sh, sw)  # period 4 px, radius 1.1 px
    pattern = torch.tensor([PATTERNS.index(sc.pattern) for sc in scenes]).view(n, 1, 1)
    shaded = ((pattern == 1) & stripes) | ((pattern == 2) & dots)
    colour = torch.tensor([COLOURS[sc.colour] for sc in scenes]).view(n, 3, 1, 1)
    dark = torch.where(colour.mean(1, keepdim=True) < 0.1, torch.full_like(colour, 0.5),
                       torch.where(colour.min(1, keepdim=True).values > 0.9, torch.full_like(colour, 0.55),
                                   colour * 0.45))
    background = torch.tensor([COLOURS[sc.background] for sc in scenes]).view(n, 3, 1, 1)
    if generator is not None:
        colour = (colour + (torch.rand(colour.shape, generator=generator) * 2 - 1) * jitter).clamp(0, 1)
        background = (background + (torch.rand(background.shape, generator=generator) * 2 - 1) * jitter).clamp(0, 1)
    fill = torch.where(shaded.unsqueeze(1), dark, colour)
    image = torch.where(inside.unsqueeze(1), fill, background)
    return F.avg_pool2d(image, supersample) if supersample > 1 else image
