"""The torchmetrics objects of the canned heads' evaluation metrics.

A separate module so that importing the canned estimators does not import torchmetrics
(about 0.3 s): :meth:`learnrun.canned.heads.Head.metrics` imports it when an evaluation
builds its metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torchmetrics

__all__ = ["HeadMetric", "MeanMetric", "WeightedBinaryAUROC", "binary_average_precision"]

MeanMetric = torchmetrics.MeanMetric


def binary_average_precision() -> torchmetrics.Metric:
    """torchmetrics' ``BinaryAveragePrecision`` (TF's ``auc_precision_recall``)."""
    from torchmetrics.classification import BinaryAveragePrecision

    return BinaryAveragePrecision()


class HeadMetric(torchmetrics.Metric):
    """A torchmetrics ``Metric`` fed ``(outputs, labels)``: ``transform`` maps them to ``inner``'s inputs.

    ``post`` (optional) maps the inner result (e.g. ``sqrt`` for rmse).
    """

    full_state_update = False

    def __init__(self, inner: torchmetrics.Metric, transform: Callable[[Any, Any], tuple],
                 post: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.transform = transform
        self.post = post

    def update(self, outputs: Any, labels: Any) -> None:
        self.inner.update(*self.transform(outputs, labels))

    def compute(self) -> torch.Tensor:
        value = self.inner.compute()
        return self.post(value) if self.post is not None else value

    def reset(self) -> None:
        super().reset()
        self.inner.reset()


class WeightedBinaryAUROC(torchmetrics.Metric):
    """Exact ROC AUC with example weights: ``update(scores, labels, weights)``.

    The weighted probability that a positive scores above a negative (ties count half);
    0.0 when the labels hold only one class (TF's value for an undefined AUC).
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("scores", "labels", "weights"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> None:
        self.scores.append(scores.detach().reshape(-1).to(torch.float64))
        self.labels.append(labels.detach().reshape(-1).to(torch.float64))
        self.weights.append(weights.detach().reshape(-1).to(torch.float64))

    def compute(self) -> torch.Tensor:
        def cat(x: Any) -> torch.Tensor:
            return torch.cat(x) if isinstance(x, list) else x

        if isinstance(self.scores, list) and not self.scores:
            return torch.tensor(0.0)
        scores, labels, weights = cat(self.scores), cat(self.labels), cat(self.weights)
        pos_w, neg_w = weights * labels, weights * (1 - labels)
        values, inverse = torch.unique(scores, sorted=True, return_inverse=True)
        pos = torch.zeros(len(values), dtype=torch.float64, device=scores.device).index_add_(0, inverse, pos_w)
        neg = torch.zeros(len(values), dtype=torch.float64, device=scores.device).index_add_(0, inverse, neg_w)
        neg_below = torch.cumsum(neg, 0) - neg  # negative weight strictly below each score
        total = pos.sum() * neg.sum()
        if total <= 0:
            return torch.tensor(0.0)
        return ((pos * (neg_below + 0.5 * neg)).sum() / total).to(torch.float32)
