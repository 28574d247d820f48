"""Conversions between ComfyUI's IMAGE tensors ([B, H, W, C] float 0..1) and PIL images. No maths beyond that."""

from __future__ import annotations


def pil_to_image(images) -> "torch.Tensor":
    """Same-size PIL images -> IMAGE [B, H, W, 3] float32 0..1."""
    import numpy as np
    import torch

    arrays = [np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0 for img in images]
    return torch.from_numpy(np.stack(arrays))


def image_to_pil(image) -> list:
    """IMAGE [B, H, W, C] (a tensor from another node: may be an inference tensor) -> PIL RGB images."""
    from ..ti_core.sample import to_pil

    return [img.convert("RGB") for img in to_pil(image.detach().clone()[..., :3])]


def png_base64(img, max_size: int = 512) -> str:
    """A PIL image as a base64 PNG string (shrunk to at most `max_size` on its long side) for browser events."""
    import base64
    import io

    img = img.copy()
    img.thumbnail((max_size, max_size))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
