"""The trained vectors: where they start and how their length is kept.

Initialisation (`init`):
- "tokens": the init text's token vectors, spread over the n vectors (the paper, A1111, diffusers);
- "encoder": the text encoder's output for the init text at those tokens (Cross Initialization, Pang et al. 2024:
  the word starts where the encoder would take the class word, which shortens the way to the concept).

Length (`norm`):
- "free": the vectors move freely (the paper);
- "fixed": each vector keeps its initial length and only its direction is trained (Directional Textual Inversion):
  an overtrained word's length grows far beyond the vocabulary's and takes over the prompt;
- "vocab": a penalty pulls each vector's length toward the vocabulary's mean token length (weight `norm_weight`).
"""

from __future__ import annotations

import torch

from .prompt import run_encoder, token_ids

INIT_MODES = ("tokens", "encoder")
NORM_MODES = ("free", "fixed", "vocab")


def _spread(rows: torch.Tensor, n: int) -> torch.Tensor:
    """n vectors from the init tokens' rows: contiguous groups averaged, or the rows repeated in order."""
    if len(rows) >= n:
        return torch.stack([g.mean(0) for g in torch.tensor_split(rows, n)])
    return rows[[i % len(rows) for i in range(n)]].clone()


def init_vectors(model, text: str, n: int, generator: torch.Generator, mode: str = "tokens") -> list:
    """Per text encoder an [n, D] fp32 tensor: the init text's token vectors (or the encoder's output for them)
    spread over n; random vectors with the vocabulary's scale when the text is empty."""
    tokenizer = model.tokenizers[0]
    ids = token_ids(tokenizer, text) if text.strip() else []
    out = []
    for index, encoder in enumerate(model.text_encoders):
        table = encoder.get_input_embeddings().weight.detach().float()
        if not ids:
            out.append(torch.randn(n, table.shape[1], generator=generator) * table.std())
            continue
        if mode == "encoder":
            bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
            input_ids = torch.tensor([[bos, *ids, eos]], device=model.device)
            with torch.no_grad():
                hidden, _ = run_encoder(model, index, input_ids)
            rows = hidden[0, 1:1 + len(ids)].float().cpu()
        else:
            rows = table[ids]
        out.append(_spread(rows, n))
    return out


def vocab_norm(model) -> list:
    """Per text encoder, the mean length of its token vectors."""
    return [float(e.get_input_embeddings().weight.detach().float().norm(dim=1).mean()) for e in model.text_encoders]


def effective(params: list, mode: str, lengths: list) -> list:
    """The vectors the prompt gets: `params` as they are, or rescaled to `lengths` (per encoder, [n]) when fixed."""
    if mode != "fixed":
        return params
    return [p * (length.to(p.device) / p.norm(dim=1).clamp_min(1e-12)).unsqueeze(1)
            for p, length in zip(params, lengths)]


def norm_penalty(params: list, targets: list) -> torch.Tensor:
    """Mean squared relative gap between each vector's length and its encoder's target length."""
    gaps = [((p.norm(dim=1) - t) / t) ** 2 for p, t in zip(params, targets)]
    return torch.cat(gaps).mean()
