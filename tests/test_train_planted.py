"""Planted-concept recovery on the built-in toy-world model: pictures are drawn with a hidden vector v* in place of
a word, a new word is trained on them from another init, and its denoising loss on those pictures (fixed draws)
must come close to v*'s and fall well below the init's. The numbers go into the trainer's closing note."""

from __future__ import annotations

import pytest
import torch

from conftest import loss_probe
from ti_core.data import SourceImage
from ti_core.embeddings import Embedding
from ti_core.prompt import encode_pair, token_ids
from ti_core.sample import sample, to_pil
from ti_core.toyworld.model import load_toy_model
from ti_core.train import TrainConfig, init_vectors, train

pytestmark = pytest.mark.slow  # trains or samples on the built-in model for a minute or more


def _hidden_vector(model, seed: int) -> torch.Tensor:
    """v*: a random blend of a colour word's and a shape word's vectors, plus noise: a concept the model can draw,
    but no single word of the vocabulary."""
    generator = torch.Generator().manual_seed(seed)
    table = model.text_encoders[0].get_input_embeddings().weight.detach()
    colour, shape = ("green", "orange")[seed % 2], ("ring", "diamond")[seed % 2]
    mix = torch.rand(2, generator=generator) * 0.4 + 0.8
    rows = [table[token_ids(model.tokenizers[0], w)[0]] for w in (colour, shape)]
    v = mix[0] * rows[0] + mix[1] * rows[1]
    return (v + torch.randn(v.shape, generator=generator) * 0.1 * v.norm() / v.numel() ** 0.5).unsqueeze(0)


def test_training_recovers_a_planted_vector():
    model = load_toy_model()
    v_star = _hidden_vector(model, seed=0)
    planted = Embedding("planted", {"emb_params": v_star})
    positive, negative = encode_pair(model, "a photo of a embedding:planted", "", [planted])
    pictures = to_pil(sample(model, positive, negative, sampler="ddim", steps=25, cfg=5.0, seed=0, batch=6))
    images = [SourceImage(path=None, rgb=p, alpha=None) for p in pictures]

    config = TrainConfig(name="learned", init_text="shape", steps=150, learning_rate="1e-2", batch_size=6,
                         crop="center", flip=False, template="captions", seed=0)
    learned = train(model, images, config).embedding.vectors["emb_params"]
    probe = loss_probe(model, images, config, samples=96, seed=99)
    init = init_vectors(model, "shape", 1, torch.Generator())
    losses = {"v*": probe([v_star]), "learned": probe([learned]), "init": probe(init)}
    print("planted-concept losses:", {k: round(v, 5) for k, v in losses.items()})
    gap = losses["init"] - losses["v*"]
    assert gap > 0.05 * losses["v*"], losses  # the init is clearly worse than the planted vector (11% here)
    assert losses["learned"] < losses["init"] - 0.8 * gap, losses  # >= 80% of the gap closed
