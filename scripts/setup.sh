#!/usr/bin/env bash
# Set up a .venv for the CLI, demo and tests on a CPU machine. Safe to run again (it only installs what is missing).
# torch==2.13.0 is pinned here, not in requirements.txt: on this machine kind it is the local CPU wheel, where a
# plain "torch" would pull a multi-GB CUDA build. ComfyUI users keep the torch they have.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt -c .ci/constraints.txt
