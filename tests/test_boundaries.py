"""ti_core is a library: it never imports ComfyUI, and importing it is cheap."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMFY = ("comfy", "folder_paths", "server", "nodes", "execution", "comfy_extras")


def test_ti_core_imports_nothing_from_comfyui_in_a_clean_interpreter():
    modules = sorted(p.stem for p in (ROOT / "ti_core").glob("*.py") if p.stem not in ("__main__",))
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module('ti_core.' + m if m != '__init__' else 'ti_core')\n"
        "from ti_core.cli import build_parser; build_parser()\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {COMFY!r})\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_comfyui_import_statement_in_ti_core():
    pattern = re.compile(r"^\s*(import|from)\s+(" + "|".join(COMFY) + r")(\.|\s|$)", re.M)
    offenders = [str(p) for p in (ROOT / "ti_core").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_importing_ti_core_does_not_import_torch():
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, ti_core; sys.exit('torch' in sys.modules)"], cwd=ROOT, capture_output=True
    )
    assert proc.returncode == 0
