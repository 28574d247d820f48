"""Encode prompts into conditioning tensors, with embeddings spliced in at the token-embedding layer.

SD1/SD2: the text encoder's last hidden states [1, 77k, D]. SDXL: both encoders' penultimate hidden states
concatenated [1, 77k, 768+1280], plus the second encoder's pooled, projected output [1, 1280].

An embedding's n vectors take n token slots. They are written over the output of the token-embedding layer
by a forward hook for the duration of one call, so the tokenizer and the vocabulary are never changed and
two prompts with different embeddings can be encoded one after the other. Prompts are cut into chunks of 75
tokens (plus start and end), and an embedding never straddles two chunks.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import torch

from .embeddings import MAX_VECTORS, Embedding, name_from_path
from .errors import PromptError, SettingError, UnknownEmbeddingError
from .prompt_syntax import Break, EmbeddingRef, Text, parse_prompt

CHUNK = 75  # tokens per chunk between the start and end tokens (CLIP's 77 positions)
PLACEHOLDER_ID = 265  # "*": stands in the ids where vectors are spliced (any id but the end token works)
WEIGHTINGS = ("comfy", "a1111")


@dataclass
class Conditioning:
    embeds: torch.Tensor  # [1, 77 * chunks, D]
    pooled: torch.Tensor | None = None  # [1, P] (SDXL only)

    @property
    def chunks(self) -> int:
        return self.embeds.shape[1] // 77


@dataclass
class Slot:
    """One token position: a vocabulary id, or row `row` of an embedding."""

    weight: float
    token_id: int | None = None
    embedding: Embedding | None = None
    row: int = 0


Resolver = Callable[[str], "Embedding | None"]


def as_embedding_dict(embeddings) -> dict:
    if embeddings is None:
        return {}
    if isinstance(embeddings, Mapping):
        return dict(embeddings)
    return {e.name: e for e in embeddings}


def encode_prompt(
    model,
    prompt: str,
    embeddings: Mapping[str, Embedding] | Iterable[Embedding] = (),
    *,
    resolver: Resolver | None = None,
    weighting: str = "comfy",
    min_chunks: int = 1,
) -> Conditioning:
    """Conditioning for one prompt. `embeddings` are looked up by name (`embedding:name`, `<name>`, and `*` when
    exactly one is given); `resolver(name)` is asked for names not in it (e.g. files in an embeddings folder).
    `weighting`: "comfy" scales each weighted token's distance from the empty prompt's; "a1111" scales the
    token and restores the chunk's mean."""
    if weighting not in WEIGHTINGS:
        raise SettingError(f"weighting {weighting!r} is not one of {', '.join(WEIGHTINGS)}.")
    chunks = prompt_chunks(model, prompt, embeddings, resolver)
    while len(chunks) < min_chunks:
        chunks.append([])
    hidden, pooled = [], None
    for index in range(len(model.text_encoders)):
        with torch.no_grad():
            z, pool = _encode_chunks(model, index, chunks)
        weights = torch.tensor([_weights_row(c) for c in chunks], dtype=torch.float32, device=model.device)
        if (weights != 1.0).any():
            z = _apply_weights(model, index, z, weights, weighting)
        hidden.append(z)
        if index == 1:
            pooled = pool[:1]
    embeds = torch.cat(hidden, dim=-1).reshape(1, -1, sum(h.shape[-1] for h in hidden))
    return Conditioning(embeds=embeds, pooled=pooled)


def token_ids(tokenizer, text: str) -> list:
    """The vocabulary ids of `text`, without start/end tokens. The backend tokenizer gives the same ids as the
    tokenizer itself, without its warning that a long prompt exceeds 77 tokens (prompts are chunked here)."""
    return tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids


def prompt_chunks(model, prompt: str, embeddings=(), resolver: Resolver | None = None) -> list:
    """The prompt as chunks (lists of `Slot`, at most 75 each), embeddings resolved and checked to fit."""
    return _chunk(_slots(model, parse_prompt(prompt), as_embedding_dict(embeddings), resolver))


def encode_pair(model, positive: str, negative: str = "", embeddings=(), **kwargs) -> tuple:
    """(positive, negative) conditioning with the same number of chunks, as classifier-free guidance needs."""
    pos = encode_prompt(model, positive, embeddings, **kwargs)
    neg = encode_prompt(model, negative, embeddings, min_chunks=pos.chunks, **kwargs)
    if neg.chunks > pos.chunks:
        pos = encode_prompt(model, positive, embeddings, min_chunks=neg.chunks, **kwargs)
    return pos, neg


# ---------------------------------------------------------------------------------------------------------
# tokens and chunks


def _lookup(ref: EmbeddingRef, known: dict, resolver: Resolver | None) -> Embedding | None:
    for key in (ref.name, name_from_path(ref.name)):
        if key in known:
            return known[key]
    found = resolver(ref.name) if resolver else None
    if found is not None:
        return found
    if ref.syntax == "star":
        # The original textual-inversion placeholder: the one embedding given, else just the character.
        return next(iter(known.values())) if len(known) == 1 else None
    names = ", ".join(sorted(known)) or "none were given"
    raise UnknownEmbeddingError(
        f"the prompt uses embedding {ref.name!r}, which is not loaded (known embeddings: {names}). "
        "Check the spelling, or add the embedding file."
    )


def _slots(model, segments, known: dict, resolver) -> list:
    """A list of groups of slots (a group never splits across chunks) and None for each BREAK."""
    tokenizer = model.tokenizers[0]
    groups = []
    for seg in segments:
        if isinstance(seg, Break):
            groups.append(None)
            continue
        embedding = _lookup(seg, known, resolver) if isinstance(seg, EmbeddingRef) else None
        if embedding is None:
            text = seg.text if isinstance(seg, Text) else seg.name
            ids = token_ids(tokenizer, text)
            groups.extend([Slot(seg.weight, token_id=i)] for i in ids)
            continue
        if embedding.num_vectors > MAX_VECTORS:
            raise PromptError(f"embedding {embedding.name!r} has {embedding.num_vectors} vectors; at most 75 fit.")
        for i, (keys, width) in enumerate(zip(model.embedding_keys, model.embedding_widths)):
            embedding.vectors_for(keys, width, f"text encoder {i + 1}")  # raises if it does not fit
        groups.append([Slot(seg.weight, embedding=embedding, row=r) for r in range(embedding.num_vectors)])
    return groups


def _chunk(groups: list) -> list:
    chunks, current = [], []
    for group in groups:
        if group is None or len(current) + len(group) > CHUNK:
            chunks.append(current)
            current = []
        if group is not None:
            current.extend(group)
    chunks.append(current)
    return chunks


def _weights_row(chunk: list) -> list:
    return [1.0] + [s.weight for s in chunk] + [1.0] * (CHUNK + 1 - len(chunk))


# ---------------------------------------------------------------------------------------------------------
# encoding


@contextlib.contextmanager
def splice(encoder, mask: torch.Tensor, values: torch.Tensor):
    """While active, the token-embedding output at `mask` [B, 77] positions is replaced by `values` [B, 77, D].

    Differentiable in `values`, so the trainer can learn vectors through the frozen encoder.
    """

    def hook(module, args, output):
        return torch.where(mask.unsqueeze(-1), values.to(output.dtype), output)

    handle = encoder.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def chunk_ids(tokenizer, chunk: list) -> list:
    body = [PLACEHOLDER_ID if s.token_id is None else s.token_id for s in chunk]
    ids = [tokenizer.bos_token_id] + body + [tokenizer.eos_token_id]
    return ids + [tokenizer.pad_token_id] * (CHUNK + 2 - len(ids))


def run_encoder(model, index: int, input_ids: torch.Tensor, mask=None, values=None):
    """(hidden states [B, 77, D], pooled or None) of text encoder `index` as the model family conditions on."""
    encoder = model.text_encoders[index]
    penultimate = model.family == "sdxl"
    with splice(encoder, mask, values) if mask is not None else contextlib.nullcontext():
        out = encoder(input_ids=input_ids, output_hidden_states=penultimate)
    hidden = out.hidden_states[-2] if penultimate else out.last_hidden_state
    return hidden, getattr(out, "text_embeds", None)


def _encode_chunks(model, index: int, chunks: list):
    tokenizer = model.tokenizers[index]
    keys, width = model.embedding_keys[index], model.embedding_widths[index]
    ids = torch.tensor([chunk_ids(tokenizer, c) for c in chunks], device=model.device)
    mask = torch.zeros(ids.shape, dtype=torch.bool, device=model.device)
    values = torch.zeros(*ids.shape, width, dtype=torch.float32, device=model.device)
    for b, chunk in enumerate(chunks):
        for p, slot in enumerate(chunk, start=1):
            if slot.embedding is not None:
                mask[b, p] = True
                values[b, p] = slot.embedding.vectors_for(keys, width)[slot.row].to(model.device)
    return run_encoder(model, index, ids, mask if mask.any() else None, values)


def _apply_weights(model, index: int, z: torch.Tensor, weights: torch.Tensor, weighting: str) -> torch.Tensor:
    w = weights.unsqueeze(-1).to(z.dtype)
    if weighting == "comfy":
        with torch.no_grad():
            empty, _ = _encode_chunks(model, index, [[]])
        weighted = (z - empty) * w + empty
        return torch.where(w != 1.0, weighted, z)
    mean_before = z.float().mean(dim=(1, 2), keepdim=True)
    scaled = z * w
    return scaled * (mean_before / scaled.float().mean(dim=(1, 2), keepdim=True)).to(z.dtype)
