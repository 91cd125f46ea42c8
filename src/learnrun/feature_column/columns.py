"""Feature column classes: what each column reads and how it turns raw values into tensors or ids.

Build columns with the constructors of :mod:`learnrun.feature_column` (``numeric_column``,
``categorical_column_with_vocabulary_list``, ...), which validate their arguments; the
classes here are the immutable results, re-exported there.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

# The columns are re-exported by ``learnrun.feature_column``; ``COMBINERS``, ``dtype_kind``,
# ``ids_tensor`` and ``combine`` serve the constructors and layers of this package.
__all__ = [
    "BucketizedColumn", "CategoricalColumn", "CrossedColumn", "DenseColumn", "EmbeddingColumn",
    "FeatureColumn", "HashBucketColumn", "IdentityColumn", "IndicatorColumn", "NumericColumn",
    "VocabularyListColumn", "stable_hash",
]

COMBINERS = ("mean", "sqrtn", "sum")


def stable_hash(value: str, num_buckets: int) -> int:
    """Bucket of ``value`` in ``[0, num_buckets)``; identical in every process and run."""
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % num_buckets


def _hash_values(values: np.ndarray, num_buckets: int) -> np.ndarray:
    """``stable_hash(str(v), num_buckets)`` of every element, each distinct value hashed once."""
    memo: dict[Any, int] = {}

    def bucket(value: Any) -> int:
        found = memo.get(value)
        if found is None:
            found = memo[value] = stable_hash(str(value), num_buckets)
        return found

    flat = values.reshape(-1).tolist()  # Python ints / strs, as str() should see them
    return np.fromiter(map(bucket, flat), dtype=np.int64, count=len(flat)).reshape(values.shape)


def _raw(features: Any, key: str, column: str) -> Any:
    if type(features) is not dict and not isinstance(features, Mapping):
        raise TypeError(f"feature column {column!r}: features must be a dict, got {type(features).__name__}.")
    if key not in features:
        raise ValueError(
            f"feature column {column!r} reads feature {key!r}, which is not among the features "
            f"{sorted(map(str, features))}. Make the input_fn produce {key!r} or fix the column key."
        )
    return features[key]


def _sample(arr: np.ndarray) -> Any:
    flat = arr.reshape(-1)
    return flat[0] if flat.size else None


def _categorical_values(value: Any, column: str, want: str) -> np.ndarray:
    """Raw categorical input as a 2-D numpy array ``(batch, k)``; ``want`` is "string" or "int"."""
    arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(
            f"feature column {column!r} expects values of shape (batch,) or (batch, k), got shape {arr.shape}."
        )
    kind = arr.dtype.kind
    if kind == "O":
        kinds = {"int" if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else
                 "string" if isinstance(v, (str, bytes)) else type(v).__name__ for v in arr.reshape(-1)}
        kind = "U" if kinds <= {"string"} else "i" if kinds <= {"int"} else "?"
        if kind == "U":
            arr = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v, otypes=[object])(arr)
    elif kind == "S":
        arr = np.char.decode(arr, "utf-8")
        kind = "U"
    got = "string" if kind == "U" else "int" if kind in "iu" else None
    if got != want:
        raise ValueError(
            f"feature column {column!r} expects {want} values but got dtype {arr.dtype} "
            f"(e.g. {_sample(arr)!r}). Convert the feature or use a column for that dtype."
        )
    return arr.astype(np.int64) if want == "int" else arr


def dtype_kind(dtype: Any, key: str) -> str:
    if dtype in (str, "string", np.str_, bytes, object):
        return "string"
    if dtype in (int, "int", "int64", "int32", np.int64, np.int32, torch.int64, torch.int32):
        return "int"
    raise ValueError(f"dtype must be string or integer. dtype: {dtype}, key: {key}")


class FeatureColumn:
    """Base of all columns: ``name`` and the raw feature ``keys`` it reads."""

    name: str

    @property
    def keys(self) -> frozenset[str]:
        raise NotImplementedError


class DenseColumn(FeatureColumn):
    """A column that gives a float tensor ``(batch, dense_dim)``."""

    dense_dim: int

    def make_module(self) -> nn.Module | None:
        """Trainable parameters of this column (embeddings), or None."""
        return None

    def dense(self, features: Mapping[str, Any], module: nn.Module | None, device: torch.device) -> torch.Tensor:
        raise NotImplementedError


class CategoricalColumn(FeatureColumn):
    """A column that maps values to ids in ``[0, num_buckets)``."""

    num_buckets: int

    def ids(self, features: Mapping[str, Any]) -> np.ndarray:
        """Integer ids of shape ``(batch, k)``."""
        raise NotImplementedError


class _KeyedColumn:
    """Mixin of the columns that read one raw feature ``key`` and are named after it."""

    key: str

    @property
    def name(self) -> str:
        return self.key

    @property
    def keys(self) -> frozenset[str]:
        return frozenset([self.key])

    def _raw_categories(self, features: Mapping[str, Any], want: str) -> np.ndarray:
        """This column's raw values as a ``(batch, k)`` array of ``want`` ("string" or "int")."""
        return _categorical_values(_raw(features, self.key, self.name), self.name, want)


@dataclasses.dataclass(frozen=True)
class NumericColumn(_KeyedColumn, DenseColumn):
    """Real values of shape ``shape``; NaNs take ``default_value`` when it is given."""

    key: str
    shape: tuple[int, ...] = (1,)
    default_value: Any = None
    dtype: Any = torch.float32
    normalizer_fn: Callable[[torch.Tensor], torch.Tensor] | None = None

    @functools.cached_property
    def dense_dim(self) -> int:  # type: ignore[override]
        return math.prod(self.shape)  # read at every batch: computed once

    def passes_through(self, value: Any, device: torch.device | None) -> bool:
        """True when ``value`` already is this column's value: a float32 ``(batch, width)``
        tensor on ``device`` (None: any), with no default to fill and no normalizer."""
        return (type(value) is torch.Tensor and value.dtype == torch.float32 and value.dim() == 2
                and self.default_value is None and self.normalizer_fn is None
                and (device is None or value.device == device)
                and value.shape[1] == self.dense_dim)

    def values(self, features: Mapping[str, Any], device: torch.device | None = None) -> torch.Tensor:
        """The column as float32 ``(batch, prod(shape))``, defaults filled, normalizer applied."""
        value = _raw(features, self.key, self.key)  # a numeric column is named after its key
        if self.passes_through(value, device):
            return value  # the common case: no op per batch
        if not isinstance(value, torch.Tensor):
            arr = np.asarray(value)
            if arr.dtype.kind not in "biuf":
                raise ValueError(
                    f"numeric_column {self.key!r} expects numbers but got dtype {arr.dtype} "
                    f"(e.g. {_sample(arr)!r}). Use a categorical column for strings."
                )
            value = torch.as_tensor(arr)
        elif value.dtype.is_complex:
            raise ValueError(f"numeric_column {self.key!r} expects real numbers, got dtype {value.dtype}.")
        value = value.to(device=device, dtype=torch.float32)
        batch = value.shape[0] if value.dim() else 1
        if value.numel() != batch * self.dense_dim:
            raise ValueError(
                f"numeric_column {self.key!r} has shape {self.shape} but its feature has shape "
                f"{tuple(value.shape)}; expected (batch, *{self.shape})."
            )
        value = value.reshape(batch, self.dense_dim)
        if self.default_value is not None:
            fill = torch.as_tensor(self.default_value, dtype=torch.float32, device=value.device)
            value = torch.where(torch.isnan(value), fill.reshape(-1).expand(batch, -1) if fill.dim() else fill, value)
        if self.normalizer_fn is not None:
            value = self.normalizer_fn(value)
        return value

    def dense(self, features, module, device):
        return self.values(features, device)


@dataclasses.dataclass(frozen=True)
class BucketizedColumn(DenseColumn, CategoricalColumn):
    """A numeric column split at ``boundaries``: bucket i holds ``boundaries[i-1] <= v < boundaries[i]``."""

    source_column: NumericColumn
    boundaries: tuple[float, ...]

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.source_column.name}_bucketized"

    @property
    def keys(self) -> frozenset[str]:
        return self.source_column.keys

    @property
    def num_buckets(self) -> int:  # type: ignore[override]
        return (len(self.boundaries) + 1) * self.source_column.dense_dim

    @property
    def dense_dim(self) -> int:  # type: ignore[override]
        return self.num_buckets

    def _buckets(self, features, device=None) -> torch.Tensor:
        values = self.source_column.values(features, device)
        bounds = torch.tensor(self.boundaries, dtype=torch.float32, device=values.device)
        return torch.bucketize(values, bounds, right=True)

    def ids(self, features):
        buckets = self._buckets(features).cpu().numpy()
        offsets = np.arange(buckets.shape[1]) * (len(self.boundaries) + 1)
        return buckets + offsets

    def dense(self, features, module, device):
        buckets = self._buckets(features, device)
        onehot = nn.functional.one_hot(buckets, len(self.boundaries) + 1).to(torch.float32)
        return onehot.reshape(buckets.shape[0], -1)


@dataclasses.dataclass(frozen=True)
class VocabularyListColumn(_KeyedColumn, CategoricalColumn):
    """Categories from an in-memory vocabulary, plus optional hashed OOV buckets."""

    key: str
    vocabulary_list: tuple[Any, ...]
    kind: str
    default_value: int = -1
    num_oov_buckets: int = 0

    @property
    def num_buckets(self) -> int:  # type: ignore[override]
        return len(self.vocabulary_list) + self.num_oov_buckets

    def ids(self, features):
        values = self._raw_categories(features, self.kind)
        table = {v: i for i, v in enumerate(self.vocabulary_list)}
        flat = values.reshape(-1).tolist()  # Python ints / strs, like the vocabulary
        ids = np.fromiter((table.get(v, -1) for v in flat), dtype=np.int64, count=len(flat))
        ids = ids.reshape(values.shape)
        unknown = ids < 0
        if not unknown.any():
            return ids
        if self.num_oov_buckets:
            ids[unknown] = len(table) + _hash_values(values[unknown], self.num_oov_buckets)
        elif self.default_value != -1:
            ids[unknown] = self.default_value
        else:
            first = flat[int(np.argmax(unknown.reshape(-1)))]
            size = len(self.vocabulary_list)
            shown = list(self.vocabulary_list[:10]) + (["..."] if size > 10 else [])
            raise ValueError(
                f"categorical column {self.name!r}: value {first!r} is not in vocabulary_list "
                f"{shown}. Set num_oov_buckets > 0 or a default_value to accept unknown values."
            )
        return ids


@dataclasses.dataclass(frozen=True)
class IdentityColumn(_KeyedColumn, CategoricalColumn):
    """Integer values that are their own ids in ``[0, num_buckets)``."""

    key: str
    num_buckets: int  # type: ignore[assignment]
    default_value: int | None = None

    def ids(self, features):
        values = self._raw_categories(features, "int")
        bad = (values < 0) | (values >= self.num_buckets)
        if bad.any():
            if self.default_value is None:
                raise ValueError(
                    f"categorical column {self.name!r}: value {int(values[bad][0])} is outside "
                    f"[0, {self.num_buckets}). Raise num_buckets or set default_value."
                )
            values = np.where(bad, self.default_value, values)
        return values


@dataclasses.dataclass(frozen=True)
class HashBucketColumn(_KeyedColumn, CategoricalColumn):
    """Values hashed (stably) into ``hash_bucket_size`` buckets."""

    key: str
    hash_bucket_size: int
    kind: str = "string"

    @property
    def num_buckets(self) -> int:  # type: ignore[override]
        return self.hash_bucket_size

    def ids(self, features):
        return _hash_values(self._raw_categories(features, self.kind), self.hash_bucket_size)


@dataclasses.dataclass(frozen=True)
class CrossedColumn(CategoricalColumn):
    """The hashed cross product of several categorical features."""

    keys_: tuple[Any, ...]
    hash_bucket_size: int

    @property
    def name(self) -> str:  # type: ignore[override]
        return "_X_".join(sorted(self._key_names()))

    def _key_names(self) -> list[str]:
        return [k if isinstance(k, str) else k.name for k in self.keys_]

    @property
    def keys(self) -> frozenset[str]:
        out: set[str] = set()
        for k in self.keys_:
            out |= {k} if isinstance(k, str) else set(k.keys)
        return frozenset(out)

    @property
    def num_buckets(self) -> int:  # type: ignore[override]
        return self.hash_bucket_size

    def _tokens(self, key: Any, features) -> np.ndarray:
        if isinstance(key, str):
            value = _raw(features, key, self.name)
            arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            if arr.dtype.kind == "f":
                raise ValueError(
                    f"crossed column {self.name!r}: feature {key!r} has float values (e.g. "
                    f"{_sample(arr)!r}); cross strings or ints, or bucketize it first."
                )
            arr = arr[:, None] if arr.ndim == 1 else arr
            return np.vectorize(lambda v: f"{key}={v}", otypes=[object])(arr)
        ids = key.ids(features)
        return np.vectorize(lambda v: f"{key.name}#{v}", otypes=[object])(ids)

    def ids(self, features):
        parts = [self._tokens(k, features) for k in self.keys_]
        crosses = parts[0]
        batch = crosses.shape[0]
        names = self._key_names()
        for name, part in zip(names[1:], parts[1:], strict=True):
            if part.shape[0] != batch:
                raise ValueError(
                    f"crossed column {self.name!r}: {name!r} has {part.shape[0]} examples but "
                    f"{names[0]!r} has {batch}; give every crossed feature one row per example."
                )
            # every token of the cross so far joined with every token of this part, row by row
            joined = crosses[:, :, None] + "_X_" + part[:, None, :]
            crosses = joined.reshape(batch, crosses.shape[1] * part.shape[1])
        return _hash_values(crosses, self.hash_bucket_size)


def ids_tensor(column: CategoricalColumn, features, device) -> torch.Tensor:
    return torch.as_tensor(column.ids(features), dtype=torch.int64, device=device)


class _EmbeddingTable(nn.Module):
    def __init__(self, num_buckets: int, dimension: int, initializer: Callable | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_buckets, dimension))
        if initializer is None:
            std = 1.0 / math.sqrt(dimension)
            nn.init.trunc_normal_(self.weight, std=std, a=-2 * std, b=2 * std)
        else:
            with torch.no_grad():
                initializer(self.weight)


def combine(rows: torch.Tensor, combiner: str) -> torch.Tensor:
    """Combine ``(batch, k, d)`` into ``(batch, d)``."""
    if combiner == "sum":
        return rows.sum(1)
    if combiner == "mean":
        return rows.mean(1)
    return rows.sum(1) / math.sqrt(rows.shape[1])


@dataclasses.dataclass(frozen=True)
class EmbeddingColumn(DenseColumn):
    """A trainable ``dimension``-wide embedding of a categorical column."""

    categorical_column: CategoricalColumn
    dimension: int
    combiner: str = "mean"
    initializer: Callable | None = None

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.categorical_column.name}_embedding"

    @property
    def keys(self) -> frozenset[str]:
        return self.categorical_column.keys

    @property
    def dense_dim(self) -> int:  # type: ignore[override]
        return self.dimension

    def make_module(self):
        return _EmbeddingTable(self.categorical_column.num_buckets, self.dimension, self.initializer)

    def dense(self, features, module, device):
        ids = ids_tensor(self.categorical_column, features, module.weight.device)
        return combine(module.weight[ids], self.combiner)


@dataclasses.dataclass(frozen=True)
class IndicatorColumn(DenseColumn):
    """Multi-hot (count) representation of a categorical column."""

    categorical_column: CategoricalColumn

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.categorical_column.name}_indicator"

    @property
    def keys(self) -> frozenset[str]:
        return self.categorical_column.keys

    @property
    def dense_dim(self) -> int:  # type: ignore[override]
        return self.categorical_column.num_buckets

    def dense(self, features, module, device):
        ids = ids_tensor(self.categorical_column, features, device)
        out = torch.zeros(ids.shape[0], self.dense_dim, device=device)
        return out.scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.float32))
