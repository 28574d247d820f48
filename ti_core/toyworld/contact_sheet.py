"""The demo's contact sheet: one PNG with the training pictures, previews across steps, final samples of the learned
word and of the baseline, and the loss curves. Plain Pillow drawing (no plotting library)."""

from __future__ import annotations

from pathlib import Path

import torch

BG, INK, GREY, ACCENT = (250, 250, 250), (20, 20, 20), (150, 150, 150), (200, 60, 30)
PAD, ROW_GAP = 12, 22


def _pil(image: torch.Tensor, scale: int):
    """[3, H, W] or [H, W, 3] in 0..1 -> PIL image enlarged `scale` times with hard pixel edges."""
    from PIL import Image

    if image.shape[0] == 3 and image.shape[-1] != 3:
        image = image.permute(1, 2, 0)
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    picture = Image.fromarray(pixels)
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def _row(sheet, draw, y: int, label: str, pictures: list, captions: list | None = None) -> int:
    draw.text((PAD, y), label, fill=INK)
    y += 16
    x = PAD
    for i, picture in enumerate(pictures):
        sheet.paste(picture, (x, y))
        if captions:
            draw.text((x, y + picture.height + 2), captions[i], fill=GREY)
        x += picture.width + 6
    return y + max((p.height for p in pictures), default=0) + (14 if captions else 0) + ROW_GAP


def _curve(draw, box: tuple, losses: list, val_losses: list) -> None:
    """Training loss (grey, 10-step mean; left scale) and validation loss (accent, dots; right scale, its own: its
    late changes are far smaller than the training loss's step-to-step noise) in `box` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=GREY)
    smooth = [sum(losses[max(0, i - 9):i + 1]) / len(losses[max(0, i - 9):i + 1]) for i in range(len(losses))]
    steps = max(len(losses), max((s for s, _ in val_losses), default=0), 1)

    def scaled(values):
        lo, hi = min(values), max(values)
        span = (hi - lo) or 1.0
        return lo, hi, lambda step, value: (x0 + (x1 - x0) * step / steps,
                                            y1 - 4 - (y1 - y0 - 8) * (value - lo) / span)

    if len(smooth) > 1:
        lo, hi, point = scaled(smooth)
        draw.line([point(i + 1, v) for i, v in enumerate(smooth)], fill=GREY, width=1)
        draw.text((x0 + 4, y0 + 2), f"{hi:.4f}", fill=GREY)
        draw.text((x0 + 4, y1 - 14), f"{lo:.4f}", fill=GREY)
    if val_losses:
        lo, hi, point = scaled([v for _, v in val_losses])
        if len(val_losses) > 1:
            draw.line([point(s, v) for s, v in val_losses], fill=ACCENT, width=2)
        for s, v in val_losses:
            px, py = point(s, v)
            draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=ACCENT)
        draw.text((x1 - 50, y0 + 2), f"{hi:.4f}", fill=ACCENT)
        draw.text((x1 - 50, y1 - 14), f"{lo:.4f}", fill=ACCENT)
    draw.text((x1 - 60, y1 + 2), f"step {steps}", fill=INK)
    draw.text((x0, y1 + 2), "training loss (grey, 10-step mean, left scale); validation loss on fixed draws (red, "
                            "right scale)", fill=INK)


def write(path: Path, images_folder: Path, previews: list, learned: tuple, baseline: tuple, losses: list,
          val_losses: list, report: dict, config) -> Path:
    """Compose and save the sheet (atomically); returns `path`."""
    from PIL import Image, ImageDraw

    from ..atomic import atomic_write

    training = [Image.open(p).convert("RGB") for p in sorted(Path(images_folder).glob("*.png"))]
    training = [t.resize((t.width * 4, t.height * 4), Image.NEAREST) for t in training]
    per_row, scale = 16, 3
    word, init = f"embedding:{config.name}", config.init_text
    rows = [
        ("training pictures (non-square, centre-cropped for training; captions name the background)", training, None),
        ("previews of 'a photo of a *' (fixed seed) across steps", [_pil(p, 4) for _, p in previews],
         [f"step {s}" for s, _ in previews]),
        (f"learned: 'a photo of a {word}' / 'a {word}'   ->  reconstruction {report['reconstruction']:.0%}",
         [_pil(x, scale) for x in learned[0][:per_row]], None),
        (f"learned: 'a {word} on a yellow / green / orange background'  ->  editability {report['editability']:.0%}",
         [_pil(x, scale) for x in learned[1][:per_row]], None),
        (f"baseline: 'a photo of a {init}' / 'a {init}'  ->  {report['baseline_reconstruction']:.0%}",
         [_pil(x, scale) for x in baseline[0][:per_row]], None),
        (f"baseline: 'a {init} on a ... background'  ->  {report['baseline_editability']:.0%}",
         [_pil(x, scale) for x in baseline[1][:per_row]], None),
    ]
    width = max(PAD * 2 + sum(p.width + 6 for p in pictures) for _, pictures, _ in rows)
    width = max(width, 900)
    curve_height = 200
    height = 40 + sum(16 + max((p.height for p in pics), default=0) + (14 if caps else 0) + ROW_GAP
                      for _, pics, caps in rows) + curve_height + 40
    sheet = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(sheet)
    title = (f"textual inversion of a {config.concept.words} (never seen by the base model): "
             f"{report['steps']} steps, {report['training_seconds']:.0f} s of training")
    draw.text((PAD, PAD), title, fill=INK)
    y = 40
    for label, pictures, captions in rows:
        y = _row(sheet, draw, y, label, pictures, captions)
    _curve(draw, (PAD + 40, y, width - PAD - 40, y + curve_height - 20), losses, val_losses)

    def save(f):
        sheet.save(f, format="PNG")

    return atomic_write(path, save, overwrite=False)
