"""Canned estimators' model_fn, driven by hand: spec contents, learning, argument errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from learnrun import feature_column as fc
from learnrun.canned import (
    DNNClassifier,
    DNNLinearCombinedClassifier,
    DNNLinearCombinedRegressor,
    DNNRegressor,
    LinearClassifier,
    LinearRegressor,
)
from learnrun.canned.optimizers import MultiOptimizer
from learnrun.estimator.spec import EstimatorSpec
from tests.helpers.data import colored_points


def _binary_data(n=256, seed=0):
    features, y = colored_points(n, seed)
    return {"x": torch.from_numpy(features["x"]), "color": features["color"]}, torch.from_numpy(y)


def _manual_training(est, features, labels, steps=150):
    """Call model_fn, run optimizer steps by hand, return (spec, first loss, last loss)."""
    spec = est.model_fn(config=None)
    assert isinstance(spec, EstimatorSpec)
    torch.manual_seed(0)
    spec.module.train()
    losses = []
    for _ in range(steps):
        spec.optimizer.zero_grad()
        loss = spec.loss_fn(spec.module(features), labels)
        loss.backward()
        spec.optimizer.step()
        losses.append(float(loss.detach()))
    spec.module.eval()
    return spec, losses[0], losses[-1]


def _eval(spec, features, labels):
    metrics = {k: copy.deepcopy(m) for k, m in spec.eval_metric_ops.items()}
    with torch.no_grad():
        outputs = spec.module(features)
    for m in metrics.values():
        m.update(outputs, labels)
    return {k: float(m.compute()) for k, m in metrics.items()}, spec.predictions(outputs)


X_COL = fc.numeric_column("x", shape=2)
COLOR = fc.categorical_column_with_vocabulary_list("color", ["red", "blue"])


@pytest.mark.parametrize(
    "make",
    [
        lambda d: LinearClassifier([X_COL, COLOR], model_dir=d, optimizer="Adagrad", learning_rate=0.3),
        lambda d: DNNClassifier([16], [X_COL, fc.indicator_column(COLOR)], model_dir=d, learning_rate=0.1),
        lambda d: DNNClassifier([16, 8], [X_COL, fc.embedding_column(COLOR, 2)], model_dir=d,
                                optimizer="Adam", learning_rate=0.02, batch_norm=True, dropout=0.1),
        lambda d: DNNLinearCombinedClassifier(d, linear_feature_columns=[COLOR, X_COL],
                                              dnn_feature_columns=[X_COL], dnn_hidden_units=[8],
                                              linear_learning_rate=0.3, dnn_learning_rate=0.1),
    ],
)
def test_classifiers_learn(make, tmp_path):
    features, labels = _binary_data()
    spec, first, last = _manual_training(make(str(tmp_path)), features, labels)
    assert last < first * 0.7
    metrics, preds = _eval(spec, features, labels)
    assert metrics["accuracy"] > 0.85  # chance is ~0.5
    assert metrics["auc"] > 0.9
    assert preds["probabilities"].shape == (256, 2) and preds["classes"].shape == (256, 1)


def test_multiclass_with_label_vocabulary_learns(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 2)).astype(np.float32)
    names = np.array(["low", "mid", "high"])
    y = names[np.digitize(x[:, 0] + 0.5 * x[:, 1], [-0.5, 0.5])]
    est = DNNClassifier([16], [X_COL], model_dir=str(tmp_path), n_classes=3,
                        label_vocabulary=["low", "mid", "high"], optimizer="Adam", learning_rate=0.05)
    spec, first, last = _manual_training(est, {"x": torch.from_numpy(x)}, y, steps=200)
    metrics, preds = _eval(spec, {"x": torch.from_numpy(x)}, y)
    assert last < first * 0.5 and metrics["accuracy"] > 0.8  # chance ~0.33
    assert set(preds["classes"].reshape(-1)) <= {"low", "mid", "high"}


@pytest.mark.parametrize(
    "make",
    [
        lambda d: LinearRegressor([X_COL], model_dir=d, optimizer="SGD", learning_rate=0.1),
        lambda d: DNNRegressor([16], [X_COL], model_dir=d, optimizer="Adam", learning_rate=0.02),
        lambda d: DNNLinearCombinedRegressor(d, linear_feature_columns=[X_COL], dnn_feature_columns=[X_COL],
                                             dnn_hidden_units=[8], linear_optimizer="SGD",
                                             linear_learning_rate=0.1, dnn_optimizer="Adam",
                                             dnn_learning_rate=0.02),
    ],
)
def test_regressors_learn(make, tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 2)).astype(np.float32)
    y = torch.from_numpy(2 * x[:, 0] - x[:, 1] + 0.5)
    spec, first, last = _manual_training(make(str(tmp_path)), {"x": torch.from_numpy(x)}, y, steps=200)
    metrics, preds = _eval(spec, {"x": torch.from_numpy(x)}, y)
    assert last < first * 0.1
    assert metrics["rmse"] < 0.5 and preds["predictions"].shape == (200, 1)  # label std ~2.2


def test_weight_column_excludes_zero_weight_examples(tmp_path):
    features, labels = _binary_data()
    flipped = 1 - labels
    features = dict(features, w=torch.cat([torch.ones(128), torch.zeros(128)]))
    mixed = torch.cat([labels[:128], flipped[128:]])  # second half noise, weight 0
    est = LinearClassifier([X_COL, COLOR], model_dir=str(tmp_path), weight_column="w", learning_rate=0.3)
    spec, _, _ = _manual_training(est, features, mixed)
    metrics, _ = _eval(spec, features, mixed)
    assert metrics["accuracy"] > 0.85
    preds = spec.predictions(spec.module({"x": features["x"], "color": features["color"]}))
    assert "class_ids" in preds  # prediction needs no weight


def test_combined_parts_share_one_optimizer_when_they_name_the_same_class(tmp_path):
    # TF's defaults, Ftrl (run as Adagrad) and Adagrad: one Adagrad, a group per part
    est = DNNLinearCombinedClassifier(str(tmp_path), linear_feature_columns=[COLOR],
                                      dnn_feature_columns=[X_COL], dnn_hidden_units=[4])
    spec = est.model_fn(config=None)
    assert type(spec.optimizer) is torch.optim.Adagrad
    assert [g["lr"] for g in spec.optimizer.param_groups] == [0.001, 0.005]
    module = spec.module
    assert [set(map(id, g["params"])) for g in spec.optimizer.param_groups] == [
        set(map(id, module.parts["dnn"].parameters())), set(map(id, module.parts["linear"].parameters()))]
    # different classes: one optimizer per part
    est = DNNLinearCombinedClassifier(str(tmp_path), linear_feature_columns=[COLOR],
                                      dnn_feature_columns=[X_COL], dnn_hidden_units=[4],
                                      dnn_optimizer="Adam")
    spec = est.model_fn(config=None)
    assert isinstance(spec.optimizer, MultiOptimizer)
    assert [type(o) for o in spec.optimizer.optimizers] == [torch.optim.Adam, torch.optim.Adagrad]
    assert [o.param_groups[0]["lr"] for o in spec.optimizer.optimizers] == [0.001, 0.005]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: DNNClassifier([8], [X_COL], n_classes=1), "n_classes must be > 2: 1."),
        (lambda: DNNClassifier([], [X_COL]), "hidden_units must be a non-empty list"),
        (lambda: DNNClassifier([8], [COLOR]), "Wrap categorical columns in embedding_column"),
        (lambda: DNNClassifier([8], [X_COL], dropout=1.5), "dropout must be a probability"),
        (lambda: DNNClassifier([8], None), "feature_columns must be a non-empty list"),
        (lambda: LinearClassifier([X_COL], optimizer="Nope"), "Unsupported optimizer name: Nope"),
        (lambda: LinearRegressor([X_COL], weight_column=3), "Weight column must be either a string"),
        (lambda: LinearClassifier([X_COL], loss_reduction="none"), "Invalid loss_reduction: none"),
        (lambda: DNNLinearCombinedClassifier(), "Either linear_feature_columns or dnn_feature_columns"),
        (lambda: DNNLinearCombinedRegressor(dnn_feature_columns=[X_COL]), "dnn_hidden_units must be defined"),
        (lambda: DNNClassifier([8], [X_COL], n_classes=0), r"n_classes must be > 2: 0\. \(n_classes=2"),
        (lambda: LinearClassifier([X_COL], n_classes="3"), "n_classes must be an integer .* got '3'"),
        (lambda: DNNRegressor([8, 0], [X_COL]), r"positive integers, got \[8, 0\]"),
        (lambda: DNNClassifier([8], [X_COL], optimizer="Nope"), "Unsupported optimizer name: Nope"),
        (lambda: DNNRegressor([8], [X_COL], optimizer=torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1)),
         "not an optimizer instance"),
        (lambda: DNNLinearCombinedClassifier(linear_feature_columns=[X_COL], linear_optimizer="Fancy"),
         "Unsupported optimizer name: Fancy.*for linear_optimizer"),
        (lambda: DNNLinearCombinedRegressor(dnn_feature_columns=[X_COL], dnn_hidden_units=[2], dnn_optimizer=3),
         "dnn_optimizer must be a name, a torch.optim.Optimizer class or a factory, got int"),
        (lambda: DNNClassifier([8], [X_COL], learning_rate=0), "learning_rate must be > 0, got 0"),
        (lambda: DNNClassifier([8], [X_COL], activation_fn="swishy"), "Unknown activation_fn 'swishy'"),
        (lambda: DNNClassifier([8], [X_COL], activation_fn=3), "activation_fn must be callable"),
        (lambda: DNNClassifier([8], [X_COL], batch_norm="no"), "batch_norm must be True or False, got 'no'"),
        (lambda: DNNClassifier([8], [X_COL], label_vocabulary=[0, 1]), "label_vocabulary must hold strings"),
        (lambda: LinearClassifier([X_COL], n_classes=3, label_vocabulary=["a", "b"]),
         "label_vocabulary has 2 entries"),
        (lambda: DNNRegressor([8], [X_COL], loss_reduction="mean"), "Invalid loss_reduction: mean"),
        (lambda: DNNRegressor([8], [X_COL], label_dimension=0), "Invalid label_dimension 0"),
        (lambda: LinearRegressor([X_COL], warm_start_from=3), "warm_start_from must be a path"),
        (lambda: LinearRegressor([X_COL], config="x"), "config must be an instance of `RunConfig`"),
    ],
)
def test_constructor_errors(make, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises((ValueError, TypeError), match=match):
        make()  # every bad argument is reported by the constructor, before any training
