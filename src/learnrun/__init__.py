"""learnrun: make and run machine-learning experiments on PyTorch.

Write one ``experiment_fn(run_config, hparams) -> Experiment`` and let :func:`learnrun.run`
decide, from the process's role in the cluster, what to do with it: train, evaluate, train
and evaluate, serve parameters, or evaluate continuously.

Importing ``learnrun`` is cheap: every public name is loaded on first use (PEP 562), so
``import learnrun`` imports neither torch nor any optional package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from learnrun._version import __version__

# public name -> (module, attribute); attribute None means "the module itself"
_LAZY: dict[str, tuple[str, str | None]] = {
    "run": ("learnrun.runner", "run"),
    "tune": ("learnrun.runner", "tune"),
    "Tuner": ("learnrun.runner", "Tuner"),
    "Experiment": ("learnrun.experiment", "Experiment"),
    "RunConfig": ("learnrun.config.run_config", "RunConfig"),
    "HParams": ("learnrun.hparams", "HParams"),
    "TaskType": ("learnrun.config.cluster", "TaskType"),
    "ClusterSpec": ("learnrun.config.cluster", "ClusterSpec"),
    "Estimator": ("learnrun.estimator.estimator", "Estimator"),
    "EstimatorSpec": ("learnrun.estimator.spec", "EstimatorSpec"),
    "ModeKeys": ("learnrun.estimator.spec", "ModeKeys"),
    "train_and_evaluate": ("learnrun.training", "train_and_evaluate"),
    "TrainSpec": ("learnrun.training", "TrainSpec"),
    "EvalSpec": ("learnrun.training", "EvalSpec"),
    "NotFittedError": ("learnrun.errors", "NotFittedError"),
    "NanLossDuringTrainingError": ("learnrun.errors", "NanLossDuringTrainingError"),
    "hooks": ("learnrun.hooks", None),
    "export": ("learnrun.export", None),
    "inputs": ("learnrun.inputs", None),
    "canned": ("learnrun.canned", None),
    "feature_column": ("learnrun.feature_column", None),
    "tuning": ("learnrun.tuning", None),
    "distributed": ("learnrun.distributed", None),
    "examples": ("learnrun.examples", None),
}

# every name of _LAZY, and the version (tests/unit/test_package.py checks they agree)
__all__ = [
    "ClusterSpec",
    "Estimator",
    "EstimatorSpec",
    "EvalSpec",
    "Experiment",
    "HParams",
    "ModeKeys",
    "NanLossDuringTrainingError",
    "NotFittedError",
    "RunConfig",
    "TaskType",
    "TrainSpec",
    "Tuner",
    "canned",
    "distributed",
    "examples",
    "export",
    "feature_column",
    "hooks",
    "inputs",
    "run",
    "train_and_evaluate",
    "tune",
    "tuning",
    "__version__",
]


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'learnrun' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover
    from learnrun import (
        canned,
        distributed,
        examples,
        export,
        feature_column,
        hooks,
        inputs,
        tuning,
    )
    from learnrun.config.cluster import ClusterSpec, TaskType
    from learnrun.config.run_config import RunConfig
    from learnrun.errors import NanLossDuringTrainingError, NotFittedError
    from learnrun.estimator.estimator import Estimator
    from learnrun.estimator.spec import EstimatorSpec, ModeKeys
    from learnrun.experiment import Experiment
    from learnrun.hparams import HParams
    from learnrun.runner import Tuner, run, tune
    from learnrun.training import EvalSpec, TrainSpec, train_and_evaluate
