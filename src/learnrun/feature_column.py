"""Feature columns: describe how raw features (a dict of tensors / numpy arrays) become model inputs.

TF's ``tf.feature_column`` for PyTorch. Columns are immutable descriptions; the layers that
own parameters are :class:`DenseFeatures` (the input layer of a DNN: numeric, bucketized,
indicator and embedding columns concatenated in column-name order; embeddings are trainable)
and :class:`LinearModel` (the wide part: one weight per numeric value or per category).

Raw values: numbers as tensors or arrays of shape ``(batch,)`` or ``(batch, *shape)``;
categories as int tensors/arrays or numpy arrays / lists of strings, shape ``(batch,)`` or
``(batch, k)`` for ``k`` values per example. A plain tensor (not a dict) of features works
without columns (``DenseFeatures()`` flattens it) and with columns that all read one key.
Unknown categories (no OOV buckets, ``default_value=-1``), missing keys and wrong dtypes raise
``ValueError`` naming the column and the offending value. Hashing is stable across processes
(blake2b), not Python's randomized ``hash``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

_COMBINERS = ("mean", "sqrtn", "sum")


def stable_hash(value: str, num_buckets: int) -> int:
    """Bucket of ``value`` in ``[0, num_buckets)``; identical in every process and run."""
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % num_buckets


def _raw(features: Any, key: str, column: str) -> Any:
    if not isinstance(features, Mapping):
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


def _dtype_kind(dtype: Any, key: str) -> str:
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


@dataclasses.dataclass(frozen=True)
class NumericColumn(DenseColumn):
    """Real values of shape ``shape``; NaNs take ``default_value`` when it is given."""

    key: str
    shape: tuple[int, ...] = (1,)
    default_value: Any = None
    dtype: Any = torch.float32
    normalizer_fn: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.key

    @property
    def keys(self) -> frozenset[str]:
        return frozenset([self.key])

    @property
    def dense_dim(self) -> int:  # type: ignore[override]
        return math.prod(self.shape)

    def values(self, features: Mapping[str, Any], device: torch.device | None = None) -> torch.Tensor:
        """The column as float32 ``(batch, prod(shape))``, defaults filled, normalizer applied."""
        value = _raw(features, self.key, self.name)
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
class VocabularyListColumn(CategoricalColumn):
    """Categories from an in-memory vocabulary, plus optional hashed OOV buckets."""

    key: str
    vocabulary_list: tuple[Any, ...]
    kind: str
    default_value: int = -1
    num_oov_buckets: int = 0

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.key

    @property
    def keys(self) -> frozenset[str]:
        return frozenset([self.key])

    @property
    def num_buckets(self) -> int:  # type: ignore[override]
        return len(self.vocabulary_list) + self.num_oov_buckets

    def ids(self, features):
        values = _categorical_values(_raw(features, self.key, self.name), self.name, self.kind)
        table = {v: i for i, v in enumerate(self.vocabulary_list)}
        size = len(self.vocabulary_list)

        def lookup(v: Any) -> int:
            v = int(v) if self.kind == "int" else v
            if v in table:
                return table[v]
            if self.num_oov_buckets:
                return size + stable_hash(str(v), self.num_oov_buckets)
            if self.default_value != -1:
                return self.default_value
            shown = list(self.vocabulary_list[:10]) + (["..."] if size > 10 else [])
            raise ValueError(
                f"categorical column {self.name!r}: value {v!r} is not in vocabulary_list {shown}. "
                "Set num_oov_buckets > 0 or a default_value to accept unknown values."
            )

        return np.vectorize(lookup, otypes=[np.int64])(values) if values.size else values.astype(np.int64)


@dataclasses.dataclass(frozen=True)
class IdentityColumn(CategoricalColumn):
    """Integer values that are their own ids in ``[0, num_buckets)``."""

    key: str
    num_buckets: int  # type: ignore[assignment]
    default_value: int | None = None

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.key

    @property
    def keys(self) -> frozenset[str]:
        return frozenset([self.key])

    def ids(self, features):
        values = _categorical_values(_raw(features, self.key, self.name), self.name, "int")
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
class HashBucketColumn(CategoricalColumn):
    """Values hashed (stably) into ``hash_bucket_size`` buckets."""

    key: str
    hash_bucket_size: int
    kind: str = "string"

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.key

    @property
    def keys(self) -> frozenset[str]:
        return frozenset([self.key])

    @property
    def num_buckets(self) -> int:  # type: ignore[override]
        return self.hash_bucket_size

    def ids(self, features):
        values = _categorical_values(_raw(features, self.key, self.name), self.name, self.kind)
        if not values.size:
            return values.astype(np.int64)
        return np.vectorize(lambda v: stable_hash(str(v), self.hash_bucket_size), otypes=[np.int64])(values)


@dataclasses.dataclass(frozen=True)
class CrossedColumn(CategoricalColumn):
    """The hashed cross product of several categorical features."""

    keys_: tuple[Any, ...]
    hash_bucket_size: int

    @property
    def name(self) -> str:  # type: ignore[override]
        return "_X_".join(sorted(k if isinstance(k, str) else k.name for k in self.keys_))

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
        batch = parts[0].shape[0]
        rows = []
        for b in range(batch):
            crosses = [""]
            for part in parts:
                crosses = [f"{c}_X_{t}" if c else t for c in crosses for t in part[b]]
            rows.append([stable_hash(c, self.hash_bucket_size) for c in crosses])
        return np.asarray(rows, dtype=np.int64).reshape(batch, -1)


def _ids_tensor(column: CategoricalColumn, features, device) -> torch.Tensor:
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


def _combine(rows: torch.Tensor, combiner: str) -> torch.Tensor:
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
        ids = _ids_tensor(self.categorical_column, features, module.weight.device)
        return _combine(module.weight[ids], self.combiner)


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
        ids = _ids_tensor(self.categorical_column, features, device)
        out = torch.zeros(ids.shape[0], self.dense_dim, device=device)
        return out.scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.float32))


# ---- constructors (TF names, arguments and error texts) ---------------------------------


def numeric_column(key: str, shape: int | Sequence[int] = (1,), default_value: Any = None,
                   dtype: Any = torch.float32,
                   normalizer_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> NumericColumn:
    """A real-valued feature of ``shape`` (per example); output is float32."""
    shape_t = (shape,) if isinstance(shape, int) else tuple(shape)
    for d in shape_t:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise ValueError(f"shape dimensions must be integer. shape: {shape}, key: {key}")
        if d < 1:
            raise ValueError(f"shape dimensions must be greater than 0. shape: {shape}, key: {key}")
    if default_value is not None:
        default = np.asarray(default_value)
        if default.dtype.kind not in "biuf":
            raise TypeError(f"default_value must be compatible with dtype {dtype}. default_value: {default_value}, key: {key}")
        if default.ndim and default.size != math.prod(shape_t):
            raise ValueError(
                f"The shape of default_value must be equal to given shape. default_value: "
                f"{default_value}, shape: {shape_t}, key: {key}"
            )
    torch_dtype = dtype if isinstance(dtype, torch.dtype) else None
    if torch_dtype is None and dtype in (float, int, np.float32, np.float64, np.int32, np.int64):
        torch_dtype = torch.float32
    if torch_dtype is None or torch_dtype.is_complex or torch_dtype == torch.bool:
        raise ValueError(f"dtype must be convertible to float. dtype: {dtype}, key: {key}")
    if normalizer_fn is not None and not callable(normalizer_fn):
        raise TypeError(f"normalizer_fn must be a callable. Given: {normalizer_fn}")
    return NumericColumn(key, shape_t, default_value, torch_dtype, normalizer_fn)


def bucketized_column(source_column: NumericColumn, boundaries: Sequence[float]) -> BucketizedColumn:
    """Discretize a numeric column at sorted ``boundaries`` (dense one-hot, or categorical ids)."""
    if not isinstance(source_column, NumericColumn):
        raise ValueError(f"source_column must be a column generated with numeric_column(). Given: {source_column}")
    if len(source_column.shape) > 1:
        raise ValueError(f"source_column must be one-dimensional column. Given: {source_column}")
    if not boundaries:
        raise ValueError("boundaries must not be empty.")
    if not isinstance(boundaries, (list, tuple)):
        raise ValueError("boundaries must be a sorted list.")
    if any(a >= b for a, b in zip(boundaries, boundaries[1:], strict=False)):
        raise ValueError(f"boundaries must be a sorted list. Given: {list(boundaries)}")
    return BucketizedColumn(source_column, tuple(float(b) for b in boundaries))


def categorical_column_with_vocabulary_list(key: str, vocabulary_list: Sequence[Any], dtype: Any = None,
                                            default_value: int = -1,
                                            num_oov_buckets: int = 0) -> VocabularyListColumn:
    """Map each value to its index in ``vocabulary_list``; unknowns to OOV buckets or default_value."""
    if vocabulary_list is None or len(vocabulary_list) < 1:
        raise ValueError(f"vocabulary_list {vocabulary_list} must be non-empty, column_name: {key}")
    if len(set(vocabulary_list)) != len(vocabulary_list):
        raise ValueError(f"Duplicate keys in vocabulary_list {vocabulary_list}, column_name: {key}")
    vocab = np.asarray(vocabulary_list)
    vocab_kind = "string" if vocab.dtype.kind in "US" else "int" if vocab.dtype.kind in "iu" else None
    if vocab_kind is None:
        raise ValueError(f"column_name: {key} vocabulary dtype must be string or integer. dtype: {vocab.dtype}.")
    if num_oov_buckets:
        if default_value != -1:
            raise ValueError(f"Can't specify both num_oov_buckets and default_value in {key}.")
        if num_oov_buckets < 0:
            raise ValueError(f"Invalid num_oov_buckets {num_oov_buckets} in {key}.")
    if dtype is not None and _dtype_kind(dtype, key) != vocab_kind:
        raise ValueError(f"dtype {dtype} and vocabulary dtype {vocab.dtype} do not match, column_name: {key}")
    if not -1 <= default_value < len(vocabulary_list):
        raise ValueError(
            f"default_value {default_value} must be -1 or an index in [0, {len(vocabulary_list)}), column_name: {key}"
        )
    values = tuple(int(v) for v in vocabulary_list) if vocab_kind == "int" else tuple(str(v) for v in vocabulary_list)
    return VocabularyListColumn(key, values, vocab_kind, default_value, int(num_oov_buckets))


def categorical_column_with_identity(key: str, num_buckets: int, default_value: int | None = None) -> IdentityColumn:
    """Integer values used directly as ids in ``[0, num_buckets)``."""
    if num_buckets < 1:
        raise ValueError(f"num_buckets {num_buckets} < 1, column_name {key}")
    if default_value is not None and not 0 <= default_value < num_buckets:
        raise ValueError(f"default_value {default_value} not in range [0, {num_buckets}), column_name {key}")
    return IdentityColumn(key, int(num_buckets), default_value)


def categorical_column_with_hash_bucket(key: str, hash_bucket_size: int, dtype: Any = str) -> HashBucketColumn:
    """Hash values (as strings, stably) into ``hash_bucket_size`` buckets."""
    if hash_bucket_size is None:
        raise ValueError(f"hash_bucket_size must be set. key: {key}")
    if hash_bucket_size < 1:
        raise ValueError(f"hash_bucket_size must be at least 1. hash_bucket_size: {hash_bucket_size}, key: {key}")
    return HashBucketColumn(key, int(hash_bucket_size), _dtype_kind(dtype, key))


def embedding_column(categorical_column: CategoricalColumn, dimension: int, combiner: str = "mean",
                     initializer: Callable | None = None) -> EmbeddingColumn:
    """A trainable embedding; ``initializer`` fills the table in place (e.g. ``torch.nn.init.normal_``).

    Default initializer: truncated normal with stddev ``1/sqrt(dimension)`` (TF's).
    """
    if not isinstance(categorical_column, CategoricalColumn):
        raise ValueError(f"categorical_column must be a categorical column. Given: {categorical_column}")
    if dimension is None or dimension < 1:
        raise ValueError(f"Invalid dimension {dimension}.")
    if combiner not in _COMBINERS:
        raise ValueError(f"combiner must be one of {_COMBINERS}, got {combiner!r} (column {categorical_column.name}).")
    if initializer is not None and not callable(initializer):
        raise ValueError(
            f"initializer must be callable if specified. Embedding of column_name: {categorical_column.name}"
        )
    return EmbeddingColumn(categorical_column, int(dimension), combiner, initializer)


def indicator_column(categorical_column: CategoricalColumn) -> IndicatorColumn:
    """Multi-hot representation of a categorical column (counts for repeated values)."""
    if not isinstance(categorical_column, CategoricalColumn):
        raise ValueError(f"categorical_column must be a categorical column. Given: {categorical_column}")
    return IndicatorColumn(categorical_column)


def crossed_column(keys: Sequence[Any], hash_bucket_size: int) -> CrossedColumn:
    """Hash the combinations of several features (raw keys or categorical columns)."""
    if not hash_bucket_size or hash_bucket_size < 1:
        raise ValueError(f"hash_bucket_size must be > 1. hash_bucket_size: {hash_bucket_size}")
    if not keys or len(keys) < 2:
        raise ValueError(f"keys must be a list with length > 1. Given: {keys}")
    for key in keys:
        if not isinstance(key, (str, CategoricalColumn)):
            raise ValueError(
                "Unsupported key type. All keys must be either string, or categorical column except "
                f"HashedCategoricalColumn. Given: {key}"
            )
        if isinstance(key, HashBucketColumn):
            raise ValueError(
                "categorical_column_with_hash_bucket is not supported for crossing. Hashing before "
                "crossing will increase probability of collision. Instead, use the feature name as "
                f"a string. Given: {key}"
            )
    return CrossedColumn(tuple(keys), int(hash_bucket_size))


# ---- layers -------------------------------------------------------------------------------


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
    if isinstance(features, Mapping):
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


def _table(tables: nn.ModuleDict, column: FeatureColumn) -> nn.Module | None:
    key = _module_key(column.name)
    return tables[key] if key in tables else None  # noqa: SIM401 (ModuleDict has no get)


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
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    @property
    def output_dim(self) -> int | None:
        return None if self.columns is None else sum(c.dense_dim for c in self.columns)

    def forward(self, features: Any) -> torch.Tensor:
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
        parts = [c.dense(feats, _table(self.tables, c), device) for c in self.columns]
        return torch.cat(parts, dim=1)


class LinearModel(nn.Module):
    """The wide part: ``sum`` of per-category weights and of dense columns times weights, plus bias.

    Categorical columns (including bucketized and crossed) get a weight per bucket, combined
    per example with ``sparse_combiner`` ('sum', 'mean' or 'sqrtn'); numeric, indicator and
    embedding columns get a dense weight matrix. All weights start at zero (as TF's).
    """

    def __init__(self, feature_columns: Iterable[FeatureColumn], units: int = 1, sparse_combiner: str = "sum") -> None:
        super().__init__()
        if sparse_combiner not in _COMBINERS:
            raise ValueError(f"sparse_combiner must be one of {_COMBINERS}, got {sparse_combiner!r}.")
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

    def forward(self, features: Any) -> torch.Tensor:
        feats = _as_feature_dict(features, self.columns)
        total = None
        for c in self.columns:
            key = _module_key(c.name)
            weight = self.weights[key]
            if isinstance(c, CategoricalColumn):
                ids = _ids_tensor(c, feats, weight.device)
                part = _combine(weight[ids], self.sparse_combiner)
            else:
                part = c.dense(feats, _table(self.tables, c), weight.device) @ weight
            total = part if total is None else total + part
        return total + self.bias
