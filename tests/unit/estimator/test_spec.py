"""Validation of EstimatorSpec and ModeKeys."""

from __future__ import annotations

import pytest
import torch

from learnrun.estimator.spec import EstimatorSpec, ModeKeys


def module():
    return torch.nn.Linear(2, 1)


def test_mode_keys():
    assert (ModeKeys.TRAIN, ModeKeys.EVAL, ModeKeys.PREDICT) == ("train", "eval", "infer")


def test_minimal_spec_and_default_predictions():
    spec = EstimatorSpec(module=module())
    out = torch.ones(2)
    assert spec.predictions(out)["outputs"] is out
    assert spec.training_hooks == () and spec.evaluation_hooks == ()


@pytest.mark.parametrize("kwargs, error, text", [
    ({"module": "model"}, TypeError, "must be a torch.nn.Module, got str"),
    ({"loss_fn": 3}, TypeError, "loss_fn must be callable"),
    ({"optimizer": "adam"}, TypeError, "must be a torch.optim.Optimizer, got str"),
    ({"predictions_fn": 1}, TypeError, "predictions_fn must be callable"),
    ({"train_step_fn": 1}, TypeError, "train_step_fn must be callable"),
    ({"eval_metric_ops": [1]}, TypeError, "eval_metric_ops must be a dict"),
    ({"eval_metric_ops": {"loss": object()}}, ValueError, "must not define 'loss'"),
    ({"eval_metric_ops": {"global_step": object()}}, ValueError, "must not define 'global_step'"),
    ({"gradient_clip_norm": 0}, ValueError, "gradient_clip_norm must be > 0"),
])
def test_invalid_specs(kwargs, error, text):
    kwargs = {"module": module(), **kwargs}
    with pytest.raises(error, match=text):
        EstimatorSpec(**kwargs)


def test_predictions_fn_must_return_a_dict():
    spec = EstimatorSpec(module=module(), predictions_fn=lambda out: out)
    with pytest.raises(TypeError, match="predictions_fn must return a dict"):
        spec.predictions(torch.ones(1))
    spec = EstimatorSpec(module=module(), predictions_fn=lambda out: {"y": out * 2},
                         training_hooks=[1, 2])
    assert spec.predictions(torch.ones(1))["y"].item() == 2
    assert spec.training_hooks == (1, 2)
