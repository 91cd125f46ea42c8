"""The ``learnrun`` package: every public name resolves and ``import learnrun`` stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import learnrun

CORE_NAMES = [
    "run",
    "Experiment",
    "RunConfig",
    "HParams",
    "tune",
    "Tuner",
    "train_and_evaluate",
    "TrainSpec",
    "EvalSpec",
]


@pytest.mark.parametrize("name", sorted(set(learnrun.__all__)))
def test_every_public_name_resolves(name):
    value = getattr(learnrun, name)
    assert value is not None
    assert name in dir(learnrun)


@pytest.mark.parametrize("name", CORE_NAMES)
def test_core_names_are_public_and_come_from_their_modules(name):
    assert name in learnrun.__all__
    value = getattr(learnrun, name)
    assert value.__module__.startswith("learnrun.")


def test_core_names_are_the_implementations():
    from learnrun import experiment, hparams, runner, training
    from learnrun.config import run_config

    assert learnrun.run is runner.run
    assert learnrun.tune is runner.tune
    assert learnrun.Tuner is runner.Tuner
    assert learnrun.Experiment is experiment.Experiment
    assert learnrun.RunConfig is run_config.RunConfig
    assert learnrun.HParams is hparams.HParams
    assert learnrun.train_and_evaluate is training.train_and_evaluate
    assert learnrun.TrainSpec is training.TrainSpec
    assert learnrun.EvalSpec is training.EvalSpec


def test_unknown_name_raises_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        learnrun.no_such_name  # noqa: B018


_PROBE = """
import json, sys
import learnrun
learnrun.HParams, learnrun.RunConfig, learnrun.run, learnrun.tune  # pure-python core
heavy = ["torch", "optuna", "pandas", "tensorboard"]
print(json.dumps({name: name in sys.modules for name in heavy}))
"""


def test_import_learnrun_imports_no_heavy_or_optional_package():
    # A fresh interpreter: this test process may already hold torch.
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == {"torch": False, "optuna": False, "pandas": False, "tensorboard": False}, (
        loaded
    )


def test_all_lists_exactly_the_lazy_names_and_the_version():
    assert sorted(learnrun.__all__) == sorted([*learnrun._LAZY, "__version__"])
