"""Loaders for the data sets shipped in ``learnrun/examples/data`` (numpy only, no download)."""

from __future__ import annotations

import os

import numpy as np

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
