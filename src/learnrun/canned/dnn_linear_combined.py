"""``DNNLinearCombinedClassifier`` / ``Regressor``: wide (linear) plus deep (DNN) logits, summed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from learnrun.canned.base import CannedEstimator, CannedModule, check_feature_columns, weight_key
from learnrun.canned.dnn import (
    DNNNetwork,
    check_batch_norm,
    check_dropout,
    check_hidden_units,
    make_activation,
)
from learnrun.canned.heads import Head, RegressionHead, classification_head
from learnrun.canned.linear import default_linear_learning_rate
from learnrun.canned.optimizers import check_learning_rate, check_optimizer, make_part_optimizers
from learnrun.feature_column import LinearModel

#: TF's defaults for the combined model.
DNN_LEARNING_RATE = 0.001
LINEAR_LEARNING_RATE = 0.005


class _Combined(CannedEstimator):
    def __init__(self, head: Head, wkey: str | None, model_dir: str | None,
                 linear_feature_columns: Any, linear_optimizer: Any, dnn_feature_columns: Any,
                 dnn_optimizer: Any, dnn_hidden_units: Any, dnn_activation_fn: Any,
                 dnn_dropout: Any, config: Any, warm_start_from: Any, batch_norm: bool,
                 linear_sparse_combiner: str, linear_learning_rate: float | None,
                 dnn_learning_rate: float | None) -> None:
        if not linear_feature_columns and not dnn_feature_columns:
            raise ValueError("Either linear_feature_columns or dnn_feature_columns must be defined.")
        linear_cols = check_feature_columns(linear_feature_columns, "linear_feature_columns") if linear_feature_columns else None
        dnn_cols = check_feature_columns(dnn_feature_columns, "dnn_feature_columns") if dnn_feature_columns else None
        units = None
        if dnn_cols is not None:
            if not dnn_hidden_units:
                raise ValueError(
                    "dnn_hidden_units must be defined when dnn_feature_columns is specified. "
                    f"Given: {dnn_hidden_units!r}."
                )
            units = check_hidden_units(dnn_hidden_units, "dnn_hidden_units")
            dnn_dropout = check_dropout(dnn_dropout)
            make_activation(dnn_activation_fn)
            batch_norm = check_batch_norm(batch_norm)
            check_optimizer(dnn_optimizer, "dnn_optimizer")
            dnn_learning_rate = check_learning_rate(dnn_learning_rate, "dnn_learning_rate")
        if linear_cols is not None:
            check_optimizer(linear_optimizer, "linear_optimizer")
            linear_learning_rate = check_learning_rate(linear_learning_rate, "linear_learning_rate")

        def build_module() -> CannedModule:
            parts: dict[str, torch.nn.Module] = {}
            if dnn_cols is not None:
                parts["dnn"] = DNNNetwork(dnn_cols, units, head.logits_dimension, dnn_activation_fn,
                                          dnn_dropout, batch_norm)
            if linear_cols is not None:
                parts["linear"] = LinearModel(linear_cols, head.logits_dimension, linear_sparse_combiner)
            return CannedModule(parts, wkey)

        build_module()  # validate columns now rather than at train time

        def build_optimizer(module: CannedModule, device_type: str | None = None) -> torch.optim.Optimizer:
            parts = []
            if "dnn" in module.parts:
                parts.append((dnn_optimizer, module.parts["dnn"].parameters(), dnn_learning_rate,
                              DNN_LEARNING_RATE))
            if "linear" in module.parts:
                lr = default_linear_learning_rate(len(linear_cols), LINEAR_LEARNING_RATE)
                parts.append((linear_optimizer, module.parts["linear"].parameters(),
                              linear_learning_rate, lr))
            return make_part_optimizers(parts, device_type)

        super().__init__(head, build_module, build_optimizer, model_dir, config, warm_start_from)


class DNNLinearCombinedClassifier(_Combined):
    """Wide-and-deep classifier (TF's ``DNNLinearCombinedClassifier``).

    The linear part reads ``linear_feature_columns`` with ``linear_optimizer`` (default
    ``'Ftrl'``, run as Adagrad, learning rate ``min(0.005, 1/sqrt(n_columns))``); the DNN part
    reads ``dnn_feature_columns`` with ``dnn_optimizer`` (default ``'Adagrad'``, 0.001). Both
    step together: one optimizer with a parameter group per part when both name the same
    class, as the defaults do (:func:`~learnrun.canned.optimizers.make_part_optimizers`).
    Other args as :class:`~learnrun.canned.DNNClassifier`; ``linear_learning_rate`` /
    ``dnn_learning_rate`` override the defaults for names and classes.
    """

    def __init__(self, model_dir: str | None = None, linear_feature_columns: Iterable[Any] | None = None,
                 linear_optimizer: Any = "Ftrl", dnn_feature_columns: Iterable[Any] | None = None,
                 dnn_optimizer: Any = "Adagrad", dnn_hidden_units: Sequence[int] | None = None,
                 dnn_activation_fn: Any = torch.relu, dnn_dropout: float | None = None,
                 n_classes: int = 2, weight_column: Any = None,
                 label_vocabulary: Sequence[str] | None = None, config: Any = None,
                 warm_start_from: Any = None, loss_reduction: str = "sum_over_batch_size",
                 batch_norm: bool = False, linear_sparse_combiner: str = "sum",
                 linear_learning_rate: float | None = None,
                 dnn_learning_rate: float | None = None) -> None:
        wkey = weight_key(weight_column)
        head = classification_head(n_classes, wkey, label_vocabulary, loss_reduction)
        super().__init__(head, wkey, model_dir, linear_feature_columns, linear_optimizer,
                         dnn_feature_columns, dnn_optimizer, dnn_hidden_units, dnn_activation_fn,
                         dnn_dropout, config, warm_start_from, batch_norm, linear_sparse_combiner,
                         linear_learning_rate, dnn_learning_rate)


class DNNLinearCombinedRegressor(_Combined):
    """Wide-and-deep regressor (TF's ``DNNLinearCombinedRegressor``); args as the classifier
    with ``label_dimension`` instead of ``n_classes`` and ``label_vocabulary``."""

    def __init__(self, model_dir: str | None = None, linear_feature_columns: Iterable[Any] | None = None,
                 linear_optimizer: Any = "Ftrl", dnn_feature_columns: Iterable[Any] | None = None,
                 dnn_optimizer: Any = "Adagrad", dnn_hidden_units: Sequence[int] | None = None,
                 dnn_activation_fn: Any = torch.relu, dnn_dropout: float | None = None,
                 label_dimension: int = 1, weight_column: Any = None, config: Any = None,
                 warm_start_from: Any = None, loss_reduction: str = "sum_over_batch_size",
                 batch_norm: bool = False, linear_sparse_combiner: str = "sum",
                 linear_learning_rate: float | None = None,
                 dnn_learning_rate: float | None = None) -> None:
        wkey = weight_key(weight_column)
        head = RegressionHead(label_dimension, wkey, loss_reduction)
        super().__init__(head, wkey, model_dir, linear_feature_columns, linear_optimizer,
                         dnn_feature_columns, dnn_optimizer, dnn_hidden_units, dnn_activation_fn,
                         dnn_dropout, config, warm_start_from, batch_norm, linear_sparse_combiner,
                         linear_learning_rate, dnn_learning_rate)
