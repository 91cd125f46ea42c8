"""``EstimatorSpec`` and ``ModeKeys``: what a ``model_fn`` returns.

``model_fn(params, config[, mode]) -> EstimatorSpec`` is called once per ``train``,
``evaluate``, ``predict`` or export call (not per batch); any of its arguments may be left out
of its signature. The spec is plain data; mode-dependent behaviour
comes from ``module.train()`` / ``module.eval()``, which the Estimator sets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch


class ModeKeys:
    """Standard names for the three modes (TF's ``tf.estimator.ModeKeys``)."""

    TRAIN = "train"
    EVAL = "eval"
    PREDICT = "infer"


@dataclasses.dataclass
class EstimatorSpec:
    """Everything the Estimator needs to train, evaluate and predict with one model.

    Attributes:
      module: a ``torch.nn.Module``, called as ``module(features) -> outputs``.
      loss_fn: ``(outputs, labels) -> scalar tensor``.
      optimizer: a ``torch.optim.Optimizer`` over ``module``'s parameters (needed to train).
      scheduler: an LR scheduler, stepped after every optimizer step.
      predictions_fn: ``outputs -> dict[str, Tensor]``; default ``{"outputs": outputs}``.
      eval_metric_ops: ``dict[str, torchmetrics.Metric]`` updated as ``update(outputs, labels)``
        (or ``update(predictions[key], labels)`` when the metric sets ``learnrun_inputs = key``
        for a key of ``predictions_fn``'s dict; ``"predictions"`` passes the whole dict, or its
        only value); a fresh copy is used for every evaluation.
        ``loss`` and ``global_step`` are always added to the results.
      training_hooks, evaluation_hooks, prediction_hooks: hooks that run in that mode only.
      train_step_fn: optional custom step ``(module, features, labels, optimizer) -> loss``
        that does the forward, backward and optimizer step(s) itself (GANs, accumulation).
        The loop then only counts the global step, steps the scheduler and runs hooks.
      gradient_clip_norm: clip the global gradient norm to this value before each update
        (overrides ``RunConfig.gradient_clip_norm``).
    """

    module: Any
    loss_fn: Callable[[Any, Any], Any] | None = None
    optimizer: Any = None
    scheduler: Any = None
    predictions_fn: Callable[[Any], Mapping[str, Any]] | None = None
    eval_metric_ops: Mapping[str, Any] | None = None
    training_hooks: Sequence[Any] = ()
    evaluation_hooks: Sequence[Any] = ()
    prediction_hooks: Sequence[Any] = ()
    train_step_fn: Callable[..., Any] | None = None
    gradient_clip_norm: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.module, torch.nn.Module):
            raise TypeError(
                "EstimatorSpec.module must be a torch.nn.Module, got "
                f"{type(self.module).__name__}: {self.module!r}. Return the model from model_fn "
                "as EstimatorSpec(module=MyModel(), ...)."
            )
        if self.loss_fn is not None and not callable(self.loss_fn):
            raise TypeError(
                f"EstimatorSpec.loss_fn must be callable (outputs, labels) -> loss, got {self.loss_fn!r}."
            )
        if self.optimizer is not None and not isinstance(self.optimizer, torch.optim.Optimizer):
            raise TypeError(
                "EstimatorSpec.optimizer must be a torch.optim.Optimizer, got "
                f"{type(self.optimizer).__name__}. Build it in model_fn, e.g. "
                "torch.optim.Adam(module.parameters(), lr=1e-3)."
            )
        if self.predictions_fn is not None and not callable(self.predictions_fn):
            raise TypeError(
                f"EstimatorSpec.predictions_fn must be callable, got {self.predictions_fn!r}."
            )
        if self.train_step_fn is not None and not callable(self.train_step_fn):
            raise TypeError(
                f"EstimatorSpec.train_step_fn must be callable, got {self.train_step_fn!r}."
            )
        if self.eval_metric_ops is not None:
            if not isinstance(self.eval_metric_ops, Mapping):
                raise TypeError(
                    "EstimatorSpec.eval_metric_ops must be a dict of name -> torchmetrics.Metric, "
                    f"got {type(self.eval_metric_ops).__name__}."
                )
            for name in self.eval_metric_ops:
                if name in ("loss", "global_step"):
                    raise ValueError(
                        f"eval_metric_ops must not define {name!r}: learnrun adds it to every "
                        "evaluation result. Rename the metric."
                    )
        for attr in ("training_hooks", "evaluation_hooks", "prediction_hooks"):
            value = getattr(self, attr)
            setattr(self, attr, tuple(value or ()))
        if self.gradient_clip_norm is not None and not self.gradient_clip_norm > 0:
            raise ValueError(
                f"EstimatorSpec.gradient_clip_norm must be > 0 or None, got {self.gradient_clip_norm!r}."
            )

    def predictions(self, outputs: Any) -> dict[str, Any]:
        """Apply ``predictions_fn`` (default ``{"outputs": outputs}``) and check the result."""
        if self.predictions_fn is None:
            return {"outputs": outputs}
        result = self.predictions_fn(outputs)
        if not isinstance(result, Mapping):
            raise TypeError(
                "predictions_fn must return a dict of name -> tensor, got "
                f"{type(result).__name__}."
            )
        return dict(result)
