"""Tests for learnrun.feature_column.columns: each column's values and ids."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from learnrun import feature_column as fc


def test_numeric_column_shape_default_and_normalizer():
    col = fc.numeric_column("x", shape=(2,), default_value=[5.0, 6.0], normalizer_fn=lambda t: t * 10)
    out = col.values({"x": torch.tensor([[1.0, float("nan")], [float("nan"), 4.0]])})
    assert out.dtype == torch.float32
    assert out.tolist() == [[10.0, 60.0], [50.0, 40.0]]
    # (batch,) input for shape (1,) and ints become float
    assert fc.numeric_column("a").values({"a": np.array([1, 2])}).tolist() == [[1.0], [2.0]]


def test_bucketized_dense_and_ids():
    col = fc.bucketized_column(fc.numeric_column("x"), [0.0, 10.0])
    feats = {"x": torch.tensor([-1.0, 0.0, 5.0, 10.0])}
    assert col.ids(feats).reshape(-1).tolist() == [0, 1, 1, 2]
    assert col.dense(feats, None, torch.device("cpu")).tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]]
    two = fc.bucketized_column(fc.numeric_column("y", shape=2), [1.0])
    assert two.num_buckets == 4 and two.ids({"y": torch.tensor([[0.0, 2.0]])}).tolist() == [[0, 3]]


def test_vocabulary_list_oov_default_and_errors():
    col = fc.categorical_column_with_vocabulary_list("color", ["red", "green"])
    assert col.ids({"color": np.array(["green", "red"])}).tolist() == [[1], [0]]
    with pytest.raises(ValueError, match="categorical column 'color': value 'purple' is not in vocabulary_list"):
        col.ids({"color": ["red", "purple"]})
    with pytest.raises(ValueError, match="'color' expects string values but got dtype float"):
        col.ids({"color": torch.tensor([1.0])})
    oov = fc.categorical_column_with_vocabulary_list("color", ["red", "green"], num_oov_buckets=3)
    ids = oov.ids({"color": np.array(["purple", "purple", "red"], dtype=object)})
    assert ids[0, 0] == ids[1, 0] and 2 <= ids[0, 0] < 5 and ids[2, 0] == 0
    dflt = fc.categorical_column_with_vocabulary_list("n", [10, 20], default_value=1)
    assert dflt.ids({"n": torch.tensor([20, 99])}).reshape(-1).tolist() == [1, 1]


def test_identity_and_hash_bucket():
    col = fc.categorical_column_with_identity("i", 4)
    assert col.ids({"i": torch.tensor([3, 0])}).reshape(-1).tolist() == [3, 0]
    with pytest.raises(ValueError, match=r"'i': value 7 is outside \[0, 4\)"):
        col.ids({"i": torch.tensor([7])})
    with pytest.raises(ValueError, match="'i' expects int values but got dtype <U1"):
        col.ids({"i": np.array(["a"])})
    assert fc.categorical_column_with_identity("i", 4, default_value=2).ids({"i": [9]}).tolist() == [[2]]
    h = fc.categorical_column_with_hash_bucket("h", 1000)
    a = h.ids({"h": np.array(["apple", "pear", "apple"])}).reshape(-1)
    assert a[0] == a[2] and a.min() >= 0 and a.max() < 1000
    hi = fc.categorical_column_with_hash_bucket("h", 1000, dtype=int)
    assert hi.ids({"h": torch.tensor([5, 5])}).reshape(-1).tolist()[0] == hi.ids({"h": [5]})[0, 0]


def test_hash_is_stable_across_processes():
    code = "from learnrun.feature_column import stable_hash; print(stable_hash('apple', 1000003))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert outs == {f"{fc.stable_hash('apple', 1000003)}\n"}


def test_crossed_column():
    col = fc.crossed_column(["a", fc.bucketized_column(fc.numeric_column("x"), [0.0])], 50)
    assert col.name == "a_X_x_bucketized"
    feats = {"a": np.array(["u", "u", "v"]), "x": torch.tensor([1.0, 2.0, 1.0])}
    ids = col.ids(feats).reshape(-1)
    assert ids[0] == ids[1] and ids.max() < 50 and ids.shape == (3,)
    with pytest.raises(ValueError, match="feature 'x' has float values"):
        fc.crossed_column(["a", "x"], 10).ids(feats)


def test_crossed_column_ids_order_rows_and_empty_batch():
    col = fc.crossed_column(["a", fc.categorical_column_with_identity("b", 5)], 97)
    ids = col.ids({"a": np.array([["u", "v"], ["w", "w"]]), "b": np.array([[1, 2], [3, 4]])})
    # per row: every token of the first key crossed with every token of the next, in order
    expected = [[f"a={a}_X_b#{b}" for a in row_a for b in row_b]
                for row_a, row_b in ((("u", "v"), (1, 2)), (("w", "w"), (3, 4)))]
    assert ids.tolist() == [[fc.stable_hash(c, 97) for c in row] for row in expected]
    empty = col.ids({"a": np.array([], dtype=str), "b": np.array([], dtype=np.int64)})
    assert empty.shape == (0, 1) and empty.dtype == np.int64
    with pytest.raises(ValueError, match="'b' has 1 examples but 'a' has 2; give every crossed"):
        col.ids({"a": np.array(["u", "v"]), "b": np.array([1])})
