"""The loss curve as a picture (PIL only): raw losses in grey, the smoothed loss in blue (left scale), and the
validation loss (fixed draws, measured every few steps) in red on its own right-hand scale: its late changes are
far smaller than the training loss's step-to-step noise."""

from __future__ import annotations

import math


def draw_loss_chart(losses: list, smoothed: list, val_losses: list = (), width: int = 512, height: int = 256):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(img)
    margin = 32
    if not losses:
        draw.text((margin, height // 2), "no steps", fill=(80, 80, 80))
        return img
    steps = max(len(losses) - 1, 1)

    def scale(values):
        finite = [v for v in values if math.isfinite(v)]
        low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
        span = (high - low) or 1.0

        def point(i, value):
            return (margin + (width - 2 * margin) * (i / steps),
                    height - margin - (height - 2 * margin) * ((value - low) / span))
        return low, high, point

    draw.rectangle([margin, margin, width - margin, height - margin], outline=(200, 200, 200))
    low, high, point = scale(list(losses) + list(smoothed))
    for series, colour in ((losses, (170, 170, 170)), (smoothed, (40, 90, 200))):
        if len(series) > 1:
            draw.line([point(i, v) for i, v in enumerate(series)], fill=colour, width=2)
    text = f"loss  max {high:.4g}  min {low:.4g}  steps {len(losses)}"
    if val_losses:
        red = (200, 50, 30)
        v_low, v_high, v_point = scale([v for _, v in val_losses])
        at = [v_point(s - 1 if s else 0, v) for s, v in val_losses]  # step s is losses[s - 1]; step 0 the start
        if len(at) > 1:
            draw.line(at, fill=red, width=2)
        for x, y in at:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=red)
        text += f"   validation (red, own scale) {v_high:.4g} -> {val_losses[-1][1]:.4g}"
    draw.text((margin, 8), text, fill=(40, 40, 40))
    return img
