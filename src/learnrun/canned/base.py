"""What every canned estimator shares: the module wrapper and the model_fn over a head."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from learnrun.canned.heads import Head
from learnrun.distributed.base import Strategy
from learnrun.estimator.estimator import Estimator
from learnrun.estimator.spec import EstimatorSpec
from learnrun.feature_column import FeatureColumn, NumericColumn


def weight_key(weight_column: Any) -> str | None:
    """The feature key of ``weight_column`` (a string or a ``numeric_column``), or None."""
    if weight_column is None:
        return None
    if isinstance(weight_column, str):
        return weight_column
    if isinstance(weight_column, NumericColumn):
        if weight_column.shape != (1,):
            raise ValueError(
                f"weight_column must have shape (1,) (one weight per example), got "
                f"{weight_column.shape} for {weight_column.key!r}."
            )
        return weight_column.key
    raise TypeError(
        "Weight column must be either a string or _NumericColumn. Given type: "
        f"{type(weight_column)}."
    )


def check_feature_columns(columns: Any, what: str) -> list[FeatureColumn]:
    """``columns`` as a non-empty list of feature columns, or a clear error."""
    if columns is None or isinstance(columns, (str, FeatureColumn)) or not isinstance(columns, Iterable):
        raise ValueError(
            f"{what} must be a non-empty list of feature columns (learnrun.feature_column), got "
            f"{columns!r}."
        )
    columns = list(columns)
    if not columns:
        raise ValueError(f"{what} must not be empty.")
    for c in columns:
        if not isinstance(c, FeatureColumn):
            raise ValueError(
                f"Items of {what} must be feature columns (learnrun.feature_column.*), got "
                f"{type(c).__name__}: {c!r}."
            )
    return columns


class CannedModule(nn.Module):
    """Sum of the logits of its parts; returns ``{"logits": ..., "weights": ...}``.

    ``weights`` is present when the features hold the weight column (training and
    evaluation); prediction and serving need not provide it.
    """

    def __init__(self, parts: Mapping[str, nn.Module], weight_key: str | None = None) -> None:
        super().__init__()
        self.parts = nn.ModuleDict(dict(parts))
        # the same modules in order, as a plain attribute: nn.Module's __getattr__ and
        # ModuleDict.values() would cost two calls per step
        self._ordered_parts = tuple(self.parts.values())
        self.weight_key = weight_key

    def forward(self, features: Any) -> dict[str, torch.Tensor]:
        parts = self._ordered_parts
        logits = parts[0](features)
        for part in parts[1:]:
            logits = logits + part(features)
        result = {"logits": logits}
        if self.weight_key is None:
            return result
        if isinstance(features, Mapping) and self.weight_key in features:
            w = features[self.weight_key]
            if not isinstance(w, torch.Tensor):
                arr = np.asarray(w)
                if arr.dtype.kind not in "biuf":
                    raise ValueError(
                        f"weight_column {self.weight_key!r} must hold numbers, got dtype {arr.dtype}."
                    )
                w = torch.as_tensor(arr)
            result["weights"] = w.to(device=logits.device, dtype=torch.float32).reshape(logits.shape[0])
        return result


class CannedEstimator(Estimator):
    """An Estimator whose model_fn builds ``build_module()`` and trains it through ``head``.

    ``build_optimizer(module, device_type) -> torch.optim.Optimizer``, ``device_type`` being
    the type of the device the model trains on (``Strategy(config).device``), so that the
    optimizer can pick its fastest kernels for it. The spec's ``eval_metric_ops`` are the
    head's metrics and ``predictions_fn`` its TF prediction keys.
    """

    def __init__(self, head: Head, build_module: Callable[[], nn.Module],
                 build_optimizer: Callable[[nn.Module, str | None], torch.optim.Optimizer],
                 model_dir: str | None = None, config: Any = None,
                 warm_start_from: Any = None) -> None:
        self.head = head

        def model_fn(config: Any) -> EstimatorSpec:
            module = build_module()
            device_type = Strategy(config).device.type
            return EstimatorSpec(module=module, loss_fn=head.loss,
                                 optimizer=build_optimizer(module, device_type),
                                 predictions_fn=head.predictions,
                                 eval_metric_ops=head.metrics())

        super().__init__(model_fn, model_dir=model_dir, config=config, warm_start_from=warm_start_from)

    def export_label_vocabulary(self) -> list[str] | None:
        """The head's ``label_vocabulary`` (classifiers given one), else None."""
        vocabulary = getattr(self.head, "label_vocabulary", None)
        return None if vocabulary is None else list(vocabulary)
