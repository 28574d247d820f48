"""Conversions between ComfyUI's IMAGE tensors ([B, H, W, C] float 0..1) and PIL images. No maths beyond that."""

from __future__ import annotations


def pil_to_image(images):
    """Same-size PIL images -> IMAGE [B, H, W, 3] float32 0..1."""
    import numpy as np
    import torch

    arrays = [np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0 for img in images]
    return torch.from_numpy(np.stack(arrays))


def image_to_pil(image) -> list:
    """IMAGE [B, H, W, C] (a tensor from another node: may be an inference tensor) -> PIL RGB images."""
    from ..ti_core.sample import to_pil

    return [img.convert("RGB") for img in to_pil(image.detach().clone()[..., :3])]
