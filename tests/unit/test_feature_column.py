"""Tests for learnrun.feature_column: each column, the layers, and the error texts."""

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


def test_dense_features_embedding_indicator_and_grad():
    cat = fc.categorical_column_with_vocabulary_list("c", ["a", "b", "c"])
    layer = fc.DenseFeatures([fc.numeric_column("n"), fc.embedding_column(cat, 4), fc.indicator_column(cat)])
    assert layer.output_dim == 1 + 4 + 3
    out = layer({"n": torch.tensor([1.0, 2.0]), "c": [["a", "a"], ["b", "c"]]})
    assert out.shape == (2, 8)
    # column-name order: c_embedding, c_indicator, n
    assert out[:, 4:7].tolist() == [[2, 0, 0], [0, 1, 1]]
    assert out[:, 7].tolist() == [1.0, 2.0]
    table = layer.tables["c_embedding"].weight
    assert torch.allclose(out[0, :4], table[0]) and torch.allclose(out[1, :4], (table[1] + table[2]) / 2)
    out.sum().backward()
    assert table.grad is not None and table.grad.abs().sum() > 0


def test_dense_features_errors_and_plain_tensor():
    layer = fc.DenseFeatures([fc.numeric_column("n")])
    with pytest.raises(ValueError, match="feature column 'n' reads feature 'n', which is not among the features \\['m'\\]"):
        layer({"m": torch.zeros(2)})
    with pytest.raises(ValueError, match="numeric_column 'n' expects numbers but got dtype <U"):
        layer({"n": np.array(["x"])})
    assert layer(torch.tensor([3.0])).tolist() == [[3.0]]  # a single-key layer takes a tensor
    assert fc.DenseFeatures()(torch.ones(2, 3, 2)).shape == (2, 6)
    with pytest.raises(ValueError, match="DenseFeatures without feature_columns needs a tensor"):
        fc.DenseFeatures()({"a": torch.ones(1)})
    with pytest.raises(ValueError, match="Wrap categorical columns in embedding_column"):
        fc.DenseFeatures([fc.categorical_column_with_identity("i", 3)])
    with pytest.raises(ValueError, match="Duplicate feature column name"):
        fc.DenseFeatures([fc.numeric_column("n"), fc.numeric_column("n", shape=2)])
    two = fc.DenseFeatures([fc.numeric_column("a"), fc.numeric_column("b")])
    with pytest.raises(ValueError, match="read the keys \\['a', 'b'\\]"):
        two(torch.ones(2))


def test_linear_model_sums_weights():
    cat = fc.categorical_column_with_identity("i", 3)
    model = fc.LinearModel([fc.numeric_column("n"), cat], units=2)
    with torch.no_grad():
        model.weights["i"].copy_(torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 1.0]]))
        model.weights["n"].fill_(10.0)
        model.bias.fill_(0.5)
    out = model({"n": torch.tensor([1.0, 0.0]), "i": torch.tensor([[2], [0]])})
    assert out.tolist() == [[13.5, 11.5], [1.5, 0.5]]
    mean = fc.LinearModel([cat], sparse_combiner="mean")
    with torch.no_grad():
        mean.weights["i"].copy_(torch.tensor([[1.0], [3.0], [0.0]]))
    assert mean({"i": torch.tensor([[0, 1]])}).tolist() == [[2.0]]


def test_package_reexports_every_public_name():
    from learnrun.feature_column import columns, constructors, layers

    for module in (columns, constructors, layers):
        public = set(getattr(module, "__all__", ())) or {
            n for n, v in vars(module).items() if not n.startswith("_")
            and getattr(v, "__module__", None) == module.__name__}
        assert public <= set(fc.__all__), (module.__name__, public - set(fc.__all__))
    for name in fc.__all__:
        assert getattr(fc, name) is not None
    assert fc.NumericColumn is columns.NumericColumn and fc.LinearModel is layers.LinearModel
