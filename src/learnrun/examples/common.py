"""What the built-in experiments share: loaders of the data shipped in ``learnrun/examples/data``
(numpy only, no download), their train/test split and the Experiment around an estimator."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from learnrun import export, inputs
from learnrun.experiment import Experiment

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _path(name: str) -> str:
    path = os.path.join(DATA_DIR, name)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"learnrun's example data file {path} is missing; reinstall learnrun "
            "(the files ship as package data under learnrun/examples/data)."
        )
    return path


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 8x8 handwritten digits: pixels ``(1797, 64)`` float32 in [0, 16], labels int64."""
    data = np.loadtxt(_path("digits.csv.gz"), delimiter=",", dtype=np.float32)
    return data[:, :-1], data[:, -1].astype(np.int64)


def load_diabetes() -> tuple[np.ndarray, np.ndarray]:
    """The 442 diabetes patients: 10 raw baseline variables (float32) and the progression."""
    x = np.loadtxt(_path("diabetes_data_raw.csv.gz"), dtype=np.float32)
    y = np.loadtxt(_path("diabetes_target.csv.gz"), dtype=np.float32)
    return x, y


def train_test_split(
    n: int, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a train/test split of ``n`` examples, the same for the same ``seed``."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_fraction)))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def seeded(run_config: Any, hparams: Any) -> Any:
    """``run_config`` with ``tf_random_seed=hparams.seed`` when it has no seed of its own."""
    if run_config.tf_random_seed is None:
        return run_config.replace(tf_random_seed=int(hparams.seed))
    return run_config


def make_experiment(estimator: Any, features: Mapping[str, np.ndarray], labels: np.ndarray,
                    train_idx: np.ndarray, test_idx: np.ndarray, hparams: Any,
                    serving_input_fn: Callable[[], Any]) -> Any:
    """The Experiment of a built-in example: shuffled ``hparams.batch_size`` batches of the
    ``train_idx`` rows for ``hparams.train_steps`` steps, one batch of the ``test_idx`` rows
    per evaluation, and a ``Servo`` export keeping the latest 3."""

    def rows(idx: np.ndarray) -> dict[str, np.ndarray]:
        return {name: values[idx] for name, values in features.items()}

    train_input_fn = inputs.numpy_input_fn(
        rows(train_idx), labels[train_idx], batch_size=int(hparams.batch_size), num_epochs=None,
        shuffle=True)
    eval_input_fn = inputs.numpy_input_fn(
        rows(test_idx), labels[test_idx], batch_size=len(test_idx), num_epochs=1, shuffle=False)
    return Experiment(
        estimator,
        train_input_fn=train_input_fn,
        eval_input_fn=eval_input_fn,
        train_steps=int(hparams.train_steps),
        eval_steps=None,
        eval_delay_secs=0,
        export_strategies=[export.make_export_strategy(serving_input_fn, exports_to_keep=3)],
    )
