"""Per-timestep loss weights: which noise levels the word is taught at.

The plain denoising loss averages the noise-prediction error uniformly over timesteps. Its value is dominated by
the least noisy ones (t < 300), where the model repaints fine texture; an object's colour and layout are decided
at the noisy ones, whose errors are a hundred times smaller. So the uniform loss can prefer a word that gets the
texture a little closer over one that gets the colour right: in the built-in toy world, "black dotted heart"
has a lower uniform loss than the true "green dotted heart" on pictures of a green dotted heart, and a word trained
on it draws a black heart. Min-SNR weighting (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR
Weighting Strategy") caps each timestep's weight at gamma / SNR(t), which evens out the noise levels; with it the
true concept has the lowest loss on every held-out concept of the toy world (bench/toyworld_fidelity.py).
"""

from __future__ import annotations

import torch


def snr(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at timesteps t."""
    a = alphas_cumprod.to(torch.float64)[t.cpu()]
    return (a / (1 - a)).float()


def min_snr_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, prediction_type: str,
                    gamma: float) -> torch.Tensor:
    """[B] weights that turn each sample's prediction error into a min(SNR, gamma)-weighted x0 error (0 = all 1)."""
    if not gamma:
        return torch.ones(len(t))
    ratio = snr(alphas_cumprod, t)
    capped = ratio.clamp(max=gamma)
    # the v target's error is (SNR + 1) x the x0 error's scale, eps's is SNR x
    return capped / (ratio + 1) if prediction_type == "v_prediction" else capped / ratio
