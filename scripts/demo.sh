#!/usr/bin/env bash
# Sets up a virtual environment (once) and runs the built-in experiment.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e .
exec .venv/bin/learnrun run digits --model-dir "${MODEL_DIR:-runs/digits}" "$@"
