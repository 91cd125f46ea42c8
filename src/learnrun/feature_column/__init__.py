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

Modules: the column classes in :mod:`learnrun.feature_column.columns`, their constructors in
:mod:`learnrun.feature_column.constructors`, the layers in :mod:`learnrun.feature_column.layers`;
every public name is importable from ``learnrun.feature_column``.
"""

from __future__ import annotations

from learnrun.feature_column.columns import (
    BucketizedColumn,
    CategoricalColumn,
    CrossedColumn,
    DenseColumn,
    EmbeddingColumn,
    FeatureColumn,
    HashBucketColumn,
    IdentityColumn,
    IndicatorColumn,
    NumericColumn,
    VocabularyListColumn,
    stable_hash,
)
from learnrun.feature_column.constructors import (
    bucketized_column,
    categorical_column_with_hash_bucket,
    categorical_column_with_identity,
    categorical_column_with_vocabulary_list,
    crossed_column,
    embedding_column,
    indicator_column,
    numeric_column,
)
from learnrun.feature_column.layers import DenseFeatures, LinearModel

__all__ = [
    "BucketizedColumn", "CategoricalColumn", "CrossedColumn", "DenseColumn", "DenseFeatures",
    "EmbeddingColumn", "FeatureColumn", "HashBucketColumn", "IdentityColumn", "IndicatorColumn",
    "LinearModel", "NumericColumn", "VocabularyListColumn", "bucketized_column",
    "categorical_column_with_hash_bucket", "categorical_column_with_identity",
    "categorical_column_with_vocabulary_list", "crossed_column", "embedding_column",
    "indicator_column", "numeric_column", "stable_hash",
]
