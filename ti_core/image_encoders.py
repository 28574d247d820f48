"""Image encoders for picture checks (picture_check.py) from the command line: `--image-encoder toyworld` (the
built-in toy world's judge, for the built-in model) or a CLIP vision model saved as a transformers folder
(config.json + weights: a CLIP model's folder, e.g. openai/clip-vit-large-patch14 from a Hugging Face cache, or a
CLIPVisionModelWithProjection's). Offline: nothing is downloaded. In ComfyUI the node's clip_vision input takes
ComfyUI's own CLIP vision models instead."""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import SettingError

TOYWORLD = "toyworld"


def load_image_encoder(spec: str, device: str = "cpu"):
    """An image encoder (pictures [N, 3, H, W] in 0..1 -> features [N, D]) named by `spec`."""
    if spec == TOYWORLD:
        from .toyworld.judge import load_judge

        return load_judge().encoder()
    folder = Path(spec)
    if not (folder / "config.json").is_file():
        raise SettingError(f"--image-encoder {spec}: neither {TOYWORLD!r} nor a folder with a config.json; give a "
                           "CLIP model saved by transformers (its folder holds config.json and model.safetensors).")
    from transformers import CLIPVisionModelWithProjection

    try:
        model = CLIPVisionModelWithProjection.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise SettingError(f"--image-encoder {spec}: not a CLIP vision model transformers can load ({e}).") from None
    return ClipVision(model.to(device).eval())


class ClipVision:
    """A transformers CLIP vision tower as an image encoder: pictures resized (shorter side) and centre-cropped to
    its size, normalised with CLIP's mean and deviation, then its projected image embedding."""

    MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # CLIP's preprocessing

    def __init__(self, model):
        self.model = model
        self.size = model.config.image_size

    def __call__(self, pictures: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        device, dtype = next(self.model.parameters()).device, next(self.model.parameters()).dtype
        height, width = pictures.shape[-2:]
        scale = self.size / min(height, width)
        resized = F.interpolate(pictures.float(), size=(max(self.size, round(height * scale)),
                                                        max(self.size, round(width * scale))),
                                mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        top, left = (resized.shape[-2] - self.size) // 2, (resized.shape[-1] - self.size) // 2
        square = resized[..., top:top + self.size, left:left + self.size]
        mean = torch.tensor(self.MEAN).view(1, 3, 1, 1)
        std = torch.tensor(self.STD).view(1, 3, 1, 1)
        with torch.no_grad():
            out = self.model(pixel_values=((square - mean) / std).to(device, dtype))
        return out.image_embeds.float().cpu()
