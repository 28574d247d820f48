"""The front-end files: valid JavaScript, one namespaced extension per feature file, no deprecated imports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parent.parent / "js"
FEATURES = sorted(p for p in JS.glob("*.js"))


def test_every_feature_file_registers_one_namespaced_extension():
    names = []
    for path in FEATURES:
        text = path.read_text()
        found = re.findall(r'name:\s*"(textual_inversion\.[A-Za-z]+)"', text)
        assert len(found) == 1 and text.count("registerExtension(") == 1, path.name
        assert "scripts/ui.js" not in text and "../../scripts/" not in text, path.name
        names += found
    assert len(names) == len(set(names)) == 3


def test_events_the_js_listens_to_are_the_ones_the_node_sends():
    text = (JS / "training_monitor.js").read_text()
    listened = set(re.findall(r'addEventListener\("textual_inversion\.(\w+)"', text))
    assert listened == {"progress", "preview", "done"}
    nodes_src = (JS.parent / "nodes" / "train_nodes.py").read_text()
    for event in listened:
        assert f'send_event("{event}"' in nodes_src


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("path", [*FEATURES, JS / "common" / "util.js"], ids=lambda p: p.name)
def test_node_check(path):
    subprocess.run(["node", "--check", str(path)], check=True, capture_output=True)


def test_every_name_imported_from_util_is_exported_there():
    """`node --check` does not resolve imports; a missing export would stop the extension loading in the browser."""
    util = (JS / "common" / "util.js").read_text()
    exported = set(re.findall(r"^export function (\w+)", util, re.M))
    exported |= {n.strip() for group in re.findall(r"^export const \{([^}]*)\}", util, re.M) for n in group.split(",")}
    for path in FEATURES:
        for group in re.findall(r'import \{([^}]*)\} from "\./common/util\.js"', path.read_text()):
            imported = {n.strip() for n in group.split(",")}
            assert imported <= exported, (path.name, imported - exported)


def test_the_monitor_reads_only_fields_the_trainer_reports():
    """The panel shows TrainResult.report() as data; a field it reads that the report lacks would show 'undefined'."""
    from ti_core.embeddings import Embedding
    from ti_core.train import TrainResult

    text = (JS / "training_monitor.js").read_text()
    read = set(re.findall(r"outcome\.(\w+)", text))
    report = TrainResult(Embedding("x", {"emb_params": __import__("torch").zeros(1, 4)}), 3, "finished").report()
    assert read and read <= set(report), read - set(report)
