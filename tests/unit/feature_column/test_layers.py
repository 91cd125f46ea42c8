"""Tests for learnrun.feature_column.layers: DenseFeatures and LinearModel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learnrun import feature_column as fc


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


def test_dense_features_pass_a_ready_numeric_column_through_and_convert_anything_else():
    layer = fc.DenseFeatures([fc.numeric_column("x", shape=3)])
    ready = torch.randn(4, 3)
    assert layer({"x": ready}) is ready  # float32 (batch, width) on the device: no op
    doubles = layer({"x": ready.double()})
    assert doubles.dtype == torch.float32 and torch.allclose(doubles, ready)
    assert layer({"x": ready.numpy()}).shape == (4, 3)
    with pytest.raises(ValueError, match="has shape"):
        layer({"x": torch.randn(4, 2)})
    scaled = fc.DenseFeatures([fc.numeric_column("x", shape=3, normalizer_fn=lambda v: v * 2)])
    assert torch.equal(scaled({"x": ready}), ready * 2)  # a normalizer always runs
