"""The loss curve as a picture (PIL only): raw losses in grey, the smoothed loss in blue."""

from __future__ import annotations


def draw_loss_chart(losses: list, smoothed: list, width: int = 512, height: int = 256):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(img)
    margin = 32
    if not losses:
        draw.text((margin, height // 2), "no steps", fill=(80, 80, 80))
        return img
    low, high = min(losses + smoothed), max(losses + smoothed)
    span = (high - low) or 1.0

    def point(i, value):
        x = margin + (width - 2 * margin) * (i / max(len(losses) - 1, 1))
        y = height - margin - (height - 2 * margin) * ((value - low) / span)
        return x, y

    draw.rectangle([margin, margin, width - margin, height - margin], outline=(200, 200, 200))
    for series, colour in ((losses, (170, 170, 170)), (smoothed, (40, 90, 200))):
        if len(series) > 1:
            draw.line([point(i, v) for i, v in enumerate(series)], fill=colour, width=2)
    draw.text((margin, 8), f"loss  max {high:.4g}  min {low:.4g}  steps {len(losses)}", fill=(40, 40, 40))
    return img
