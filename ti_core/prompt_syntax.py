"""Parse a Stable Diffusion prompt, as ComfyUI and AUTOMATIC1111 users write it, into weighted segments.

The encoder tokenizes each `Text`, gives every token the segment's weight, splices an embedding's vectors
where an `EmbeddingRef` stands and starts a new 75-token chunk at each `Break`.

Grammar (informal; anything that matches no rule is plain text, one character at a time)::

    prompt    := item*
    item      := escape | group | ref | "BREAK" | text
    escape    := "\\(" | "\\)" | "\\[" | "\\]" | "\\\\"      -> the character without its backslash
    group     := "(" item* ")"                  weight * 1.1
               | "(" item* ":" NUMBER ")"       weight * NUMBER   (spaces allowed around NUMBER)
               | "[" item* "]"                  weight / 1.1
    NUMBER    := [+-]? (digits ["." digits*] | "." digits)        (negative weights allowed, as in A1111)
    ref       := "embedding:" NAME    after start, whitespace, "," "(" or "["      syntax "comfy"
               | "<" ANGLE_NAME ">"                                                 syntax "angle"
               | "*"  standing alone: start/end, whitespace, ",", "." or a bracket on both sides, or
                      followed by a group's ":NUMBER)" as in "(*:1.2)"             syntax "star"
    NAME       := characters up to whitespace, ",", ":", a bracket or an escape; trailing dots are
                  sentence punctuation and stay text ("embedding:cat." -> "cat" + ".")
    ANGLE_NAME := no whitespace and none of <>:()[]   ("<lora:x:0.8>" is therefore plain text)
    BREAK      := the upper-case word, with the whitespace around it removed (as A1111 does)

Semantics, following A1111's `parse_prompt_attention`:

* Weights multiply through nesting: `((a))` = 1.21, `((a):1.5)` = 1.65, and `((a:1.5))` = 1.65 too.
  ComfyUI agrees except where an explicit `:w` group stands inside another group: there it *replaces*
  the enclosing weight (`((a:1.5))` = 1.5, `(x (a:2))` gives a 2.0). We follow A1111, so that a group
  means the same factor wherever it stands.
* Square brackets divide by 1.1, as in A1111 (ComfyUI keeps them as literal text). A1111's prompt
  editing `[a:b:0.5]` is not supported; it is read as a down-weighted group "a:b:0.5".
* `(` and `[` are tracked on separate stacks, as in A1111, so crossed groups `( [ ) ]` still work.
* An unmatched `(` or `[` weights the rest of the prompt as if it were closed at the end (A1111);
  an unmatched `)` or `]`, or a `:w)` with no open `(`, is literal text.
* A `:` not followed by `NUMBER )` is text: `(foo:bar)` is "foo:bar" at 1.1.

`parse_prompt` never raises for any string: every input has a parse, so `PromptError` is not used here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Text:
    """Plain text with its weight."""

    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class EmbeddingRef:
    """A reference to an embedding by name, as written (an extension such as ".pt" is kept)."""

    name: str
    weight: float = 1.0
    syntax: str = "comfy"  # "comfy" (embedding:name), "angle" (<name>) or "star" (bare *)


@dataclass(frozen=True)
class Break:
    """A1111's BREAK keyword: start a new 75-token chunk here."""


Segment = Text | EmbeddingRef | Break

_UP = 1.1
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
# A name character: not whitespace/comma/colon/bracket, and a backslash only when it starts no escape.
_NAME_CHAR = r"(?:[^\s,:()\[\]\\]|\\(?![()\[\]\\]))"
_ANGLE_CHAR = r"(?:[^\s<>:()\[\]\\]|\\(?![()\[\]\\]))"
_TOKEN = re.compile(
    rf"""
      \\(?P<escaped>[()\[\]\\])
    | (?P<open>[(\[])
    | :\s*(?P<weight>{_NUMBER})\s*\)
    | (?P<close>[)\]])
    | \s*\bBREAK\b\s*(?P<brk>)
    | (?<![^\s,(\[])embedding:(?P<comfy>{_NAME_CHAR}+)
    | <(?P<angle>{_ANGLE_CHAR}+)>
    | (?<![^\s,.()\[\]])(?P<star>\*)(?=$|[\s,.()\[\]]|:\s*{_NUMBER}\s*\))
    """,
    re.VERBOSE,
)


def parse_prompt(prompt: str) -> list[Segment]:
    """Split `prompt` into weighted `Text`, `EmbeddingRef` and `Break` segments (see the module docstring).

    Adjacent texts of equal weight are merged and empty texts dropped. Never raises for a `str`.
    """
    items: list[list] = []  # [Text | EmbeddingRef | Break, weight]; weights are applied when groups close
    stacks: dict[str, list[int]] = {"(": [], "[": []}  # index into `items` where each open group began

    def scale(start: int, factor: float) -> None:
        for item in items[start:]:
            item[1] *= factor

    pos = 0
    while pos < len(prompt):
        m = _TOKEN.match(prompt, pos)
        end = m.end() if m else pos + 1
        if m is None:
            items.append([prompt[pos], 1.0])
        elif m["escaped"] is not None:
            items.append([m["escaped"], 1.0])
        elif m["open"] is not None:
            stacks[m["open"]].append(len(items))
        elif m["weight"] is not None and stacks["("]:
            scale(stacks["("].pop(), float(m["weight"]))
        elif m["close"] is not None and stacks["(" if m["close"] == ")" else "["]:
            opener = "(" if m["close"] == ")" else "["
            scale(stacks[opener].pop(), _UP if opener == "(" else 1 / _UP)
        elif m["brk"] is not None:
            items.append([Break(), 1.0])
        elif m["comfy"] is not None and m["comfy"].rstrip("."):
            name = m["comfy"].rstrip(".")
            end = m.start("comfy") + len(name)
            items.append([EmbeddingRef(name, syntax="comfy"), 1.0])
        elif m["angle"] is not None:
            items.append([EmbeddingRef(m["angle"], syntax="angle"), 1.0])
        elif m["star"] is not None:
            items.append([EmbeddingRef("*", syntax="star"), 1.0])
        else:  # a closer or weight with nothing open, or "embedding:..." with only dots: literal text
            end = pos + 1
            items.append([prompt[pos], 1.0])
        pos = end

    # Unclosed groups run to the end of the prompt (A1111).
    for start in stacks["("]:
        scale(start, _UP)
    for start in stacks["["]:
        scale(start, 1 / _UP)
    return _merge(items)


def _merge(items: list[list]) -> list[Segment]:
    out: list[Segment] = []
    for value, weight in items:
        if isinstance(value, str):
            if not value:
                continue
            last = out[-1] if out else None
            # isclose: one weight reached by different orders of multiplication is still one weight
            if isinstance(last, Text) and math.isclose(last.weight, weight, rel_tol=1e-12):
                out[-1] = Text(last.text + value, last.weight)
            else:
                out.append(Text(value, weight))
        elif isinstance(value, EmbeddingRef):
            out.append(EmbeddingRef(value.name, weight, value.syntax))
        else:
            out.append(value)
    return out
