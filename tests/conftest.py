"""Fixtures shared by the whole suite.

* ``clock``: a :class:`~learnrun.clock.FakeClock` (time moves only when code sleeps on it or a
  test advances it), also the default clock of the export functions.
* ``model_dir``: the model directory of one test, under its ``tmp_path``.

Small datasets are functions of :mod:`tests.helpers.data` (tests build their ``model_fn`` and
``input_fn`` from them at import time); test doubles live in :mod:`tests.helpers.fakes`.
"""

from __future__ import annotations

import pytest

from learnrun.clock import FakeClock
from learnrun.export import artifact, strategies


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A FakeClock for the code under test, and for exports that are given no clock.

    ``Estimator.export_savedmodel`` and export strategies built without a clock would use the
    system clock and really sleep 1 s when two exports share a second: they get this one.
    """
    fake = FakeClock()
    for module in (artifact, strategies):
        real_get_clock = module.get_clock
        monkeypatch.setattr(module, "get_clock",
                            lambda c=None, _real=real_get_clock: _real(c or fake))
    return fake


@pytest.fixture
def model_dir(tmp_path) -> str:
    """``<tmp_path>/model``: a model directory of this test (not created)."""
    return str(tmp_path / "model")


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--fault-runs N --fault-seed S``: how long tests/faults/ runs, and its random plan."""
    group = parser.getgroup("learnrun faults")
    group.addoption("--fault-runs", type=int, default=1,
                    help="scale of tests/faults/: kills per cluster test (local runs get 3x)")
    group.addoption("--fault-seed", type=int, default=20261201,
                    help="seed of tests/faults/'s random kill moments (printed; replay with it)")
