#!/usr/bin/env bash
# Sets up a virtual environment (once), runs ruff and the import contracts, builds the docs
# strictly and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
.venv/bin/ruff check src tests benchmarks
.venv/bin/lint-imports --no-cache  # the layers of docs/internals.md, no import cycles
site=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet -d "$site" || { rm -rf "$site"; exit 1; }
rm -rf "$site"
export GLOO_SOCKET_IFNAME=lo OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# Two workers (pytest-xdist); the tests that start clusters run one at a time on one of them
# (tests/conftest.py: CLUSTER_TESTS). Later arguments win: `scripts/test.sh -n 0` runs serially.
exec .venv/bin/python -m pytest -n "${LEARNRUN_TEST_WORKERS:-2}" --dist loadgroup "$@"
