"""Print the README's table of training options, or with --write put it into README.md between its markers.

The table is built from TrainConfig's fields (ti_core/train_config.py) and TITrainEmbedding's inputs;
tests/test_train_options.py fails when the README's copy differs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- options: scripts/options_table.py --write -->\n", "<!-- /options -->\n"


def train_node():
    """TITrainEmbedding, from the pack loaded as ComfyUI loads it (as package ti_pack)."""
    if "ti_pack" not in sys.modules:
        spec = importlib.util.spec_from_file_location("ti_pack", ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["ti_pack"] = module
        spec.loader.exec_module(module)
    return sys.modules["ti_pack"].NODE_CLASS_MAPPINGS["TITrainEmbedding"]


def table() -> str:
    sys.path.insert(0, str(ROOT))
    from ti_core.train_config import options_markdown

    node = train_node()
    fields = {widget: field for widget, field in node.option_inputs()}
    return options_markdown({field: widget for widget, field in fields.items()},
                            {fields[widget]: default for widget, default in node.DEFAULTS.items()})


def readme_with(text: str, readme: str) -> str:
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[:start] + text + readme[end:]


if __name__ == "__main__":
    if "--write" in sys.argv:
        path = ROOT / "README.md"
        path.write_text(readme_with(table(), path.read_text()))
    else:
        print(table(), end="")
