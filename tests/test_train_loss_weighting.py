"""Min-SNR loss weighting: the weights themselves, and why the trainer needs them: on pictures of a green dotted
heart, the plain (uniform-timestep) denoising loss of the built-in toy model prefers the words "black dotted heart"
to the true ones, so a word trained on it draws a black heart; the weighted loss prefers the truth."""

from __future__ import annotations

import pytest
import torch

from conftest import loss_probe
from ti_core.loss_weights import min_snr_weights, snr
from ti_core.prompt import token_ids
from ti_core.toyworld.concept import Concept, draw_concept
from ti_core.train import TrainConfig

ALPHAS = torch.linspace(0.999, 0.001, 1000)


def test_weights_cap_the_low_noise_timesteps_only():
    t = torch.tensor([0, 100, 500, 999])
    ratio = snr(ALPHAS, t)
    assert torch.equal(min_snr_weights(ALPHAS, t, "epsilon", 0.0), torch.ones(4))
    eps = min_snr_weights(ALPHAS, t, "epsilon", 5.0)
    assert torch.allclose(eps, torch.where(ratio > 5, 5 / ratio, torch.ones(4)))
    assert eps[0] < 0.01 and eps[-1] == 1.0
    v = min_snr_weights(ALPHAS, t, "v_prediction", 5.0)
    assert torch.allclose(v, ratio.clamp(max=5) / (ratio + 1))


@pytest.fixture(scope="module")
def toy():
    from ti_core.toyworld.model import load_toy_model

    return load_toy_model()


def test_the_weighted_loss_prefers_the_true_concept(toy, tmp_path):
    images = draw_concept(tmp_path, Concept.parse("green dotted heart"), count=4, seed=0)
    table = toy.text_encoders[0].get_input_embeddings().weight.detach().float()

    def losses(gamma):
        config = TrainConfig(name="w", vectors=3, batch_size=8, crop="center", template="captions", snr_gamma=gamma)
        probe = loss_probe(toy, images, config, samples=48, seed=1234)
        return {w: probe([table[token_ids(toy.tokenizers[0], w)]]) for w in
                ("green dotted heart", "black dotted heart")}

    uniform, weighted = losses(0.0), losses(TrainConfig.snr_gamma)
    assert uniform["black dotted heart"] < uniform["green dotted heart"], uniform
    assert weighted["green dotted heart"] < 0.95 * weighted["black dotted heart"], weighted
