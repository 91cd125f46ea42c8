"""Canned estimators end to end through learnrun.Estimator: train, evaluate, predict, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learnrun import feature_column as fc
from learnrun.canned import DNNClassifier, DNNLinearCombinedRegressor, LinearClassifier
from learnrun.inputs import numpy_input_fn, pandas_input_fn
from learnrun.run_config import RunConfig


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    color = rng.choice(["red", "blue"], size=n)
    y = ((x[:, 0] + x[:, 1] + (color == "red") * 1.5 - 0.75) > 0).astype(np.int64)
    return {"x": x, "color": color}, y


X_COL = fc.numeric_column("x", shape=2)
COLOR = fc.categorical_column_with_vocabulary_list("color", ["red", "blue"])


def test_dnn_classifier_train_evaluate_predict(tmp_path):
    x, y = _data()
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
    x, y = _data(seed=1)
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
    from learnrun.estimator.hooks import SessionRunHook

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

    x, y = _data(n=60)
    est = DNNClassifier([4], [X_COL], model_dir=str(tmp_path / "model"))
    est.train(numpy_input_fn({"x": x["x"]}, y, batch_size=20, shuffle=True), steps=3)
    path = est.export_savedmodel(str(tmp_path / "export"), lambda: {"x": torch.zeros(2, 2)})
    out = load_export(path)({"x": torch.from_numpy(x["x"][:3])})
    assert {"logits", "probabilities", "class_ids", "classes"} <= set(out)
    assert out["probabilities"].shape == (3, 2)
