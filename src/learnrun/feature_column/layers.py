"""The layers that own feature-column parameters: ``DenseFeatures`` and ``LinearModel``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from learnrun.feature_column.columns import (
    COMBINERS,
    CategoricalColumn,
    DenseColumn,
    FeatureColumn,
    NumericColumn,
    combine,
    ids_tensor,
)


def _check_columns(columns: Iterable[Any], kinds: tuple[type, ...], what: str) -> list[FeatureColumn]:
    cols = list(columns)
    if not cols:
        raise ValueError(f"feature_columns must not be empty for {what}.")
    for c in cols:
        if not isinstance(c, kinds):
            raise ValueError(
                f"{what} accepts {', '.join(k.__name__ for k in kinds)}; got {c!r}. Wrap categorical "
                "columns in embedding_column() or indicator_column() for a DNN."
            )
    names = [c.name for c in cols]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ValueError(f"Duplicate feature column name found for columns: {dups}")
    return sorted(cols, key=lambda c: c.name)


def _as_feature_dict(features: Any, columns: Sequence[FeatureColumn]) -> Mapping[str, Any]:
    if type(features) is dict or isinstance(features, Mapping):
        return features
    keys = set().union(*(c.keys for c in columns))
    if len(keys) == 1:
        return {next(iter(keys)): features}
    raise ValueError(
        f"features is a single {type(features).__name__}, but the feature columns read the keys "
        f"{sorted(keys)}; pass features as a dict keyed by those names."
    )


def _module_key(name: str) -> str:
    return name.replace(".", "_")


class DenseFeatures(nn.Module):
    """Input layer: the dense columns of a features dict, concatenated in column-name order.

    ``DenseFeatures()`` without columns flattens a plain tensor of features to float32
    ``(batch, -1)``. ``output_dim`` is the width of the result (None without columns).
    """

    def __init__(self, feature_columns: Iterable[DenseColumn] | None = None) -> None:
        super().__init__()
        self.columns = None if feature_columns is None else _check_columns(feature_columns, (DenseColumn,), "DenseFeatures")
        self.tables = nn.ModuleDict()
        for c in self.columns or ():
            module = c.make_module()
            if module is not None:
                self.tables[_module_key(c.name)] = module
        # (column, key of its table or None), in column order: no name mangling per batch
        self._plan = [(c, _module_key(c.name) if _module_key(c.name) in self.tables else None)
                      for c in self.columns or ()]
        # One numeric column: a value it passes through as it is is checked in forward first.
        only = self.columns[0] if self.columns and len(self.columns) == 1 else None
        self._passthrough = only if isinstance(only, NumericColumn) else None
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    @property
    def output_dim(self) -> int | None:
        return None if self.columns is None else sum(c.dense_dim for c in self.columns)

    def forward(self, features: Any) -> torch.Tensor:
        column = self._passthrough
        if column is not None and type(features) is dict:
            value = features.get(column.key)
            if column.passes_through(value, self._buffers["_anchor"].device):
                return value
        device = self._anchor.device
        if self.columns is None:
            if isinstance(features, Mapping):
                raise ValueError(
                    f"DenseFeatures without feature_columns needs a tensor, got a dict with keys "
                    f"{sorted(map(str, features))}; pass feature_columns to read a dict."
                )
            tensor = torch.as_tensor(features, device=device).to(torch.float32)
            return tensor.reshape(tensor.shape[0], -1)
        feats = _as_feature_dict(features, self.columns)
        if len(self._plan) == 1:  # one column: its values as they are, no concatenation
            column, key = self._plan[0]
            return column.dense(feats, None if key is None else self.tables[key], device)
        tables = self.tables
        parts = [c.dense(feats, None if key is None else tables[key], device)
                 for c, key in self._plan]
        return torch.cat(parts, dim=1)


class LinearModel(nn.Module):
    """The wide part: ``sum`` of per-category weights and of dense columns times weights, plus bias.

    Categorical columns (including bucketized and crossed) get a weight per bucket, combined
    per example with ``sparse_combiner`` ('sum', 'mean' or 'sqrtn'); numeric, indicator and
    embedding columns get a dense weight matrix. All weights start at zero (as TF's).
    """

    def __init__(self, feature_columns: Iterable[FeatureColumn], units: int = 1, sparse_combiner: str = "sum") -> None:
        super().__init__()
        if sparse_combiner not in COMBINERS:
            raise ValueError(f"sparse_combiner must be one of {COMBINERS}, got {sparse_combiner!r}.")
        self.columns = _check_columns(feature_columns, (DenseColumn, CategoricalColumn), "LinearModel")
        self.sparse_combiner = sparse_combiner
        self.weights = nn.ParameterDict()
        self.tables = nn.ModuleDict()
        for c in self.columns:
            key = _module_key(c.name)
            rows = c.num_buckets if isinstance(c, CategoricalColumn) else c.dense_dim
            self.weights[key] = nn.Parameter(torch.zeros(rows, units))
            module = None if isinstance(c, CategoricalColumn) else c.make_module()
            if module is not None:
                self.tables[key] = module
        self.bias = nn.Parameter(torch.zeros(units))
        # (column, key, categorical, has a table) per column: no name mangling per batch
        self._plan = [(c, _module_key(c.name), isinstance(c, CategoricalColumn),
                       _module_key(c.name) in self.tables) for c in self.columns]

    def forward(self, features: Any) -> torch.Tensor:
        feats = _as_feature_dict(features, self.columns)
        weights, tables = self.weights, self.tables
        total = self.bias  # (units,): broadcast over the batch by the first part
        for c, key, categorical, has_table in self._plan:
            weight = weights[key]
            if categorical:
                ids = ids_tensor(c, feats, weight.device)
                total = total + combine(weight[ids], self.sparse_combiner)
            else:  # total + values @ weight in one op (addmm), as nn.Linear does
                values = c.dense(feats, tables[key] if has_table else None, weight.device)
                total = torch.addmm(total, values, weight)
        return total
