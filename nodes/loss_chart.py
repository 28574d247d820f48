"""The loss curve as a picture (PIL only): raw losses in grey, the smoothed loss in blue, the validation loss
(fixed draws, measured every few steps) in red."""

from __future__ import annotations


def draw_loss_chart(losses: list, smoothed: list, val_losses: list = (), width: int = 512, height: int = 256):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(img)
    margin = 32
    if not losses:
        draw.text((margin, height // 2), "no steps", fill=(80, 80, 80))
        return img
    finite = [v for v in list(losses) + list(smoothed) + [v for _, v in val_losses] if v == v and abs(v) != float("inf")]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    span = (high - low) or 1.0
    steps = max(len(losses) - 1, 1)

    def point(i, value):
        x = margin + (width - 2 * margin) * (i / steps)
        y = height - margin - (height - 2 * margin) * ((value - low) / span)
        return x, y

    draw.rectangle([margin, margin, width - margin, height - margin], outline=(200, 200, 200))
    for series, colour in ((losses, (170, 170, 170)), (smoothed, (40, 90, 200))):
        if len(series) > 1:
            draw.line([point(i, v) for i, v in enumerate(series)], fill=colour, width=2)
    red = (200, 50, 30)
    if len(val_losses) > 1:
        draw.line([point(s - 1 if s else 0, v) for s, v in val_losses], fill=red, width=2)
    for s, v in val_losses:
        x, y = point(s - 1 if s else 0, v)
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=red)
    draw.text((margin, 8), f"loss  max {high:.4g}  min {low:.4g}  steps {len(losses)}", fill=(40, 40, 40))
    return img
