"""``LinearClassifier`` and ``LinearRegressor``: a wide (linear) model over feature columns."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from learnrun.canned.base import CannedEstimator, CannedModule, check_feature_columns, weight_key
from learnrun.canned.heads import Head, RegressionHead, classification_head
from learnrun.canned.optimizers import check_learning_rate, check_optimizer, make_optimizer
from learnrun.feature_column import FeatureColumn, LinearModel

_LEARNING_RATE = 0.2


def default_linear_learning_rate(num_columns: int, cap: float = _LEARNING_RATE) -> float:
    """TF's default: ``min(cap, 1 / sqrt(number of feature columns))``, ``cap`` 0.2 (0.005 in
    the combined model)."""
    return min(cap, 1.0 / math.sqrt(max(num_columns, 1)))


class _Linear(CannedEstimator):
    def __init__(self, head: Head, feature_columns: Iterable[FeatureColumn], model_dir: str | None,
                 optimizer: Any, config: Any, warm_start_from: Any, sparse_combiner: str,
                 learning_rate: float | None, wkey: str | None) -> None:
        columns = check_feature_columns(feature_columns, "feature_columns")
        check_optimizer(optimizer)
        learning_rate = check_learning_rate(learning_rate)
        LinearModel(columns, head.logits_dimension, sparse_combiner)  # validate now, not at train time

        def build_module() -> CannedModule:
            return CannedModule({"linear": LinearModel(columns, head.logits_dimension, sparse_combiner)}, wkey)

        def build_optimizer(module: CannedModule, device_type: str | None = None):
            return make_optimizer(optimizer, module.parameters(), learning_rate,
                                  default_linear_learning_rate(len(columns)), device_type)

        super().__init__(head, build_module, build_optimizer, model_dir, config, warm_start_from)


class LinearClassifier(_Linear):
    """Linear (logistic / softmax) classifier over ``feature_columns`` (TF's ``LinearClassifier``).

    Args:
      feature_columns: any feature columns (categorical ones get one weight per bucket).
      n_classes: 2 (one logit, sigmoid) or more (softmax).
      weight_column: feature key (or numeric_column) of per-example weights.
      label_vocabulary: the string labels, one per class; labels are then strings.
      optimizer: name, ``torch.optim.Optimizer`` class or factory ``params -> Optimizer``
        (``'Ftrl'``, the default, runs Adagrad; see ``learnrun.canned.optimizers``).
      learning_rate: for a name or class; default ``min(0.2, 1/sqrt(len(feature_columns)))``.
      loss_reduction: ``'sum_over_batch_size'`` (default) or ``'sum'``.
      sparse_combiner: how several values of one categorical feature combine: 'sum', 'mean', 'sqrtn'.
    """

    def __init__(self, feature_columns: Iterable[FeatureColumn], model_dir: str | None = None,
                 n_classes: int = 2, weight_column: Any = None,
                 label_vocabulary: Sequence[str] | None = None, optimizer: Any = "Ftrl",
                 config: Any = None, warm_start_from: Any = None,
                 loss_reduction: str = "sum_over_batch_size", sparse_combiner: str = "sum",
                 learning_rate: float | None = None) -> None:
        wkey = weight_key(weight_column)
        head = classification_head(n_classes, wkey, label_vocabulary, loss_reduction)
        super().__init__(head, feature_columns, model_dir, optimizer, config, warm_start_from,
                         sparse_combiner, learning_rate, wkey)


class LinearRegressor(_Linear):
    """Linear regression over ``feature_columns`` (TF's ``LinearRegressor``).

    Args as :class:`LinearClassifier`, with ``label_dimension`` (outputs per example)
    instead of ``n_classes`` and ``label_vocabulary``.
    """

    def __init__(self, feature_columns: Iterable[FeatureColumn], model_dir: str | None = None,
                 label_dimension: int = 1, weight_column: Any = None, optimizer: Any = "Ftrl",
                 config: Any = None, warm_start_from: Any = None,
                 loss_reduction: str = "sum_over_batch_size", sparse_combiner: str = "sum",
                 learning_rate: float | None = None) -> None:
        wkey = weight_key(weight_column)
        head = RegressionHead(label_dimension, wkey, loss_reduction)
        super().__init__(head, feature_columns, model_dir, optimizer, config, warm_start_from,
                         sparse_combiner, learning_rate, wkey)
