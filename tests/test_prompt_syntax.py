"""Tests for ti_core.prompt_syntax: A1111/ComfyUI weighting, escapes, embedding references, BREAK."""

import random

import pytest

from ti_core.prompt_syntax import Break, EmbeddingRef, Text, parse_prompt


def simple(prompt):
    """Segments as tuples with rounded weights, for compact expectations."""
    out = []
    for seg in parse_prompt(prompt):
        if isinstance(seg, Text):
            out.append(("t", seg.text, round(seg.weight, 6)))
        elif isinstance(seg, EmbeddingRef):
            out.append((seg.syntax, seg.name, round(seg.weight, 6)))
        else:
            out.append(("BREAK",))
    return out


# --- plain text and merging -------------------------------------------------------------------------


def test_plain_text_is_one_segment():
    assert parse_prompt("a photo of a cat, high quality") == [Text("a photo of a cat, high quality")]


def test_empty_prompt_and_empty_groups():
    assert parse_prompt("") == []
    assert parse_prompt("()") == []
    assert parse_prompt("(:1.3)[]") == []


def test_whitespace_is_kept_and_equal_weights_merge():
    assert parse_prompt("a (b) c") == [Text("a "), Text("b", pytest.approx(1.1)), Text(" c")]
    assert simple("a (b)(c) d") == [("t", "a ", 1.0), ("t", "bc", 1.1), ("t", " d", 1.0)]
    assert simple("(a:1.0)b") == [("t", "ab", 1.0)]


# --- weights ---------------------------------------------------------------------------------------


def test_explicit_weight():
    [seg] = parse_prompt("(text:1.2)")
    assert seg.text == "text" and seg.weight == pytest.approx(1.2)


@pytest.mark.parametrize(
    "prompt,weight",
    [("(a:1)", 1.0), ("(a:1.2)", 1.2), ("(a:.5)", 0.5), ("(a:2.)", 2.0), ("(a:-0.3)", -0.3),
     ("(a:+1.5)", 1.5), ("(a: 0.7 )", 0.7), ("(a)", 1.1), ("[a]", 1 / 1.1)],
)
def test_weight_forms(prompt, weight):
    [seg] = parse_prompt(prompt)
    assert seg == Text("a", pytest.approx(weight))


def test_nesting_multiplies_as_in_a1111():
    assert parse_prompt("((a))") == [Text("a", pytest.approx(1.21))]
    assert parse_prompt("[[a]]") == [Text("a", pytest.approx(1 / 1.21))]
    assert parse_prompt("((a):1.5)") == [Text("a", pytest.approx(1.65))]
    # ComfyUI would give 1.5 here (an explicit weight replaces the outer one); A1111 multiplies.
    assert parse_prompt("((a:1.5))") == [Text("a", pytest.approx(1.65))]
    assert simple("(a (b:2) c:0.5)") == [("t", "a ", 0.5), ("t", "b", 1.0), ("t", " c", 0.5)]
    assert simple("([a])") == [("t", "a", 1.0)]


def test_colon_without_number_is_text():
    assert parse_prompt("(foo:bar)") == [Text("foo:bar", pytest.approx(1.1))]
    assert parse_prompt("(a:1.2:0.5)") == [Text("a:1.2", pytest.approx(0.5))]
    assert parse_prompt("a: b") == [Text("a: b")]
    assert parse_prompt("(a:1e3)") == [Text("a:1e3", pytest.approx(1.1))]
    assert parse_prompt("[a:0.5]") == [Text("a:0.5", pytest.approx(1 / 1.1))]


# --- escapes and unbalanced brackets -------------------------------------------------------------------


def test_escapes_are_literal():
    assert parse_prompt(r"\(a\) \[b\] c\\d") == [Text(r"(a) [b] c\d")]
    assert parse_prompt(r"(x \(y\):1.5)") == [Text("x (y)", pytest.approx(1.5))]
    assert parse_prompt(r"a\b") == [Text(r"a\b")]  # a backslash before anything else stays
    assert parse_prompt("a\\") == [Text("a\\")]


def test_unmatched_open_runs_to_end():
    assert simple("a (b c") == [("t", "a ", 1.0), ("t", "b c", 1.1)]
    assert simple("a [b c") == [("t", "a ", 1.0), ("t", "b c", round(1 / 1.1, 6))]
    assert simple("((a) b") == [("t", "a", 1.21), ("t", " b", 1.1)]


def test_unmatched_close_is_literal():
    assert parse_prompt("a) b]") == [Text("a) b]")]
    assert parse_prompt("a:1.2) b") == [Text("a:1.2) b")]
    assert simple("(a)) b") == [("t", "a", 1.1), ("t", ") b", 1.0)]


def test_round_and_square_are_separate_stacks():
    # As in A1111: "( a [ b ) c ]" closes the round group at ")" and the square one at "]".
    assert simple("(a [b) c]") == [("t", "a ", 1.1), ("t", "b", 1.0), ("t", " c", round(1 / 1.1, 6))]


# --- embedding references ---------------------------------------------------------------------------


def test_comfy_embedding_keeps_surrounding_whitespace():
    assert parse_prompt("a photo of embedding:cat on grass") == [
        Text("a photo of "), EmbeddingRef("cat"), Text(" on grass")]


@pytest.mark.parametrize(
    "name", ["my-cat", "sub/dir/style", "v2_x.pt", "style.safetensors", "a.bin", "Kätzchen", "日本", "x1"])
def test_comfy_embedding_names(name):
    assert parse_prompt(f"embedding:{name}") == [EmbeddingRef(name, syntax="comfy")]


def test_comfy_embedding_terminators():
    assert parse_prompt("(embedding:cat:0.8)") == [EmbeddingRef("cat", pytest.approx(0.8))]
    assert parse_prompt("embedding:cat,dog") == [EmbeddingRef("cat"), Text(",dog")]
    assert parse_prompt("[embedding:cat]") == [EmbeddingRef("cat", pytest.approx(1 / 1.1))]
    assert parse_prompt("(embedding:cat)") == [EmbeddingRef("cat", pytest.approx(1.1))]
    assert parse_prompt("x,embedding:cat.") == [Text("x,"), EmbeddingRef("cat"), Text(".")]
    assert parse_prompt("embedding:a\tb") == [EmbeddingRef("a"), Text("\tb")]
    assert parse_prompt(r"embedding:a\(b") == [EmbeddingRef("a"), Text("(b")]


def test_comfy_embedding_needs_word_start_and_a_name():
    assert parse_prompt("myembedding:cat") == [Text("myembedding:cat")]
    assert parse_prompt("a embedding:") == [Text("a embedding:")]
    assert parse_prompt("embedding: cat") == [Text("embedding: cat")]
    assert parse_prompt("embedding:...") == [Text("embedding:...")]
    assert parse_prompt("Embedding:cat") == [Text("Embedding:cat")]


def test_angle_embedding():
    assert parse_prompt("<my-cat>") == [EmbeddingRef("my-cat", syntax="angle")]
    assert parse_prompt("a <cat-toy> on a (<sub/x.pt>:1.3)") == [
        Text("a "), EmbeddingRef("cat-toy", syntax="angle"), Text(" on a "),
        EmbeddingRef("sub/x.pt", pytest.approx(1.3), syntax="angle")]
    assert parse_prompt("photo<cat>") == [Text("photo"), EmbeddingRef("cat", syntax="angle")]


@pytest.mark.parametrize("prompt", ["<lora:foo:0.8>", "<a b>", "<>", "<a(b)>", "a < b > c", "<a:b>"])
def test_angle_non_names_stay_text(prompt):
    assert not any(isinstance(s, EmbeddingRef) for s in parse_prompt(prompt))


def test_angle_inner_name_after_extra_bracket():
    assert parse_prompt("<<a>") == [Text("<"), EmbeddingRef("a", syntax="angle")]
    assert parse_prompt("<lora:foo:0.8>") == [Text("<lora:foo:0.8>")]


def test_star_placeholder():
    star = EmbeddingRef("*", syntax="star")
    assert parse_prompt("*") == [star]
    assert parse_prompt("a photo of *") == [Text("a photo of "), star]
    assert parse_prompt("*, painting.") == [star, Text(", painting.")]
    assert parse_prompt("(*:1.4)") == [EmbeddingRef("*", pytest.approx(1.4), syntax="star")]
    assert parse_prompt("a.*.b") == [Text("a."), star, Text(".b")]
    assert parse_prompt("[*]") == [EmbeddingRef("*", pytest.approx(1 / 1.1), syntax="star")]


@pytest.mark.parametrize("prompt", ["a*b", "**bold**", "x*", "*x", "2*3"])
def test_star_inside_a_word_is_text(prompt):
    assert parse_prompt(prompt) == [Text(prompt)]


# --- BREAK ------------------------------------------------------------------------------------------


def test_break():
    assert parse_prompt("a cat BREAK a dog") == [Text("a cat"), Break(), Text("a dog")]
    assert parse_prompt("BREAK") == [Break()]
    assert parse_prompt("a,BREAK,b") == [Text("a,"), Break(), Text(",b")]
    assert parse_prompt("(a BREAK b)") == [Text("a", pytest.approx(1.1)), Break(), Text("b", pytest.approx(1.1))]
    assert parse_prompt("BREAK BREAK") == [Break(), Break()]


@pytest.mark.parametrize("prompt", ["break", "Break", "BREAKING", "aBREAK", "BREAK_1"])
def test_break_must_be_a_separate_upper_case_word(prompt):
    assert parse_prompt(prompt) == [Text(prompt)]


# --- properties ------------------------------------------------------------------------------------

ALPHABET = "ab ()[]:.,\\<>*1.2embdig"


def _is_subsequence(needle, haystack):
    it = iter(haystack)
    return all(c in it for c in needle)


def _check_invariants(prompt):
    segs = parse_prompt(prompt)
    # Texts and reference names, in order, are a subsequence of the input: nothing is invented or moved.
    produced = "".join(s.text if isinstance(s, Text) else s.name for s in segs if not isinstance(s, Break))
    assert _is_subsequence(produced, prompt), (prompt, segs)
    for prev, seg in zip(segs, segs[1:]):
        assert not (isinstance(prev, Text) and isinstance(seg, Text) and prev.weight == seg.weight)
    for seg in segs:
        if isinstance(seg, Text):
            assert seg.text and isinstance(seg.weight, float)
        elif isinstance(seg, EmbeddingRef):
            assert seg.name and isinstance(seg.weight, float)
            assert seg.syntax in ("comfy", "angle", "star")


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is optional
    st = None


if st is not None:

    @settings(max_examples=3000, deadline=None)
    @given(st.text(alphabet=ALPHABET, max_size=40))
    def test_random_prompts_never_raise_or_invent(prompt):
        _check_invariants(prompt)

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet="abcxyz ,.", max_size=30))
    def test_prompts_without_syntax_are_one_text(prompt):
        assert parse_prompt(prompt) == ([Text(prompt)] if prompt else [])

else:  # pragma: no cover

    def test_random_prompts_never_raise_or_invent():
        rng = random.Random(1234)
        for _ in range(3000):
            _check_invariants("".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40))))


def test_seeded_random_prompts_never_raise_or_invent():
    rng = random.Random(20240607)
    words = ["embedding:", "BREAK", "<a>", " * ", "(", ")", "[", "]", ":1.2)", "\\", "a", " ", ","]
    for _ in range(2000):
        _check_invariants("".join(rng.choice(words + list(ALPHABET)) for _ in range(rng.randint(0, 25))))
