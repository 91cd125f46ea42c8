"""Small fixed datasets the tests train on (same seed, same values, in every test)."""

from __future__ import annotations

from typing import Any

import numpy as np


def separable_tensors(n: int, features: int = 4, seed: int = 0) -> tuple[Any, Any]:
    """``(X [n, features] float32, Y [n] int64)`` with ``Y = X.sum(1) > 0``: a linear problem."""
    import torch

    x = torch.randn(n, features, generator=torch.Generator().manual_seed(seed))
    return x, (x.sum(1) > 0).long()


def colored_points(n: int = 300, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``({"x": [n, 2] float32, "color": [n] "red"/"blue"}, y [n] int64)``, for feature columns.

    ``y = x0 + x1 + 1.5 * (color == "red") > 0.75``: needs the numeric and the categorical input.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    color = rng.choice(["red", "blue"], size=n)
    y = ((x[:, 0] + x[:, 1] + (color == "red") * 1.5 - 0.75) > 0).astype(np.int64)
    return {"x": x, "color": color}, y
