"""Feature column constructors with TF's names, arguments and error texts."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from learnrun.feature_column.columns import (
    COMBINERS,
    BucketizedColumn,
    CategoricalColumn,
    CrossedColumn,
    EmbeddingColumn,
    HashBucketColumn,
    IdentityColumn,
    IndicatorColumn,
    NumericColumn,
    VocabularyListColumn,
    dtype_kind,
)


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
    if dtype is not None and dtype_kind(dtype, key) != vocab_kind:
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
    return HashBucketColumn(key, int(hash_bucket_size), dtype_kind(dtype, key))


def embedding_column(categorical_column: CategoricalColumn, dimension: int, combiner: str = "mean",
                     initializer: Callable | None = None) -> EmbeddingColumn:
    """A trainable embedding; ``initializer`` fills the table in place (e.g. ``torch.nn.init.normal_``).

    Default initializer: truncated normal with stddev ``1/sqrt(dimension)`` (TF's).
    """
    if not isinstance(categorical_column, CategoricalColumn):
        raise ValueError(f"categorical_column must be a categorical column. Given: {categorical_column}")
    if dimension is None or dimension < 1:
        raise ValueError(f"Invalid dimension {dimension}.")
    if combiner not in COMBINERS:
        raise ValueError(f"combiner must be one of {COMBINERS}, got {combiner!r} (column {categorical_column.name}).")
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
