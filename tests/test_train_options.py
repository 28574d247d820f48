"""Each training option is declared once (TrainConfig): the CLI, the node and the README are built from it."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest

from conftest import ROOT, pack_module
from ti_core.cli import build_parser
from ti_core.errors import SettingError
from ti_core.train_config import TrainConfig, cli_flag, config_from_args, node_input, options

sys.path.insert(0, str(ROOT / "scripts"))
import options_table  # noqa: E402


def _node():
    return pack_module("nodes.train_nodes").TITrainEmbedding


def test_the_cli_defaults_are_the_config_defaults():
    args = build_parser().parse_args(["train", "--model", "m", "--images", "i", "--name", "x", "--out", "x.st"])
    assert config_from_args(args) == TrainConfig(name="x", output="x.st")
    assert all(cli_flag(name, option) for name, option, _, _ in options())  # every option can be set


def test_cli_flags_reach_the_config():
    args = build_parser().parse_args(["train", "--model", "m", "--images", "i", "--name", "x", "--out", "x.st",
                                      "--no-flip", "--lr", "1e-2", "--batch", "3", "--early-stop", "4",
                                      "--precision", "bf16", "--dtype", "fp16"])
    config = config_from_args(args)
    assert (config.flip, config.learning_rate, config.batch_size, config.early_stop, config.precision) == (
        False, "1e-2", 3, 4, "bf16")
    assert args.dtype == "fp16"  # the model's dtype is not the compute precision


def test_the_node_shows_every_node_option_after_the_saved_widgets():
    node = _node()
    required = node.INPUT_TYPES()["required"]
    names = list(required)
    assert names[:len(node.WIDGETS) + 1] == ["model", *node.WIDGETS]
    shown = {field for _, field in node.option_inputs()}
    assert shown == {name for name, option, _, _ in options() if option.node}
    for widget, field in node.option_inputs():
        assert required[widget] == node_input(field, node.DEFAULTS.get(widget, dataclasses.MISSING)), widget
        assert required[widget][1]["tooltip"].endswith(".")


def test_a_new_node_option_is_appended_to_the_node(monkeypatch):
    """Adding an option is one edit: a field with node=True shows up as the node's last widget."""
    tc = pack_module("ti_core.train_config")  # the copy the pack imports, as ComfyUI loads it

    extra = ("new_knob", tc.Option("a knob", low=0, high=9, node=True), 3, int)
    monkeypatch.setattr(tc, "options", lambda real=tc.options: [*real(), extra])
    required = _node().INPUT_TYPES()["required"]
    assert list(required)[-1] == "new_knob"
    assert required["new_knob"] == ("INT", {"tooltip": "A knob.", "default": 3, "min": 0, "max": 9})


def test_the_readme_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text()
    expected = options_table.readme_with(options_table.table(), readme)
    assert readme == expected, "the options table is out of date: run python scripts/options_table.py --write"


def test_help_texts_read_thresholds_from_the_config(monkeypatch):
    """The early-stop threshold is said where it is defined, never written out in a help text or tooltip."""
    from ti_core.train_config import help_text

    option = dict((n, o) for n, o, _, _ in options())["early_stop"]
    assert "10% of its fall" in help_text(option)
    for path in [*(ROOT / "ti_core").glob("*.py"), *(ROOT / "nodes").glob("*.py"), *(ROOT / "js").rglob("*.js")]:
        assert not re.search(r"\d+%+ of (its|the) (fall|drop)", path.read_text()), path


@pytest.mark.parametrize("changes, message", [
    ({"crop": "stretch"}, "crop 'stretch' must be one of random, center, pad"),
    ({"vectors": 76}, "vectors 76 must be 1 to 75"),
    ({"precision": "fp8"}, "precision 'fp8' must be one of model"),
    ({"weight_decay": -1.0}, "weight_decay -1.0 must be at least 0"),
])
def test_the_declared_ranges_are_checked(changes, message):
    with pytest.raises(SettingError, match=message):
        TrainConfig(name="x", **changes).validate()


@pytest.mark.slow
def test_cli_help_lists_every_option():
    out = subprocess.run([sys.executable, "-m", "ti_core", "train", "--help"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    for name, option, _, _ in options():
        assert cli_flag(name, option) in out, name
    assert "default: the best available" in out
