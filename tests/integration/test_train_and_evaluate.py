"""``learnrun.train_and_evaluate`` on the real Estimator (spec 8.7 #11 and #13).

Local (no cluster) runs: a saving listener evaluates every new checkpoint and runs the
exporters; Latest/Best/Final exporters write ``model_dir/export/<name>/<10 digits>/``.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch

import learnrun
import learnrun.export
from learnrun.estimator.estimator import Estimator
from learnrun.estimator.spec import EstimatorSpec
from learnrun.model_dir.checkpoints import list_checkpoints
from learnrun.model_dir.eval_results import read_eval_results
from learnrun.training import (
    BestExporter,
    EvalSpec,
    FinalExporter,
    LatestExporter,
    TrainSpec,
    _ContinuousEvalListener,
    _TrainingExecutor,
)
from tests.helpers.data import separable_tensors

pytestmark = pytest.mark.timeout(60)

X, Y = separable_tensors(64)
EXPORT_DIR_RE = re.compile(r"^\d{10}$")


def model_fn(mode):
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    return EstimatorSpec(
        module=module,
        loss_fn=torch.nn.functional.cross_entropy,
        optimizer=torch.optim.SGD(module.parameters(), lr=0.1),
        predictions_fn=lambda out: {"classes": out.argmax(-1), "probabilities": out.softmax(-1)},
    )


def train_input_fn():
    while True:
        for i in range(0, len(X), 8):
            yield X[i : i + 8], Y[i : i + 8]


def eval_input_fn():
    return [(X[:32], Y[:32])]


def serving_input_fn():
    return X[:2]


def estimator(tmp_path, **config_kwargs):
    config_kwargs.setdefault("save_checkpoints_steps", 10)
    config_kwargs.setdefault("tf_random_seed", 1)
    config = learnrun.RunConfig(model_dir=str(tmp_path / "model"), environ={}, **config_kwargs)
    return Estimator(model_fn, config=config)


def exports(model_dir, name) -> list[str]:
    base = os.path.join(model_dir, "export", name)
    if not os.path.isdir(base):
        return []
    return sorted(os.path.join(base, n) for n in os.listdir(base) if EXPORT_DIR_RE.match(n))


def export_step(path) -> int:
    with open(os.path.join(path, "signature.json"), encoding="utf-8") as f:
        return json.load(f)["global_step"]


def eval_steps(model_dir, name=None) -> list[int]:
    eval_dir = os.path.join(model_dir, "eval" if name is None else f"eval_{name}")
    return [r["global_step"] for r in read_eval_results(eval_dir)]


def exporters():
    return [
        LatestExporter("latest", serving_input_fn, exports_to_keep=None),
        BestExporter("best", serving_input_fn, exports_to_keep=None),
        FinalExporter("final", serving_input_fn),
    ]


def test_run_local_evaluates_every_new_checkpoint(tmp_path, clock):
    """8.7 #11: save every 10 steps, max_steps 22 -> 3 evaluations, 3 exports, 1 final (last)."""
    est = estimator(tmp_path)
    eval_spec = EvalSpec(eval_input_fn, steps=None, exporters=exporters(), throttle_secs=0)
    metrics, export_results = learnrun.train_and_evaluate(
        est, TrainSpec(train_input_fn, max_steps=22), eval_spec
    )
    model_dir = est.model_dir
    # Saves at 0 (the starting checkpoint, not evaluated), 10, 20 and the final 22.
    assert [c.step for c in list_checkpoints(model_dir)] == [0, 10, 20, 22]
    assert eval_steps(model_dir) == [10, 20, 22]
    assert metrics["global_step"] == 22
    assert [export_step(p) for p in exports(model_dir, "latest")] == [10, 20, 22]
    assert [export_step(p) for p in exports(model_dir, "final")] == [22]
    best = [export_step(p) for p in exports(model_dir, "best")]
    assert best[0] == 10 and best == sorted(best)
    latest_path, best_path, final_path = export_results
    assert final_path == exports(model_dir, "final")[-1]
    assert latest_path == exports(model_dir, "latest")[-1]
    # The final export predicts what the Estimator predicts.
    predictor = learnrun.export.load_export(final_path)
    expected = next(est.predict(lambda: [X[:5]], yield_single_examples=False))
    got = predictor(X[:5])
    np.testing.assert_allclose(got["probabilities"].numpy(), expected["probabilities"], rtol=1e-5)


def test_run_local_max_steps_12(tmp_path, clock):
    est = estimator(tmp_path)
    eval_spec = EvalSpec(eval_input_fn, steps=None, exporters=exporters(), throttle_secs=0)
    metrics, _ = learnrun.train_and_evaluate(
        est, TrainSpec(train_input_fn, max_steps=12), eval_spec
    )
    assert eval_steps(est.model_dir) == [10, 12]
    assert metrics["global_step"] == 12
    assert [export_step(p) for p in exports(est.model_dir, "final")] == [12]


def test_run_local_throttle_still_evaluates_the_final_checkpoint(tmp_path, clock):
    est = estimator(tmp_path)
    eval_spec = EvalSpec(eval_input_fn, steps=None, throttle_secs=600)
    executor = _TrainingExecutor(
        est, TrainSpec(train_input_fn, max_steps=22), eval_spec, clock=clock
    )
    metrics, _ = executor.run()
    # The FakeClock never advances during training: 20 is throttled, 22 is evaluated at `end`.
    assert eval_steps(est.model_dir) == [10, 22]
    assert metrics["global_step"] == 22


@pytest.mark.parametrize("stop_in", ["before_eval", "after_eval"])
def test_run_local_listener_stops_training(tmp_path, clock, stop_in):
    class Stop(_ContinuousEvalListener):
        def before_eval(self):
            return stop_in != "before_eval"

        def after_eval(self, eval_result):
            return stop_in != "after_eval"

    est = estimator(tmp_path)
    eval_spec = EvalSpec(eval_input_fn, steps=None, throttle_secs=0)
    executor = _TrainingExecutor(
        est, TrainSpec(train_input_fn, max_steps=22), eval_spec, continuous_eval_listener=Stop()
    )
    metrics, _ = executor.run()
    if stop_in == "before_eval":
        assert eval_steps(est.model_dir) == []
        assert metrics is None
    else:
        assert eval_steps(est.model_dir) == [10]
        assert metrics["global_step"] < 22
    assert [c.step for c in list_checkpoints(est.model_dir)][-1] < 22


def test_run_local_checkpoints_disabled_raises(tmp_path, clock):
    est = estimator(tmp_path, save_checkpoints_steps=None, save_checkpoints_secs=None)
    with pytest.raises(ValueError, match="There should be a CheckpointSaverHook"):
        learnrun.train_and_evaluate(
            est, TrainSpec(train_input_fn, max_steps=5), EvalSpec(eval_input_fn, throttle_secs=0)
        )


def test_dnn_classifier_integration(tmp_path, clock):
    """8.7 #13: DNNClassifier, max_steps 10, eval name 'foo', LatestExporter, throttle 0."""
    from learnrun import feature_column as fc
    from learnrun.canned import DNNClassifier
    from learnrun.inputs import numpy_input_fn

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype(np.float32)
    y = (x.sum(1) > 0).astype(np.int64)
    est = DNNClassifier(
        [8],
        [fc.numeric_column("x", shape=2)],
        n_classes=3,
        model_dir=str(tmp_path / "dnn"),
        config=learnrun.RunConfig(tf_random_seed=1, environ={}),
    )
    exporter = LatestExporter("saved_model_exporter", lambda: {"x": torch.as_tensor(x[:2])})
    metrics, _ = learnrun.train_and_evaluate(
        est,
        TrainSpec(
            numpy_input_fn({"x": x}, y, batch_size=16, num_epochs=None, shuffle=True), max_steps=10
        ),
        EvalSpec(
            numpy_input_fn({"x": x}, y, batch_size=32, shuffle=False),
            steps=None,
            name="foo",
            exporters=exporter,
            throttle_secs=0,
        ),
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_events = EventAccumulator(est.model_dir)
    train_events.Reload()
    assert "loss" in train_events.Tags()["scalars"]
    eval_events = EventAccumulator(os.path.join(est.model_dir, "eval_foo"))
    eval_events.Reload()
    assert [e.step for e in eval_events.Scalars("loss")][-1] == 10
    assert metrics["global_step"] == 10
    assert os.path.isdir(os.path.join(est.model_dir, "export", "saved_model_exporter"))
    preds = next(
        est.predict(numpy_input_fn({"x": x[:4]}, shuffle=False), yield_single_examples=False)
    )
    assert preds["probabilities"].shape == (4, 3)
