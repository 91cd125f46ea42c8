"""``DNNClassifier`` and ``DNNRegressor``: a feed-forward network over dense feature columns."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from learnrun.canned.base import CannedEstimator, CannedModule, check_feature_columns, weight_key
from learnrun.canned.heads import Head, RegressionHead, classification_head
from learnrun.canned.optimizers import check_learning_rate, check_optimizer, make_optimizer
from learnrun.feature_column import DenseColumn, DenseFeatures

DNN_LEARNING_RATE = 0.05

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
    "elu": nn.functional.elu, "gelu": nn.functional.gelu, "selu": torch.selu,
}


class _Activation(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def check_hidden_units(hidden_units: Any, what: str = "hidden_units") -> list[int]:
    """``hidden_units`` as a non-empty list of positive ints, or a clear error."""
    if isinstance(hidden_units, (int, str)) or not isinstance(hidden_units, Iterable):
        raise ValueError(f"{what} must be a list of layer widths such as [64, 32], got {hidden_units!r}.")
    units = list(hidden_units)
    if not units or any(isinstance(u, bool) or not isinstance(u, int) or u < 1 for u in units):
        raise ValueError(f"{what} must be a non-empty list of positive integers, got {hidden_units!r}.")
    return units


def make_activation(activation_fn: Any) -> nn.Module:
    """An ``nn.Module`` for ``activation_fn`` (a callable, an nn.Module class or a name)."""
    if isinstance(activation_fn, str):
        fn = _ACTIVATIONS.get(activation_fn.lower())
        if fn is None:
            raise ValueError(f"Unknown activation_fn {activation_fn!r}; use one of {sorted(_ACTIVATIONS)} or a callable.")
        return _Activation(fn)
    if isinstance(activation_fn, type) and issubclass(activation_fn, nn.Module):
        return activation_fn()
    if isinstance(activation_fn, nn.Module):
        return activation_fn
    if callable(activation_fn):
        return _Activation(activation_fn)
    raise TypeError(f"activation_fn must be callable, got {activation_fn!r}.")


def check_batch_norm(batch_norm: Any) -> bool:
    """``batch_norm`` must be a bool (a string such as ``"no"`` would read as True)."""
    if not isinstance(batch_norm, bool):
        raise ValueError(f"batch_norm must be True or False, got {batch_norm!r}.")
    return batch_norm


def check_dropout(dropout: Any) -> float | None:
    """``dropout`` as a probability in [0, 1), or None; else ValueError."""
    if dropout is None:
        return None
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a probability in [0, 1) or None, got {dropout!r}.")
    return float(dropout)


class DNNNetwork(nn.Module):
    """DenseFeatures -> [Linear, activation, dropout, batch norm] * len(hidden_units) -> logits.

    The order inside a layer is TF's. Weights start Glorot-uniform, biases zero (as TF's).
    Batch norm keeps PyTorch's running-statistics momentum (0.1), not TF's 0.999 decay, so
    short runs evaluate well.
    """

    def __init__(self, feature_columns: Sequence[DenseColumn], hidden_units: Sequence[int],
                 logits_dimension: int, activation_fn: Any = torch.relu,
                 dropout: float | None = None, batch_norm: bool = False) -> None:
        super().__init__()
        self.input_layer = DenseFeatures(feature_columns)
        layers: list[nn.Module] = []
        width = self.input_layer.output_dim
        for units in hidden_units:
            layers += [nn.Linear(width, units), make_activation(activation_fn)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            if batch_norm:
                layers.append(nn.BatchNorm1d(units, eps=0.001))
            width = units
        self.hidden = nn.Sequential(*layers)
        self.logits = nn.Linear(width, logits_dimension)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, features: Any) -> torch.Tensor:
        return self.logits(self.hidden(self.input_layer(features)))


class _DNN(CannedEstimator):
    def __init__(self, head: Head, hidden_units: Sequence[int], feature_columns: Iterable[Any],
                 model_dir: str | None, optimizer: Any, activation_fn: Any, dropout: float | None,
                 config: Any, warm_start_from: Any, batch_norm: bool,
                 learning_rate: float | None, wkey: str | None) -> None:
        columns = check_feature_columns(feature_columns, "feature_columns")
        units = check_hidden_units(hidden_units)
        dropout = check_dropout(dropout)
        batch_norm = check_batch_norm(batch_norm)
        make_activation(activation_fn)
        check_optimizer(optimizer)
        learning_rate = check_learning_rate(learning_rate)

        def build_module() -> CannedModule:
            net = DNNNetwork(columns, units, head.logits_dimension, activation_fn, dropout, batch_norm)
            return CannedModule({"dnn": net}, wkey)

        build_module()  # validate columns now rather than at train time

        def build_optimizer(module: CannedModule, device_type: str | None = None):
            return make_optimizer(optimizer, module.parameters(), learning_rate, DNN_LEARNING_RATE,
                                  device_type)

        super().__init__(head, build_module, build_optimizer, model_dir, config, warm_start_from)


class DNNClassifier(_DNN):
    """Feed-forward classifier (TF's ``DNNClassifier``).

    Args:
      hidden_units: widths of the hidden layers, e.g. ``[64, 32]``.
      feature_columns: dense columns (numeric, bucketized, embedding, indicator).
      n_classes: 2 (one logit, sigmoid) or more (softmax).
      weight_column: feature key (or numeric_column) of per-example weights.
      label_vocabulary: the string labels, one per class.
      optimizer: name (default ``'Adagrad'``), Optimizer class, or factory ``params -> Optimizer``.
      activation_fn: callable, nn.Module class or name (default ``torch.relu``).
      dropout: probability of dropping a hidden unit while training, or None.
      batch_norm: batch normalization after each hidden layer.
      loss_reduction: ``'sum_over_batch_size'`` (default) or ``'sum'``.
      learning_rate: for a name or class (default 0.05, TF's).
    """

    def __init__(self, hidden_units: Sequence[int], feature_columns: Iterable[Any],
                 model_dir: str | None = None, n_classes: int = 2, weight_column: Any = None,
                 label_vocabulary: Sequence[str] | None = None, optimizer: Any = "Adagrad",
                 activation_fn: Any = torch.relu, dropout: float | None = None,
                 config: Any = None, warm_start_from: Any = None,
                 loss_reduction: str = "sum_over_batch_size", batch_norm: bool = False,
                 learning_rate: float | None = None) -> None:
        wkey = weight_key(weight_column)
        head = classification_head(n_classes, wkey, label_vocabulary, loss_reduction)
        super().__init__(head, hidden_units, feature_columns, model_dir, optimizer, activation_fn,
                         dropout, config, warm_start_from, batch_norm, learning_rate, wkey)


class DNNRegressor(_DNN):
    """Feed-forward regressor (TF's ``DNNRegressor``); args as :class:`DNNClassifier` with
    ``label_dimension`` instead of ``n_classes`` and ``label_vocabulary``."""

    def __init__(self, hidden_units: Sequence[int], feature_columns: Iterable[Any],
                 model_dir: str | None = None, label_dimension: int = 1, weight_column: Any = None,
                 optimizer: Any = "Adagrad", activation_fn: Any = torch.relu,
                 dropout: float | None = None, config: Any = None, warm_start_from: Any = None,
                 loss_reduction: str = "sum_over_batch_size", batch_norm: bool = False,
                 learning_rate: float | None = None) -> None:
        wkey = weight_key(weight_column)
        head = RegressionHead(label_dimension, wkey, loss_reduction)
        super().__init__(head, hidden_units, feature_columns, model_dir, optimizer, activation_fn,
                         dropout, config, warm_start_from, batch_norm, learning_rate, wkey)
