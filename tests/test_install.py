"""A plain (non-editable) install ships what it runs: the wheel holds every file of ti_core, and the demo runs from
it alone, outside the source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel `pip wheel .` builds from the committed files (offline: no build isolation, no dependencies)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    tracked = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    for name in filter(None, tracked.split("\0")):
        if (ROOT / name).is_file():  # a deleted, not yet committed file is still listed
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, text=True)
    (path,) = out.glob("*.whl")
    return path


def test_the_wheel_holds_every_module_and_data_file(wheel):
    shipped = set(zipfile.ZipFile(wheel).namelist())
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "ti_core").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}
    assert source and not source - shipped, sorted(source - shipped)
    assert not any(name.startswith(("nodes/", "tests/", "js/")) for name in shipped)  # the pack is not a library


def test_the_demo_runs_from_the_installed_wheel(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True)
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    run = subprocess.run([sys.executable, "-m", "ti_core", "demo", "--out", str(tmp_path / "demo"), "--steps", "2",
                          "--samples", "2", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    check = subprocess.run([sys.executable, "-c", "import ti_core; print(ti_core.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True)
    assert check.stdout.startswith(str(site))  # the wheel's copy ran, not the source tree's
