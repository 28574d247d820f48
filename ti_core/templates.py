"""Prompt templates for training: the paper's object and style lists, or an A1111-style template file.

A template holds `[name]`, which becomes the word being learned (the trainer passes e.g. "embedding:my-cat"),
and may hold `[filewords]`, which becomes the image's caption (its "<stem>.txt" file). These are the
placeholders of A1111's template files, so files written for A1111 work unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import SettingError
from .textfile import read_user_text

NAME = "[name]"
FILEWORDS = "[filewords]"
BUILTIN = ("object", "style", "captions")

# The object templates of the textual inversion paper's code (Gal et al. 2022; also the diffusers example).
OBJECT_TEMPLATES: tuple[str, ...] = (
    "a photo of a [name]",
    "a rendering of a [name]",
    "a cropped photo of the [name]",
    "the photo of a [name]",
    "a photo of a clean [name]",
    "a photo of a dirty [name]",
    "a dark photo of the [name]",
    "a photo of my [name]",
    "a photo of the cool [name]",
    "a close-up photo of a [name]",
    "a bright photo of the [name]",
    "a cropped photo of a [name]",
    "a photo of the [name]",
    "a good photo of the [name]",
    "a photo of one [name]",
    "a close-up photo of the [name]",
    "a rendition of the [name]",
    "a photo of the clean [name]",
    "a rendition of a [name]",
    "a photo of a nice [name]",
    "a good photo of a [name]",
    "a photo of the nice [name]",
    "a photo of the small [name]",
    "a photo of the weird [name]",
    "a photo of the large [name]",
    "a photo of a cool [name]",
    "a photo of a small [name]",
)

# The style templates of the same code. Two lines appear twice there ("a cropped painting ...", "a close-up
# painting ..."); they are kept, so that sampling weights match the paper's.
STYLE_TEMPLATES: tuple[str, ...] = (
    "a painting in the style of [name]",
    "a rendering in the style of [name]",
    "a cropped painting in the style of [name]",
    "the painting in the style of [name]",
    "a clean painting in the style of [name]",
    "a dirty painting in the style of [name]",
    "a dark painting in the style of [name]",
    "a picture in the style of [name]",
    "a cool painting in the style of [name]",
    "a close-up painting in the style of [name]",
    "a bright painting in the style of [name]",
    "a cropped painting in the style of [name]",
    "a good painting in the style of [name]",
    "a close-up painting in the style of [name]",
    "a rendition in the style of [name]",
    "a nice painting in the style of [name]",
    "a small painting in the style of [name]",
    "a weird painting in the style of [name]",
    "a large painting in the style of [name]",
)

# The word in a short sentence, then each image's caption: for captions that say what is *not* the concept
# ("on a yellow background"), so the word learns the object and not the scene around it. Few, plain words, which
# a small model such as the built-in toy-world one has seen in its own training.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of a [name] [filewords]",
    "a [name] [filewords]",
)

# A run of [filewords] with the separators and spaces around it ("a, [filewords], b" -> ", [filewords], ").
_FILEWORDS_RUN = re.compile(r"[\s,;:.]*\[filewords\](?:[\s,;:.]*\[filewords\])*[\s,;:.]*")
_PLACEHOLDER = re.compile(re.escape(NAME) + "|" + re.escape(FILEWORDS))


def load_templates(spec) -> tuple[str, ...]:
    """The templates named by `spec`: "object", "style" or "captions" (the built-in lists), or an A1111 template
    file's path.

    The built-in names win over a file of the same name in the working directory (pass "./object" for that).
    A file holds one template per line; blank lines and lines starting with "#" are skipped. At least one line
    must contain [name]; lines without it are kept as written (as A1111 does), though they teach the word nothing.
    """
    if isinstance(spec, str) and spec.strip().lower() in BUILTIN:
        builtin = {"object": OBJECT_TEMPLATES, "style": STYLE_TEMPLATES, "captions": CAPTION_TEMPLATES}
        return builtin[spec.strip().lower()]
    path = Path(spec)
    text = _read(path)
    templates = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    if not templates:
        raise SettingError(
            f"template file {path} holds no templates (only blank lines or '#' comments); write one prompt per "
            f"line, e.g. 'a photo of a {NAME}, {FILEWORDS}'."
        )
    if not any(NAME in line for line in templates):
        raise SettingError(
            f"no line of template file {path} contains {NAME}, so the new word would never be in a training prompt; "
            f"put {NAME} where the word goes, e.g. 'a photo of a {NAME}' (first line: {templates[0]!r})."
        )
    return templates


def _read(path: Path) -> str:
    legal = f"use {' or '.join(repr(b) for b in BUILTIN)}, or the path of a template file"
    if not path.exists():
        raise SettingError(f"template file {path} does not exist; {legal}.")
    if path.is_dir():
        raise SettingError(f"template {path} is a folder; {legal}.")
    return read_user_text(path, "template file", SettingError)


def render(template: str, word: str, caption: str = "") -> str:
    """The prompt: [name] -> `word`, [filewords] -> `caption`.

    With no caption, [filewords] is removed together with the separator it leaves dangling:
    "a photo of [name], [filewords]" -> "a photo of <word>"; "[filewords], by [name]" -> "by <word>";
    "a, [filewords], b" -> "a, b". Text brought in by `word` or `caption` is not searched for placeholders.
    """
    if not word or not word.strip():
        raise SettingError(f"the word to train must not be empty (template {template!r}).")
    caption = caption.strip()
    if not caption:
        template = _drop_filewords(template)
    return _PLACEHOLDER.sub(lambda m: word if m.group() == NAME else caption, template)


def _drop_filewords(template: str) -> str:
    def replace(match: re.Match) -> str:
        if match.start() == 0 or match.end() == len(template):
            return ""  # nothing on one side: its separators go too
        separators = match.group().replace(FILEWORDS, "").strip()
        return f"{separators[:1]} "  # keep one separator, e.g. "a, [filewords], b" -> "a, b"

    return _FILEWORDS_RUN.sub(replace, template).strip()
