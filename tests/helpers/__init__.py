"""Helpers shared by the tests, imported as ``from tests.helpers.<module> import ...``.

* :mod:`tests.helpers.fakes`: test doubles of the orchestration layer (estimators, run config,
  export strategy, hooks) that need no torch.
* :mod:`tests.helpers.data`: the small datasets many tests train on.
* :mod:`tests.helpers.distributed`: launch the test experiment on a local cluster, read its output.
* :mod:`tests.helpers.experiments`: that experiment (also loaded by file path in subprocesses).

``pyproject.toml`` puts the repository root on ``sys.path`` (pytest's ``pythonpath``), so these
imports work from a fresh clone with ``python -m pytest``. Subprocesses that need them get
:data:`REPO_ROOT` on their path.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository root (the directory holding ``tests/``)."""
