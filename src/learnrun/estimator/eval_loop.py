"""The evaluation and prediction loops of ``Estimator.evaluate`` and ``Estimator.predict``.

Both run over a checkpoint restored before ``begin`` (the global step does not change), with
the shorter hook trace of :func:`run_hooked_loop`::

    for hook in hooks: hook.begin()
    for hook in hooks: hook.after_create_session(session, coord=None)
    iterator = iter(input)
    loop, until the input is exhausted, ``steps`` batches ran or a stop was requested:
        batch = next(iterator)
        ctx = RunContext(session)
        for hook in hooks: hook.before_run(ctx)          # its SessionRunArgs are ignored
        the step (evaluate: loss and metric updates; predict: predictions)
        for hook in hooks: hook.after_run(ctx, RunValues(results, global_step))
    for hook in hooks: hook.end(session)

``predict``'s loop is a generator: ``end`` runs once its caller consumed every prediction. An
exception raised by the step or a hook propagates at once, skipping every ``end``.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from learnrun.distributed import LocalStrategy
from learnrun.estimator.session import RunSession
from learnrun.estimator.spec import ModeKeys
from learnrun.estimator.step import (
    autocast_context,
    call_input_fn,
    forward,
    split_batch,
    to_device,
    to_numpy,
)
from learnrun.hooks import RunContext, RunValues
from learnrun.hooks.base import to_python
from learnrun.model_dir import eval_results, summaries

logger = logging.getLogger(__name__)


def run_hooked_loop(est, spec, step: int, hooks: list, iterable, steps: int | None, mode: str,
                    batch_fn: Callable[[Any], tuple[Any, dict]]) -> Iterator[Any]:
    """Evaluation/prediction loop with the hook trace above; yields ``batch_fn``'s first output."""
    session = RunSession(est, spec.module, None, None, LocalStrategy(est.config), mode)
    session.global_step = step
    session.hooks = hooks
    for hook in hooks:
        hook.begin()
    for hook in hooks:
        hook.after_create_session(session, None)
    iterator = iter(iterable)
    done = 0
    while not session.stop_requested and (steps is None or done < steps):
        try:
            batch = next(iterator)
        except StopIteration:
            break
        ctx = RunContext(session)
        for hook in hooks:
            hook.before_run(ctx)
        value, results = batch_fn(batch)
        done += 1
        values = RunValues(results, step)
        for hook in hooks:
            hook.after_run(ctx, values)
        yield value
    for hook in hooks:
        hook.end(session)


# -- evaluation ---------------------------------------------------------------------------------
def _metric_inputs(key: str, wanted: str, predictions: dict) -> Any:
    if wanted in predictions:
        return predictions[wanted]
    if wanted == "predictions":
        return next(iter(predictions.values())) if len(predictions) == 1 else predictions
    raise ValueError(f"eval_metric_ops[{key!r}].learnrun_inputs is {wanted!r}; use 'outputs', "
                     f"'predictions' or a key of predictions_fn's dict: {sorted(predictions)}.")


def _metric_value(value: Any) -> Any:
    if hasattr(value, "detach"):
        return to_python(value.float() if value.is_floating_point() else value)
    if isinstance(value, dict):
        return {k: _metric_value(v) for k, v in value.items()}
    return value


def _fresh_metrics(spec, device) -> dict[str, Any]:
    """A reset copy of every metric of ``spec.eval_metric_ops``, on ``device``."""
    metrics = {}
    for key, metric in (spec.eval_metric_ops or {}).items():
        metric = copy.deepcopy(metric)
        metric.reset()
        metrics[key] = metric.to(device)
    return metrics


def _update_metrics(spec, metrics: dict, outputs, labels) -> None:
    """``update`` every metric with the inputs it asks for (``learnrun_inputs``)."""
    predictions = None
    for key, metric in metrics.items():
        wanted = getattr(metric, "learnrun_inputs", "outputs")
        if wanted == "outputs":
            metric.update(outputs, labels)
            continue
        if predictions is None:
            predictions = spec.predictions(outputs)
        metric.update(_metric_inputs(key, wanted, predictions), labels)


def run_evaluation(est, spec, step: int, device, path: str, input_fn, steps, hooks, name,
                   strategy=None) -> dict:
    """Evaluate the restored ``spec.module``; write summaries and ``results.jsonl``.

    With a joined synchronous ``strategy`` every trainer evaluates its own shard (disjoint,
    through ``input_context``: nothing is counted twice); the loss is the mean over every
    trainer's batches (``reduce_sum``), torchmetrics metrics sync in ``compute()``, and only
    the chief writes the results.
    """
    if spec.loss_fn is None:
        raise ValueError("evaluate needs EstimatorSpec.loss_fn (the results always hold 'loss').")
    metrics = _fresh_metrics(spec, device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    context = strategy.input_context() if strategy is not None else None
    iterable = call_input_fn(input_fn, ModeKeys.EVAL, est.params, est.config, context)

    def eval_batch(batch):
        nonlocal total
        features, labels = split_batch(batch, "evaluate")
        features, labels = to_device(features, device), to_device(labels, device)
        with torch.no_grad(), autocast_context(est.config, device):
            outputs = forward(spec.module, features, f"evaluate (checkpoint step {step})")
            loss = spec.loss_fn(outputs, labels)
        total = total + loss.detach().double()
        with torch.no_grad():
            _update_metrics(spec, metrics, outputs, labels)
        return None, {"loss": loss.detach(), "outputs": outputs, "features": features,
                      "labels": labels}

    all_hooks = list(hooks) + list(spec.evaluation_hooks)
    count = sum(1 for _ in run_hooked_loop(est, spec, step, all_hooks, iterable, steps,
                                           ModeKeys.EVAL, eval_batch))
    loss_sum = float(total.item())
    if strategy is not None:  # Collective: every trainer reaches this point
        loss_sum, count = strategy.reduce_sum(loss_sum), int(strategy.reduce_sum(count))
    if count == 0:
        raise ValueError("evaluate: input_fn produced no batches. Give it data (or check that a "
                         "one-shot iterable was not already consumed).")
    results: dict[str, Any] = {key: _metric_value(m.compute()) for key, m in metrics.items()}
    results["loss"] = loss_sum / count
    results["global_step"] = int(step)
    logger.info("Saving dict for global step %d: %s", step,
                ", ".join(f"{k} = {v}" for k, v in sorted(results.items())))
    if strategy is None or strategy.is_chief:
        _write_results(est.eval_dir(name), step, path, results)
    return results


def _write_results(out_dir: str, step: int, path: str, results: dict[str, Any]) -> None:
    """The numeric results as TensorBoard scalars, and the whole record in ``results.jsonl``."""
    scalars = {k: v for k, v in results.items()
               if k != "global_step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
    summaries.write_scalars(out_dir, step, scalars)
    summaries.flush(out_dir)
    eval_results.append_eval_result(out_dir, {"checkpoint_path": os.fspath(path), **results})


# -- prediction ---------------------------------------------------------------------------------
def run_prediction(est, spec, step: int, device, iterable, hooks: list, predict_keys,
                   yield_single_examples: bool) -> Iterator[dict]:
    """Yield ``spec``'s predictions (numpy) for every batch, whole or one example at a time."""

    def predict_batch(batch):
        features = batch[0] if isinstance(batch, (tuple, list)) and len(batch) == 2 else batch
        with torch.no_grad(), autocast_context(est.config, device):
            outputs = spec.module(to_device(features, device))
        predictions = spec.predictions(outputs)
        if predict_keys is not None:
            unknown = [k for k in predict_keys if k not in predictions]
            if unknown:
                raise ValueError(f"Expected to run at least one output from "
                                 f"{sorted(predictions)}, provided {list(predict_keys)}. "
                                 f"Unknown predict_keys: {unknown}.")
            predictions = {k: predictions[k] for k in predict_keys}
        predictions = {k: to_numpy(v) for k, v in predictions.items()}
        return predictions, {"outputs": outputs, "predictions": predictions}

    all_hooks = hooks + list(spec.prediction_hooks)
    for predictions in run_hooked_loop(est, spec, step, all_hooks, iterable, None,
                                       ModeKeys.PREDICT, predict_batch):
        if not yield_single_examples:
            yield predictions
            continue
        yield from _split_examples(predictions)


def _split_examples(predictions: Mapping[str, Any]) -> Iterator[dict]:
    """One dict per example of a batch of predictions (entries without a batch axis repeat)."""
    sizes = {k: len(v) for k, v in predictions.items() if hasattr(v, "shape") and v.shape}
    if not sizes:
        yield dict(predictions)
        return
    size = next(iter(sizes.values()))
    for key, n in sizes.items():
        if n != size:
            raise ValueError(f"Batch length of predictions should be same. {key} has different "
                             f"batch length ({n}) than others ({size}). Use "
                             "yield_single_examples=False to get whole batches.")
    for i in range(size):
        yield {k: (v[i] if k in sizes else v) for k, v in predictions.items()}
