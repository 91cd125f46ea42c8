"""The Estimator on a CUDA device: placement, mixed precision, checkpoints and export.

Skipped where torch sees no CUDA device (CI); run on a GPU machine with
``pytest tests/integration/test_cuda.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learnrun.config.run_config import RunConfig
from learnrun.estimator.estimator import Estimator
from learnrun.estimator.spec import EstimatorSpec
from learnrun.export import load_export
from learnrun.model_dir import checkpoints as ckpt

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

X = torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
Y = (X[:, :4].sum(1) > X[:, 4:].sum(1)).long()


def batches(epochs=50, batch_size=32):
    def input_fn():
        for _ in range(epochs):
            for i in range(0, len(X), batch_size):
                yield X[i:i + batch_size], Y[i:i + batch_size]
    return input_fn


def model_fn(params):
    module = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
    import torchmetrics

    acc = torchmetrics.classification.MulticlassAccuracy(num_classes=2, average="micro")
    return EstimatorSpec(
        module=module,
        loss_fn=torch.nn.functional.cross_entropy,
        optimizer=torch.optim.Adam(module.parameters(), lr=1e-2),
        eval_metric_ops={"accuracy": acc},
        predictions_fn=lambda out: {"classes": out.argmax(-1), "probabilities": out.softmax(-1)},
        gradient_clip_norm=params.get("clip"),
    )


@pytest.mark.parametrize("precision", [None, "bf16-mixed", "16-mixed"])
def test_trains_on_cuda_and_checkpoints_load_on_cpu(tmp_path, precision):
    config = RunConfig(model_dir=str(tmp_path / "m"), device="cuda", precision=precision,
                       save_checkpoints_steps=50, tf_random_seed=1)
    est = Estimator(model_fn, config=config, params={"clip": 1.0})
    est.train(batches(), max_steps=200)
    metrics = est.evaluate(batches(epochs=1))
    assert metrics["global_step"] == 200
    assert metrics["accuracy"] > 0.85, metrics
    assert np.isfinite(metrics["loss"])

    loaded = ckpt.load_checkpoint(est.latest_checkpoint(), map_location="cpu")
    assert all(t.device.type == "cpu" for t in loaded.weights.values())
    # the optimizer state of a CUDA run restores into a new CUDA run
    est.train(batches(), steps=10)
    assert ckpt.checkpoint_step(est.latest_checkpoint()) == 210


def test_export_of_a_cuda_model_matches_predict(tmp_path):
    config = RunConfig(model_dir=str(tmp_path / "m"), device="cuda", tf_random_seed=2)
    est = Estimator(model_fn, config=config, params={})
    est.train(batches(), max_steps=30)
    path = est.export_savedmodel(str(tmp_path / "export"), lambda: X[:4])
    predictor = load_export(path)
    exported = predictor(X[:32])
    predicted = list(est.predict(batches(epochs=1), yield_single_examples=False))[0]
    torch.testing.assert_close(exported["probabilities"].cpu(),
                               torch.as_tensor(predicted["probabilities"]).cpu(),
                               rtol=1e-4, atol=1e-5)


def test_canned_linear_classifier_with_eager_optimizer_state_on_cuda(tmp_path):
    # LinearClassifier's default optimizer ('Ftrl' -> Adagrad) creates its state in the
    # constructor, on the CPU where model_fn built the module; training moves it to CUDA.
    from learnrun import canned, feature_column, inputs

    x, y = X.numpy(), Y.numpy()
    est = canned.LinearClassifier(
        feature_columns=[feature_column.numeric_column("x", shape=(8,))],
        config=RunConfig(model_dir=str(tmp_path / "m"), device="cuda", tf_random_seed=3))
    est.train(inputs.numpy_input_fn({"x": x}, y, batch_size=32, num_epochs=None, shuffle=True),
              max_steps=100)
    metrics = est.evaluate(inputs.numpy_input_fn({"x": x}, y, batch_size=64, shuffle=False))
    assert metrics["global_step"] == 100 and metrics["accuracy"] > 0.85, metrics
