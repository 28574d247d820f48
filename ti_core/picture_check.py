"""Picture checks: at each validation, draw a few pictures of the word and ask an image encoder how much they look
like the training pictures. The run keeps the word whose pictures look most like them, and early stop waits until
that likeness stops rising.

Why: past the loss's fall, the validation loss does not tell a better word from a worse one (README, "When is it
done?"): the words keep moving while it stays flat (a blue dotted circle swings between blue and black from one
validation to the next), so a run stopped by the loss alone could end on a bad swing, or before a concept was
whole. What a person judges is the pictures; an image encoder (ComfyUI: a CLIP vision model; the toy world: its
judge's feature layers) is the nearest a trainer can get to that without one.

The encoder is any callable from pictures [N, 3, H, W] in 0..1 to features [N, D]; the score is the mean cosine
similarity between the drawn pictures' features and the mean feature of the training pictures (centre squares).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .train_callbacks import Callback, validates_at

ImageEncoder = Callable[[torch.Tensor], torch.Tensor]
SEED_OFFSET = 104729  # picture checks draw with seeds no preview or validation uses


def square_pictures(images: list, size: int) -> torch.Tensor:
    """[N, 3, size, size] in 0..1: the centre square of each training picture (data.SourceImage), never stretched."""
    from .data import square_crop, to_tensor

    return torch.stack([(to_tensor(square_crop(image.rgb, size, "center")) + 1) / 2 for image in images])


def encode(encoder: ImageEncoder, pictures: torch.Tensor) -> torch.Tensor:
    """Unit-length features [N, D] of pictures [N, 3, H, W] (the encoder's own output, flattened, as float32)."""
    with torch.no_grad():
        return unit_features(encoder(pictures))


def unit_features(features) -> torch.Tensor:
    """An encoder's output for N pictures as unit-length float32 rows [N, D]."""
    features = torch.as_tensor(features).detach().clone().float().cpu()  # ComfyUI hands out inference tensors
    return F.normalize(features.reshape(len(features), -1), dim=1)


def reference_of(training: torch.Tensor) -> torch.Tensor:
    """The unit mean of the training pictures' unit features: what every check is scored against."""
    return F.normalize(training.mean(0), dim=0)


def likeness(features: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean cosine similarity of unit features [N, D] to the unit reference [D]."""
    return float((features @ reference).mean())


def replaces(new: torch.Tensor, kept: torch.Tensor, margin: float) -> bool:
    """Whether a word whose check pictures have the cosines `new` replaces the kept word (cosines `kept`, the same
    seeds): its likeness is higher by more than `margin` standard errors of the mean paired difference (0: higher
    at all)."""
    if not margin:
        return float(new.mean()) > float(kept.mean())  # as `likeness` computes them
    difference = new.double() - kept.double()
    spread = difference.std() / len(difference) ** 0.5 if len(difference) > 1 else torch.zeros(())
    return bool(difference.mean() > margin * spread)


class PictureCheck(Callback):
    """At step 0 and at every validation: `picture_samples` pictures of `picture_prompt`, scored against the
    training pictures; the best-scored word is kept (`trainer.kept`) and is the one saved."""

    def __init__(self, config, encoder: ImageEncoder, images: list, resolution: int):
        self.config, self.encoder, self.resolution = config, encoder, resolution
        self.images = images
        self.reference = None

    def on_run_start(self, trainer) -> None:
        self.reference = reference_of(encode(self.encoder, square_pictures(self.images, self.resolution)))
        if not trainer.picture_scores:
            self.measure(trainer)  # the init word's pictures: where the likeness starts rising from

    def on_step_end(self, trainer) -> None:
        if validates_at(self.config, trainer.step):
            trainer.events.picture_score = self.measure(trainer)

    def draw(self, trainer) -> torch.Tensor:
        """[picture_samples, 3, H, W] in 0..1: the word's pictures, the same seeds at every check."""
        from . import templates
        from .embeddings import Embedding
        from .prompt import encode_pair
        from .sample import sample

        config = self.config
        prompt = templates.render(config.picture_prompt, f"embedding:{config.name}")
        positive, negative = encode_pair(trainer.model, prompt, "", [Embedding(config.name, trainer.vector_dict())])
        pictures = sample(trainer.model, positive, negative, sampler="ddim", steps=config.picture_steps,
                          cfg=config.picture_cfg, seed=config.seed + SEED_OFFSET, width=self.resolution,
                          height=self.resolution, batch=config.picture_samples)
        return pictures.permute(0, 3, 1, 2)

    def measure(self, trainer) -> float:
        cosines = encode(self.encoder, self.draw(trainer)) @ self.reference
        score = float(cosines.mean())  # likeness()
        trainer.picture_scores.append((trainer.step, score))
        if trainer.kept is None:
            better = True
        elif trainer.kept_cosines is None:  # kept by a resume state written before the cosines were kept
            better = score > trainer.kept_score
        else:
            better = replaces(cosines, torch.tensor(trainer.kept_cosines), self.config.picture_keep_margin)
        if better:
            trainer.keep(score, cosines.tolist())
        trainer.kept_steps.append((trainer.step, trainer.kept_step))
        return score
