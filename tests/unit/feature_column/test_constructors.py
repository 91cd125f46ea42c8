"""Tests for learnrun.feature_column.constructors: the error texts of the column constructors."""

from __future__ import annotations

import pytest
import torch

from learnrun import feature_column as fc


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: fc.numeric_column("x", shape=(0,)), "shape dimensions must be greater than 0. shape: \\(0,\\), key: x"),
        (lambda: fc.numeric_column("x", shape=(1.5,)), "shape dimensions must be integer"),
        (lambda: fc.numeric_column("x", shape=(2,), default_value=[1, 2, 3]), "The shape of default_value must be equal"),
        (lambda: fc.numeric_column("x", dtype=torch.bool), "dtype must be convertible to float"),
        (lambda: fc.bucketized_column(fc.numeric_column("x"), []), "boundaries must not be empty"),
        (lambda: fc.bucketized_column(fc.numeric_column("x"), [2, 1]), "boundaries must be a sorted list"),
        (lambda: fc.bucketized_column("x", [1]), "source_column must be a column generated with numeric_column"),
        (lambda: fc.categorical_column_with_vocabulary_list("c", []), "must be non-empty, column_name: c"),
        (lambda: fc.categorical_column_with_vocabulary_list("c", ["a", "a"]), "Duplicate keys in vocabulary_list"),
        (lambda: fc.categorical_column_with_vocabulary_list("c", ["a"], default_value=0, num_oov_buckets=2),
         "Can't specify both num_oov_buckets and default_value in c"),
        (lambda: fc.categorical_column_with_vocabulary_list("c", ["a"], dtype=int), "do not match, column_name: c"),
        (lambda: fc.categorical_column_with_identity("c", 0), "num_buckets 0 < 1, column_name c"),
        (lambda: fc.categorical_column_with_identity("c", 3, default_value=3), r"default_value 3 not in range \[0, 3\)"),
        (lambda: fc.categorical_column_with_hash_bucket("c", 0), "hash_bucket_size must be at least 1"),
        (lambda: fc.categorical_column_with_hash_bucket("c", 5, dtype=float), "dtype must be string or integer"),
        (lambda: fc.embedding_column(fc.categorical_column_with_identity("c", 3), 0), "Invalid dimension 0"),
        (lambda: fc.embedding_column(fc.categorical_column_with_identity("c", 3), 2, combiner="max"), "combiner must be one of"),
        (lambda: fc.crossed_column(["a"], 10), "keys must be a list with length > 1"),
        (lambda: fc.crossed_column(["a", fc.categorical_column_with_hash_bucket("b", 3)], 10), "not supported for crossing"),
        (lambda: fc.crossed_column(["a", "b"], 0), "hash_bucket_size must be > 1"),
    ],
)
def test_constructor_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
