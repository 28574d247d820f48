"""ti_core.templates: the built-in template lists, A1111 template files, and rendering prompts."""

from __future__ import annotations

import pytest

from ti_core.errors import SettingError, TIError
from ti_core.templates import OBJECT_TEMPLATES, STYLE_TEMPLATES, load_templates, render


@pytest.mark.parametrize("templates,count", [(OBJECT_TEMPLATES, 27), (STYLE_TEMPLATES, 19)])
def test_builtin_lists_are_the_papers_and_every_entry_names_the_word(templates, count):
    assert len(templates) == count
    for template in templates:
        assert template.count("[name]") == 1, template
        assert "[filewords]" not in template and "{}" not in template and template == template.strip()


def test_builtin_lists_hold_the_expected_kinds_of_prompt():
    assert OBJECT_TEMPLATES[0] == "a photo of a [name]"
    assert STYLE_TEMPLATES[0] == "a painting in the style of [name]"
    assert all("style of [name]" in t for t in STYLE_TEMPLATES)
    assert not any("style" in t for t in OBJECT_TEMPLATES)


@pytest.mark.parametrize(
    "spec,expected", [("object", OBJECT_TEMPLATES), ("style", STYLE_TEMPLATES), (" Style ", STYLE_TEMPLATES)]
)
def test_builtin_names(spec, expected):
    assert load_templates(spec) == expected


def test_template_file_skips_blank_lines_and_comments(tmp_path):
    path = tmp_path / "my templates.txt"
    path.write_text(
        "\ufeff# my own list\n\n  a photo of [name], [filewords]  \n   # indented comment\n"
        "art by [name]\r\nplain picture\n",
        encoding="utf-8",
    )
    assert load_templates(path) == ("a photo of [name], [filewords]", "art by [name]", "plain picture")
    assert load_templates(str(path)) == load_templates(path)


def test_missing_template_file_names_it_and_the_builtins(tmp_path):
    with pytest.raises(SettingError) as info:
        load_templates(tmp_path / "nope.txt")
    message = str(info.value)
    assert "nope.txt" in message and "'object'" in message and "'style'" in message


def test_misspelt_builtin_name_is_an_error_listing_the_legal_ones():
    with pytest.raises(SettingError, match="'object' or 'style'"):
        load_templates("objects")


@pytest.mark.parametrize("text", ["", "\n\n   \n", "# only\n# comments\n"])
def test_template_file_without_templates(tmp_path, text):
    path = tmp_path / "empty.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SettingError, match=r"empty\.txt holds no templates"):
        load_templates(path)


def test_template_file_where_no_line_has_name(tmp_path):
    path = tmp_path / "noname.txt"
    path.write_text("a photo of a cat\n[filewords]\n", encoding="utf-8")
    with pytest.raises(SettingError) as info:
        load_templates(path)
    assert "noname.txt" in str(info.value) and "[name]" in str(info.value)
    assert isinstance(info.value, TIError)


def test_template_folder_and_non_utf8_file(tmp_path):
    with pytest.raises(SettingError, match="is a folder"):
        load_templates(tmp_path)
    path = tmp_path / "latin1.txt"
    path.write_bytes("une photo de [name] à Paris\n".encode("latin-1"))
    with pytest.raises(SettingError, match=r"latin1\.txt.*UTF-8"):
        load_templates(path)


@pytest.mark.parametrize(
    "template,expected",
    [
        ("a photo of a [name]", "a photo of a embedding:x"),
        ("a photo of [name], [filewords]", "a photo of embedding:x"),
        ("[filewords], art by [name]", "art by embedding:x"),
        ("[name], [filewords], 4k", "embedding:x, 4k"),
        ("a [filewords] photo of [name]", "a photo of embedding:x"),
        ("[name] [filewords]", "embedding:x"),
        ("[filewords]  ,  [name]", "embedding:x"),
        ("[name]; [filewords]; [filewords], sharp", "embedding:x; sharp"),
    ],
)
def test_render_without_caption_drops_filewords_and_its_separator(template, expected):
    assert render(template, "embedding:x") == expected
    assert render(template, "embedding:x", "   ") == expected


@pytest.mark.parametrize(
    "template,expected",
    [
        ("a photo of [name], [filewords]", "a photo of embedding:x, a red hat"),
        ("[filewords], art by [name]", "a red hat, art by embedding:x"),
        ("[name] and [name]", "embedding:x and embedding:x"),
    ],
)
def test_render_with_caption(template, expected):
    assert render(template, "embedding:x", " a red hat ") == expected


def test_render_does_not_substitute_inside_the_caption_or_word():
    assert render("[filewords] [name]", "w[filewords]", "about [name]") == "about [name] w[filewords]"


def test_render_refuses_an_empty_word():
    with pytest.raises(SettingError, match="empty"):
        render("a photo of [name]", " ")
