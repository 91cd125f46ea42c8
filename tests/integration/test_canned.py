"""Canned estimators end to end through learnrun.Estimator: train, evaluate, predict, resume."""

from __future__ import annotations

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
from learnrun.config.run_config import RunConfig
from learnrun.inputs import numpy_input_fn, pandas_input_fn
from tests.helpers.data import colored_points

X_COL = fc.numeric_column("x", shape=2)
COLOR = fc.categorical_column_with_vocabulary_list("color", ["red", "blue"])


def test_dnn_classifier_train_evaluate_predict(tmp_path):
    x, y = colored_points()
    labels = np.where(y == 1, "yes", "no")
    est = DNNClassifier([16], [X_COL, fc.embedding_column(COLOR, 2)], model_dir=str(tmp_path),
                        label_vocabulary=["no", "yes"], optimizer="Adam", learning_rate=0.02,
                        config=RunConfig(tf_random_seed=1))
    train_fn = numpy_input_fn(x, labels, batch_size=32, num_epochs=None, shuffle=True)
    eval_fn = numpy_input_fn(x, labels, batch_size=100, shuffle=False)
    est.train(train_fn, steps=10)
    before = est.evaluate(eval_fn)
    est.train(train_fn, steps=190)
    after = est.evaluate(eval_fn)
    assert after["global_step"] == 200
    assert after["loss"] < before["loss"] * 0.8
    assert after["accuracy"] > 0.85 and after["auc"] > 0.9  # chance ~0.5
    for key in ("precision", "recall", "average_loss", "label/mean", "prediction/mean"):
        assert key in after
    preds = list(est.predict(numpy_input_fn({k: v[:5] for k, v in x.items()}, shuffle=False)))
    assert len(preds) == 5 and preds[0]["classes"] in ("no", "yes")
    assert preds[0]["probabilities"].shape == (2,)


def test_linear_classifier_with_pandas(tmp_path):
    pd = pytest.importorskip("pandas")
    x, y = colored_points(seed=1)
    df = pd.DataFrame({"x1": x["x"][:, 0], "x2": x["x"][:, 1], "color": x["color"]})
    cols = [fc.numeric_column("x1"), fc.numeric_column("x2"), COLOR]
    est = LinearClassifier(cols, model_dir=str(tmp_path), learning_rate=0.3)
    est.train(pandas_input_fn(df, pd.Series(y), batch_size=32, num_epochs=20, shuffle=True), max_steps=150)
    result = est.evaluate(pandas_input_fn(df, pd.Series(y), shuffle=False))
    assert result["accuracy"] > 0.85


def test_combined_regressor_learns_and_resumes(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 2)).astype(np.float32)
    y = (2 * x[:, 0] - x[:, 1] + 0.5).astype(np.float32)
    est = DNNLinearCombinedRegressor(str(tmp_path), linear_feature_columns=[X_COL],
                                     dnn_feature_columns=[X_COL], dnn_hidden_units=[8],
                                     linear_optimizer="SGD", linear_learning_rate=0.05,
                                     dnn_optimizer="Adam", dnn_learning_rate=0.01)
    train_fn = numpy_input_fn({"x": x}, y, batch_size=20, num_epochs=None, shuffle=True, seed=4)
    eval_fn = numpy_input_fn({"x": x}, y, batch_size=200, shuffle=False)
    est.train(train_fn, steps=5)
    first = est.evaluate(eval_fn)
    est.train(train_fn, steps=295)  # resumes weights, both optimizers and the input position
    last = est.evaluate(eval_fn)
    assert last["global_step"] == 300
    assert last["rmse"] < 0.3 < first["rmse"]
    assert {"mse", "mae", "label/mean", "prediction/mean", "average_loss"} <= set(last)
    pred = next(iter(est.predict(numpy_input_fn({"x": x[:1]}, shuffle=False))))
    assert pred["predictions"].shape == (1,)
    assert torch.is_tensor(torch.as_tensor(pred["predictions"]))


def test_input_position_resumes_across_train_calls(tmp_path):
    from learnrun.hooks import SessionRunHook

    class Record(SessionRunHook):
        def __init__(self):
            self.seen = []

        def after_run(self, run_context, run_values):
            self.seen.append(run_values.results["features"]["x"][:, 0].tolist())

    x = {"x": np.arange(40, dtype=np.float32)[:, None].repeat(2, axis=1)}
    y = np.arange(40) % 2
    train_fn = numpy_input_fn(x, y, batch_size=6, num_epochs=None, shuffle=True, seed=9)

    def run(model_dir, splits):
        est = LinearClassifier([X_COL], model_dir=str(model_dir), learning_rate=0.1)
        hook = Record()
        for steps in splits:
            est.train(train_fn, steps=steps, hooks=[hook])
        return hook.seen

    assert run(tmp_path / "split", [4, 5]) == run(tmp_path / "whole", [9])


def test_export_of_numeric_dnn_classifier(tmp_path):
    from learnrun.export import load_export

    x, y = colored_points(n=60)
    est = DNNClassifier([4], [X_COL], model_dir=str(tmp_path / "model"))
    est.train(numpy_input_fn({"x": x["x"]}, y, batch_size=20, shuffle=True), steps=3)
    path = est.export_savedmodel(str(tmp_path / "export"), lambda: {"x": torch.zeros(2, 2)})
    out = load_export(path)({"x": torch.from_numpy(x["x"][:3])})
    assert {"logits", "probabilities", "class_ids", "classes"} <= set(out)
    assert out["probabilities"].shape == (3, 2)


# ------------------------------------------------- metrics and predictions against a hand computation

HX = (np.arange(16, dtype=np.float32).reshape(8, 2) - 7.5) / 4  # tiny fixed batch
HW = np.array([1, 2, 1, 0.5, 1, 3, 1, 2], dtype=np.float32)  # example weights
W_COL = "w"


def _hand_logits(est, x):
    """Logits from the estimator's variables: linear part x @ W + b plus relu DNN part."""
    names = est.get_variable_names()
    value = est.get_variable_value
    logits = 0.0
    if "parts.linear.bias" in names:
        logits = logits + x @ value("parts.linear.weights.x") + value("parts.linear.bias")
    if "parts.dnn.logits.bias" in names:
        h = x
        layers = sorted({int(n.split(".")[3]) for n in names if n.startswith("parts.dnn.hidden.")})
        for i in layers:
            h = np.maximum(h @ value(f"parts.dnn.hidden.{i}.weight").T + value(f"parts.dnn.hidden.{i}.bias"), 0)
        logits = logits + h @ value("parts.dnn.logits.weight").T + value("parts.dnn.logits.bias")
    return np.asarray(logits, dtype=np.float64)


def _wmean(v, w):
    return float(np.sum(v * w) / np.sum(w))


def _hand_auc(scores, labels, weights):
    pos = [(s, w) for s, y, w in zip(scores, labels, weights, strict=True) if y == 1]
    neg = [(s, w) for s, y, w in zip(scores, labels, weights, strict=True) if y == 0]
    num = sum(wp * wn * ((sp > sn) + 0.5 * (sp == sn)) for sp, wp in pos for sn, wn in neg)
    return float(num / (sum(w for _, w in pos) * sum(w for _, w in neg)))


def _train_one_step(est, y):
    # One plain SGD step from TF's initial weights (zeros for linear parts), so logits are not 0.
    est.train(numpy_input_fn({"x": HX, W_COL: HW}, y, batch_size=8, shuffle=False), steps=1)
    eval_fn = numpy_input_fn({"x": HX, W_COL: HW}, y, batch_size=8, shuffle=False)
    return est.evaluate(eval_fn), list(est.predict(numpy_input_fn({"x": HX}, shuffle=False)))


def _sgd(lr):
    return lambda params: torch.optim.SGD(params, lr=lr)


@pytest.mark.parametrize("kind", ["linear", "dnn", "combined"])
def test_binary_metrics_and_predictions_by_hand(kind, tmp_path):
    y = np.array([0, 1, 0, 1, 1, 1, 0, 0])
    common = dict(model_dir=str(tmp_path), weight_column=W_COL, config=RunConfig(tf_random_seed=3))
    est = {
        "linear": lambda: LinearClassifier([X_COL], optimizer=_sgd(0.5), **common),
        "dnn": lambda: DNNClassifier([3], [X_COL], optimizer=_sgd(0.5), **common),
        "combined": lambda: DNNLinearCombinedClassifier(
            linear_feature_columns=[X_COL], linear_optimizer=_sgd(0.5), dnn_feature_columns=[X_COL],
            dnn_hidden_units=[3], dnn_optimizer=_sgd(0.5), **common),
    }[kind]()
    metrics, preds = _train_one_step(est, y)
    logits = _hand_logits(est, HX).reshape(-1)
    p = 1 / (1 + np.exp(-logits))
    pred = (logits > 0).astype(np.float64)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert 0 < pred.sum() < 8, "degenerate batch: choose other data"
    expected = {
        "accuracy": _wmean(pred == y, HW),
        "precision": float(np.sum(HW * pred * y) / np.sum(HW * pred)),
        "recall": float(np.sum(HW * pred * y) / np.sum(HW * y)),
        "label/mean": _wmean(y, HW),
        "prediction/mean": _wmean(p, HW),
        "average_loss": _wmean(bce, HW),
        "loss": float(np.sum(HW * bce) / 8),  # sum_over_batch_size
        "auc": _hand_auc(p, y, HW),  # weighted, exact
    }
    for key, want in expected.items():
        assert metrics[key] == pytest.approx(want, rel=1e-4, abs=1e-6), key
    assert metrics["global_step"] == 1
    assert [set(q) for q in preds] == [{"logits", "logistic", "probabilities", "class_ids", "classes"}] * 8
    np.testing.assert_allclose([q["logits"][0] for q in preds], logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([q["probabilities"] for q in preds], np.stack([1 - p, p], 1), rtol=1e-5, atol=1e-6)
    assert [int(q["class_ids"][0]) for q in preds] == pred.astype(int).tolist()


def test_multiclass_metrics_predictions_and_sum_reduction_by_hand(tmp_path):
    y = np.array([0, 2, 1, 2, 0, 1, 2, 2])
    est = DNNClassifier([4], [X_COL], model_dir=str(tmp_path), n_classes=3, weight_column=W_COL,
                        optimizer=_sgd(0.5), loss_reduction="sum", config=RunConfig(tf_random_seed=5))
    metrics, preds = _train_one_step(est, y)
    logits = _hand_logits(est, HX)
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    ce = -np.log(prob[np.arange(8), y])
    assert metrics["accuracy"] == pytest.approx(_wmean(prob.argmax(1) == y, HW), rel=1e-5)
    assert metrics["average_loss"] == pytest.approx(_wmean(ce, HW), rel=1e-4)
    assert metrics["loss"] == pytest.approx(float(np.sum(HW * ce)), rel=1e-4)  # loss_reduction="sum"
    np.testing.assert_allclose(np.stack([q["probabilities"] for q in preds]), prob, rtol=1e-4, atol=1e-6)
    assert [int(q["class_ids"][0]) for q in preds] == prob.argmax(1).tolist()
    assert [int(q["classes"][0]) for q in preds] == prob.argmax(1).tolist()


@pytest.mark.parametrize("kind", ["linear", "dnn", "combined"])
def test_regression_metrics_and_predictions_by_hand(kind, tmp_path):
    y = np.stack([HX[:, 0] * 2 + 1, -HX[:, 1]], 1).astype(np.float32)  # label_dimension=2
    common = dict(model_dir=str(tmp_path), weight_column=W_COL, label_dimension=2,
                  config=RunConfig(tf_random_seed=4))
    est = {
        "linear": lambda: LinearRegressor([X_COL], optimizer=_sgd(0.1), **common),
        "dnn": lambda: DNNRegressor([3], [X_COL], optimizer=_sgd(0.1), **common),
        "combined": lambda: DNNLinearCombinedRegressor(
            linear_feature_columns=[X_COL], linear_optimizer=_sgd(0.1), dnn_feature_columns=[X_COL],
            dnn_hidden_units=[3], dnn_optimizer=_sgd(0.1), **common),
    }[kind]()
    metrics, preds = _train_one_step(est, y)
    out = _hand_logits(est, HX)
    w2 = np.repeat(HW[:, None], 2, 1)
    err = out - y
    expected = {
        "mse": _wmean(err**2, w2), "rmse": _wmean(err**2, w2) ** 0.5, "mae": _wmean(np.abs(err), w2),
        "average_loss": _wmean(err**2, w2), "label/mean": _wmean(y, w2),
        "prediction/mean": _wmean(out, w2), "loss": float(np.sum(w2 * err**2) / 16),
    }
    for key, want in expected.items():
        assert metrics[key] == pytest.approx(want, rel=1e-4, abs=1e-6), key
    assert [set(q) for q in preds] == [{"predictions"}] * 8
    np.testing.assert_allclose(np.stack([q["predictions"] for q in preds]), out, rtol=1e-5, atol=1e-5)


def test_unknown_label_at_train_time_names_it(tmp_path):
    x = HX
    labels = np.array(["a", "b", "a", "b", "a", "c", "a", "b"])
    est = DNNClassifier([3], [X_COL], model_dir=str(tmp_path), label_vocabulary=["a", "b"])
    with pytest.raises(ValueError, match=r"Labels must be in label_vocabulary \['a', 'b'\]; got 'c'"):
        est.train(numpy_input_fn({"x": x}, labels, batch_size=8, shuffle=False), steps=1)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_vocabulary_classifier_exports_and_matches_predict(n_classes, tmp_path, caplog):
    from learnrun.export import load_export

    vocab = ["cat", "dog", "eel"][:n_classes]
    labels = np.resize(np.array(vocab), 8)
    est = LinearClassifier([X_COL], model_dir=str(tmp_path / "m"), n_classes=n_classes,
                           label_vocabulary=vocab, optimizer=_sgd(0.5))
    est.train(numpy_input_fn({"x": HX}, labels, batch_size=8, shuffle=False), steps=1)
    with caplog.at_level("WARNING", logger="learnrun.export"):
        path = est.export_savedmodel(str(tmp_path / "export"), lambda: {"x": torch.zeros(2, 2)})
    assert "leaves out predictions that are not tensors: classes" in caplog.text
    out = load_export(path)({"x": torch.from_numpy(HX)})
    preds = list(est.predict(numpy_input_fn({"x": HX}, shuffle=False)))
    assert "classes" not in out and {"logits", "probabilities", "class_ids"} <= set(out)
    np.testing.assert_array_equal(out["class_ids"].numpy().reshape(-1), [int(q["class_ids"][0]) for q in preds])
    np.testing.assert_allclose(out["probabilities"].numpy(), np.stack([q["probabilities"] for q in preds]),
                               rtol=1e-6, atol=1e-7)
    assert [q["classes"][0] for q in preds] == [vocab[int(q["class_ids"][0])] for q in preds]
    assert len({q["classes"][0] for q in preds}) > 1  # not a degenerate model


def test_warm_start_from_another_model_dir(tmp_path):
    first = DNNClassifier([3], [X_COL], model_dir=str(tmp_path / "a"), optimizer=_sgd(0.5),
                          config=RunConfig(tf_random_seed=1))
    y = np.array([0, 1, 0, 1, 1, 1, 0, 0])
    first.train(numpy_input_fn({"x": HX}, y, batch_size=8, shuffle=False), steps=1)
    second = DNNClassifier([3], [X_COL], model_dir=str(tmp_path / "b"), optimizer=_sgd(1e-12),
                           config=RunConfig(tf_random_seed=2), warm_start_from=str(tmp_path / "a"))
    second.train(numpy_input_fn({"x": HX}, y, batch_size=8, shuffle=False), steps=1)
    for name in first.get_variable_names():
        np.testing.assert_allclose(second.get_variable_value(name), first.get_variable_value(name), atol=1e-6)


def test_input_position_resumes_across_a_restart(tmp_path):
    """A new Estimator on the same model_dir (a restarted process) reads the exact next batch."""
    from learnrun.hooks import SessionRunHook

    class Record(SessionRunHook):
        def __init__(self):
            self.seen = []

        def after_run(self, run_context, run_values):
            self.seen.append(run_values.results["features"]["x"][:, 0].tolist())

    x = {"x": np.arange(30, dtype=np.float32)[:, None].repeat(2, axis=1)}
    y = np.arange(30) % 2

    def train(model_dir, steps):
        est = LinearClassifier([X_COL], model_dir=str(model_dir), learning_rate=0.1,
                               config=RunConfig(save_checkpoints_steps=1000))
        hook = Record()
        fn = numpy_input_fn(x, y, batch_size=7, num_epochs=2, shuffle=True, seed=9)  # new input_fn too
        est.train(fn, steps=steps, hooks=[hook])
        return hook.seen

    whole = train(tmp_path / "whole", 9)  # 60 examples in batches of 7: 8 full + 1 of 4
    split = train(tmp_path / "split", 3) + train(tmp_path / "split", 6)
    assert split == whole
    assert sorted(v for b in whole for v in b) == sorted(list(range(30)) * 2)  # 2 epochs, nothing lost
