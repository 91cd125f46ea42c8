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


def sum_batches(batches: int = 1000, seed: int = 0):
    """Batches ``(x [8, 4], x.sum(1) [8, 1])`` of a seeded generator: a linear regression."""
    import torch

    g = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        x = torch.randn(8, 4, generator=g)
        yield x, x.sum(1, keepdim=True)


def linear_regression_model_fn():
    """``model_fn`` of a ``Linear(4, 1)`` with MSE and SGD(0.05), for :func:`sum_batches`."""
    import torch

    from learnrun.estimator.spec import EstimatorSpec

    m = torch.nn.Linear(4, 1)
    return EstimatorSpec(module=m, loss_fn=torch.nn.functional.mse_loss,
                         optimizer=torch.optim.SGD(m.parameters(), lr=0.05))
