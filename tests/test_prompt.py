"""Prompt encoding: the splice equals real vocabulary rows, weights, chunks, and embedding errors."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import TINY, random_embedding
from ti_core.errors import EmbeddingError, EmbeddingWidthError, UnknownEmbeddingError
from ti_core.prompt import encode_pair, encode_prompt


def _by_hand(model, words: str, embedding):
    """Conditioning of '<words> <embedding>' with the vectors written into new vocabulary rows of a copy."""
    hidden, pooled = [], None
    for index, (tokenizer, encoder) in enumerate(zip(model.tokenizers, model.text_encoders)):
        encoder = copy.deepcopy(encoder)
        vectors = embedding.vectors_for(model.embedding_keys[index], model.embedding_widths[index])
        old = encoder.get_input_embeddings().weight.shape[0]
        encoder.resize_token_embeddings(old + vectors.shape[0])
        with torch.no_grad():
            encoder.get_input_embeddings().weight[old:] = vectors
        ids = [tokenizer.bos_token_id] + tokenizer(words, add_special_tokens=False).input_ids
        ids += list(range(old, old + vectors.shape[0])) + [tokenizer.eos_token_id]
        ids += [tokenizer.pad_token_id] * (77 - len(ids))
        with torch.no_grad():
            out = encoder(input_ids=torch.tensor([ids]), output_hidden_states=True)
        hidden.append(out.hidden_states[-2] if model.family == "sdxl" else out.last_hidden_state)
        if index == 1:
            pooled = out.text_embeds
    return torch.cat(hidden, dim=-1), pooled


@pytest.mark.parametrize("arch", TINY)
def test_embedding_reference_equals_new_vocabulary_rows(arch, loaded):
    model = loaded(arch)
    emb = random_embedding(model, "x", n=3)
    expected, expected_pooled = _by_hand(model, "a photo of", emb)
    for prompt in ("a photo of embedding:x", "a photo of <x>", "a photo of *"):
        cond = encode_prompt(model, prompt, [emb])
        assert cond.embeds.shape == expected.shape
        assert torch.allclose(cond.embeds, expected, atol=1e-6, rtol=0), prompt
        if model.family == "sdxl":
            assert cond.pooled.shape == (1, 64)
            assert torch.allclose(cond.pooled, expected_pooled, atol=1e-6, rtol=0)
        else:
            assert cond.pooled is None


def test_vocabulary_and_tokenizer_are_never_mutated(loaded):
    model = loaded("tiny-sdxl")
    before = [te.get_input_embeddings().weight.clone() for te in model.text_encoders]
    sizes = [len(t) for t in model.tokenizers]
    a, b = random_embedding(model, "a", seed=1), random_embedding(model, "b", seed=2)
    first = encode_prompt(model, "embedding:a", [a, b]).embeds
    second = encode_prompt(model, "embedding:b", [a, b]).embeds
    again = encode_prompt(model, "embedding:a", [a, b]).embeds
    assert not torch.equal(first, second) and torch.equal(first, again)
    assert [len(t) for t in model.tokenizers] == sizes
    assert all(torch.equal(w, te.get_input_embeddings().weight) for w, te in zip(before, model.text_encoders))
    assert all(not h._forward_hooks for te in model.text_encoders for h in [te.get_input_embeddings()])


def test_several_embeddings_each_take_their_own_slots(loaded):
    model = loaded("tiny-sd1")
    a, b = random_embedding(model, "a", n=2, seed=1), random_embedding(model, "b", n=3, seed=2)
    both = encode_prompt(model, "embedding:a and <b>", [a, b]).embeds
    only_a = encode_prompt(model, "embedding:a and", [a]).embeds
    # CLIP attention is causal: positions 0-3 (start, a, a, "and") are the same; 4-6 hold b's three vectors
    assert torch.equal(both[0, :4], only_a[0, :4])
    assert not torch.allclose(both[0, 4:7], only_a[0, 4:7])


@pytest.mark.parametrize("weighting", ["comfy", "a1111"])
def test_weight_one_is_the_identity(weighting, loaded):
    model = loaded("tiny-sdxl")
    emb = random_embedding(model, "x")
    plain = encode_prompt(model, "a photo of embedding:x on grass", [emb], weighting=weighting)
    for prompt in ("(a photo:1.0) of (embedding:x:1.0) on grass", "(a photo of embedding:x on grass:1)"):
        weighted = encode_prompt(model, prompt, [emb], weighting=weighting)
        assert torch.equal(weighted.embeds, plain.embeds), prompt
        assert torch.equal(weighted.pooled, plain.pooled)


def test_comfy_weighting_scales_only_the_weighted_tokens_from_the_empty_prompt(loaded):
    model = loaded("tiny-sd1")
    emb = random_embedding(model, "x", n=2)
    plain = encode_prompt(model, "a photo of embedding:x", [emb]).embeds
    weighted = encode_prompt(model, "a photo of (embedding:x:1.5)", [emb]).embeds
    empty = encode_prompt(model, "").embeds
    changed = [i for i in range(77) if not torch.equal(plain[0, i], weighted[0, i])]
    assert changed == [4, 5]
    expected = (plain[0, 4:6] - empty[0, 4:6]) * 1.5 + empty[0, 4:6]
    assert torch.allclose(weighted[0, 4:6], expected, atol=1e-6)


def test_long_prompts_are_chunked_and_an_embedding_never_straddles(loaded):
    model = loaded("tiny-sd1")
    emb = random_embedding(model, "x", n=4)
    words = " ".join(["cat"] * 73)  # "cat" is one token: 73 tokens, 2 left in the first chunk
    cond = encode_prompt(model, f"{words} embedding:x dog", [emb])
    assert cond.embeds.shape == (1, 154, 32)
    # the 4 vectors do not fit in the 2 free slots, so they start the second chunk: same as a BREAK there
    explicit = encode_prompt(model, f"{words} BREAK embedding:x dog", [emb])
    assert torch.equal(cond.embeds, explicit.embeds)
    first, second = encode_prompt(model, words).embeds, encode_prompt(model, "embedding:x dog", [emb]).embeds
    assert torch.equal(cond.embeds[:, :77], first) and torch.equal(cond.embeds[:, 77:], second)


def test_pair_is_padded_to_the_same_number_of_chunks(loaded):
    model = loaded("tiny-sd2")
    pos, neg = encode_pair(model, "a " * 120, "blurry")
    assert pos.embeds.shape == neg.embeds.shape == (1, 154, 48)
    neg2, pos2 = encode_pair(model, "blurry", "a " * 160)
    assert neg2.embeds.shape == pos2.embeds.shape == (1, 231, 48)


def test_unknown_embedding_lists_the_known_names(loaded):
    model = loaded("tiny-sd1")
    with pytest.raises(UnknownEmbeddingError, match=r"'missing'.*known embeddings: a, b"):
        encode_prompt(model, "embedding:missing", [random_embedding(model, "b"), random_embedding(model, "a")])
    with pytest.raises(UnknownEmbeddingError, match="none were given"):
        encode_prompt(model, "a <missing> cat")


def test_bare_star_is_text_unless_exactly_one_embedding_is_given(loaded):
    model = loaded("tiny-sd1")
    as_text = encode_prompt(model, "a * b").embeds
    two = [random_embedding(model, "p"), random_embedding(model, "q")]
    assert torch.equal(as_text, encode_prompt(model, "a * b", two).embeds)
    assert not torch.equal(as_text, encode_prompt(model, "a * b", [random_embedding(model, "p")]).embeds)


def test_resolver_finds_names_not_given(loaded):
    model = loaded("tiny-sd1")
    emb = random_embedding(model, "style")
    asked = []
    cond = encode_prompt(model, "embedding:style.safetensors", resolver=lambda n: asked.append(n) or emb)
    assert asked == ["style.safetensors"]
    assert torch.equal(cond.embeds, encode_prompt(model, "embedding:style", [emb]).embeds)


def test_width_mismatch_names_both_widths(loaded):
    sd1, sd2 = loaded("tiny-sd1"), loaded("tiny-sd2")
    with pytest.raises(EmbeddingWidthError, match="32-wide.*takes 48-wide"):
        encode_prompt(sd2, "embedding:x", [random_embedding(sd1, "x")])


def test_sdxl_embedding_missing_clip_g_says_which(loaded):
    from ti_core.embeddings import Embedding

    xl = loaded("tiny-sdxl")
    only_l = Embedding("half", {"clip_l": torch.randn(1, 32)})
    with pytest.raises(EmbeddingError, match="no vectors for text encoder 2.*clip_g"):
        encode_prompt(xl, "embedding:half", [only_l])
    sd1_style = Embedding("sd1", {"emb_params": torch.randn(1, 32)})
    with pytest.raises(EmbeddingError, match="clip_l.*SD1/SD2 embedding"):
        encode_prompt(xl, "embedding:sd1", [sd1_style])


def test_sd1_model_reads_the_clip_l_half_of_an_sdxl_embedding(loaded):
    from ti_core.embeddings import Embedding

    sd1 = loaded("tiny-sd1")
    v = torch.randn(2, 32)
    xl_file = Embedding("e", {"clip_l": v, "clip_g": torch.randn(2, 64)})
    assert torch.equal(
        encode_prompt(sd1, "embedding:e", [xl_file]).embeds,
        encode_prompt(sd1, "embedding:e", [Embedding("e", {"emb_params": v})]).embeds,
    )
