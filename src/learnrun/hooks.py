"""Public hooks: ``learnrun.estimator.hooks`` plus the hooks driven by evaluation results.

Everything of :mod:`learnrun.estimator.hooks` (``SessionRunHook``, ``StopAtStepHook``,
``CheckpointSaverHook``, ...) is re-exported here. This module adds:

* early stopping from evaluation results (TF's ``tf.estimator.experimental``):
  ``stop_if_no_decrease_hook``, ``stop_if_no_increase_hook``, ``stop_if_higher_hook``,
  ``stop_if_lower_hook``, ``make_early_stopping_hook`` and ``read_eval_metrics``. They read
  ``<eval_dir>/results.jsonl`` (what ``Estimator.evaluate`` appends), so they work with any
  evaluation that writes there: a ``ValidationMonitor``, ``train_and_evaluate``'s evaluator,
  or a separate evaluator process.
* ``ValidationMonitor``: what ``Experiment(min_eval_frequency=N)`` adds to training.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable
from typing import Any

from learnrun.clock import Clock, get_clock
from learnrun.estimator.hooks import (
    CheckpointSaverHook,
    CheckpointSaverListener,
    GlobalStepWaiterHook,
    Hook,
    LoggingTensorHook,
    NanTensorHook,
    RunContext,
    RunValues,
    SecondOrStepTimer,
    SessionRunArgs,
    SessionRunHook,
    StepCounterHook,
    StopAtStepHook,
    SummarySaverHook,
)

logger = logging.getLogger("learnrun")

__all__ = [
    "CheckpointSaverHook", "CheckpointSaverListener", "EarlyStoppingHook", "GlobalStepWaiterHook",
    "Hook", "LoggingTensorHook", "NanTensorHook", "RunContext", "RunValues", "SecondOrStepTimer",
    "SessionRunArgs", "SessionRunHook", "StepCounterHook", "StopAtStepHook", "SummarySaverHook",
    "ValidationMonitor", "make_early_stopping_hook", "read_eval_metrics", "stop_if_higher_hook",
    "stop_if_lower_hook", "stop_if_no_decrease_hook", "stop_if_no_increase_hook",
]


def read_eval_metrics(eval_dir: str) -> dict[int, dict[str, Any]]:
    """Evaluation results in ``eval_dir/results.jsonl`` as ``{global_step: metrics}``, by step.

    A step evaluated twice keeps its latest record.
    """
    from learnrun.estimator import summary

    by_step: dict[int, dict[str, Any]] = {}
    for record in summary.read_eval_results(eval_dir):
        if "global_step" in record:
            by_step[int(record["global_step"])] = record
    return dict(sorted(by_step.items()))


class EarlyStoppingHook(SessionRunHook):
    """Call ``should_stop_fn()`` every ``run_every_secs`` or ``run_every_steps``; stop when True.

    Only the chief decides (in synchronous training the strategy spreads the stop to every
    worker). Its state (whether stop was triggered) is saved in checkpoints, so a restarted run
    that had stopped early stops again at once, like TF's ``signal_early_stopping`` variable.
    """

    def __init__(self, should_stop_fn: Callable[[], bool], run_every_secs: float | None = 60,
                 run_every_steps: int | None = None, clock: Clock | None = None) -> None:
        if not callable(should_stop_fn):
            raise TypeError(f"`should_stop_fn` must be callable, got {should_stop_fn!r}.")
        if run_every_secs is not None and run_every_steps is not None:
            raise ValueError(
                "Can not provide both every_steps and every_secs: got run_every_secs="
                f"{run_every_secs!r} and run_every_steps={run_every_steps!r}. Pass "
                "run_every_secs=None to check every run_every_steps steps."
            )
        self._fn = should_stop_fn
        self._timer = SecondOrStepTimer(every_secs=run_every_secs, every_steps=run_every_steps,
                                        clock=clock)
        self.stop_triggered = False

    def state_dict(self) -> dict[str, Any]:
        return {"stop_triggered": self.stop_triggered}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stop_triggered = bool(state.get("stop_triggered", False))

    def after_create_session(self, session, coord=None) -> None:
        self._timer.reset()
        self._timer.update_last_triggered_step(session.global_step)
        if self.stop_triggered:
            logger.info("Early stopping was requested before this restart; stopping.")
            session.request_stop()

    def after_run(self, run_context, run_values) -> None:
        if not run_context.session.is_chief:
            return
        step = run_values.global_step
        if self._timer.should_trigger_for_step(step):
            self._timer.update_last_triggered_step(step)
            if self._fn():
                self.stop_triggered = True
                logger.info("Requesting early stopping at global step %d", step)
                run_context.request_stop()


def make_early_stopping_hook(estimator, should_stop_fn: Callable[[], bool],
                             run_every_secs: float | None = 60, run_every_steps: int | None = None,
                             clock: Clock | None = None) -> EarlyStoppingHook:
    """A hook that stops training when ``should_stop_fn()`` returns True (TF signature)."""
    return EarlyStoppingHook(should_stop_fn, run_every_secs, run_every_steps, clock=clock)


def _metric(metrics: dict, metric_name: str, eval_dir: str, step: int) -> float:
    try:
        return float(metrics[metric_name])
    except KeyError:
        known = sorted(k for k in metrics if k not in ("checkpoint_path", "global_step"))
        raise ValueError(
            f"Early stopping: metric {metric_name!r} is not in the evaluation at step {step} in "
            f"{eval_dir}; metrics there: {known}. Pass one of those names."
        ) from None


def _eval_dir_of(estimator, eval_dir: str | None) -> str:
    if eval_dir is not None:
        return str(eval_dir)
    if hasattr(estimator, "eval_dir"):
        return estimator.eval_dir()
    from learnrun.estimator import summary

    return summary.eval_dir(estimator.model_dir, None)


def _no_improvement_hook(estimator, metric_name, max_steps, eval_dir, min_steps, run_every_secs,
                         run_every_steps, better, word, clock):
    if max_steps < 0:
        raise ValueError(f"max_steps_without_{word} must be >= 0, got {max_steps!r}.")
    eval_dir = _eval_dir_of(estimator, eval_dir)

    def should_stop() -> bool:
        best_val = best_step = None
        for step, metrics in read_eval_metrics(eval_dir).items():
            if step < min_steps:
                continue
            val = _metric(metrics, metric_name, eval_dir, step)
            if best_val is None or better(val, best_val):
                best_val, best_step = val, step
            if step - best_step >= max_steps:
                logger.info('No %s in metric "%s" for %s steps, which is greater than or equal '
                            "to max steps (%s) configured for early stopping.", word,
                            metric_name, step - best_step, max_steps)
                return True
        return False

    return make_early_stopping_hook(estimator, should_stop, run_every_secs, run_every_steps, clock)


def _threshold_hook(estimator, metric_name, threshold, eval_dir, min_steps, run_every_secs,
                    run_every_steps, beyond, word, clock):
    eval_dir = _eval_dir_of(estimator, eval_dir)

    def should_stop() -> bool:
        for step, metrics in read_eval_metrics(eval_dir).items():
            if step < min_steps:
                continue
            val = _metric(metrics, metric_name, eval_dir, step)
            if beyond(val, threshold):
                logger.info('At step %s, metric "%s" has value %s which is %s than the threshold '
                            "(%s), so early stopping is requested.", step, metric_name, val,
                            word, threshold)
                return True
        return False

    return make_early_stopping_hook(estimator, should_stop, run_every_secs, run_every_steps, clock)


def stop_if_no_decrease_hook(estimator, metric_name: str, max_steps_without_decrease: int,
                             eval_dir: str | None = None, min_steps: int = 0,
                             run_every_secs: float | None = 60, run_every_steps: int | None = None,
                             clock: Clock | None = None) -> EarlyStoppingHook:
    """Stop when ``metric_name`` has not decreased for ``max_steps_without_decrease`` steps."""
    return _no_improvement_hook(estimator, metric_name, max_steps_without_decrease, eval_dir,
                                min_steps, run_every_secs, run_every_steps, operator.lt,
                                "decrease", clock)


def stop_if_no_increase_hook(estimator, metric_name: str, max_steps_without_increase: int,
                             eval_dir: str | None = None, min_steps: int = 0,
                             run_every_secs: float | None = 60, run_every_steps: int | None = None,
                             clock: Clock | None = None) -> EarlyStoppingHook:
    """Stop when ``metric_name`` has not increased for ``max_steps_without_increase`` steps."""
    return _no_improvement_hook(estimator, metric_name, max_steps_without_increase, eval_dir,
                                min_steps, run_every_secs, run_every_steps, operator.gt,
                                "increase", clock)


def stop_if_higher_hook(estimator, metric_name: str, threshold: float, eval_dir: str | None = None,
                        min_steps: int = 0, run_every_secs: float | None = 60,
                        run_every_steps: int | None = None,
                        clock: Clock | None = None) -> EarlyStoppingHook:
    """Stop as soon as an evaluation has ``metric_name`` above ``threshold``."""
    return _threshold_hook(estimator, metric_name, threshold, eval_dir, min_steps, run_every_secs,
                           run_every_steps, operator.gt, "higher", clock)


def stop_if_lower_hook(estimator, metric_name: str, threshold: float, eval_dir: str | None = None,
                       min_steps: int = 0, run_every_secs: float | None = 60,
                       run_every_steps: int | None = None,
                       clock: Clock | None = None) -> EarlyStoppingHook:
    """Stop as soon as an evaluation has ``metric_name`` below ``threshold``."""
    return _threshold_hook(estimator, metric_name, threshold, eval_dir, min_steps, run_every_secs,
                           run_every_steps, operator.lt, "lower", clock)


class ValidationMonitor(SessionRunHook):
    """Evaluate the latest checkpoint during training (``Experiment(min_eval_frequency=N)``).

    Trace, after each step at global step ``s``: the gate opens when
    ``s >= every_n_steps + last_active_step`` or ``s == session.last_step`` (and
    ``last_active_step = s`` whenever it opens); then the check is skipped when the previous
    check was at most ``check_interval_secs`` ago (``clock``), when there is no checkpoint yet,
    or when the latest checkpoint was already evaluated. Otherwise
    ``estimator.evaluate(input_fn, steps=eval_steps, hooks=hooks, name=name)`` runs on the
    latest checkpoint and logs ``Validation (step s): k = v, ...``. So each checkpoint is
    evaluated at most once. With ``early_stopping_rounds`` it stops training when
    ``early_stopping_metric`` has not improved for that many steps.
    """

    def __init__(self, input_fn=None, eval_steps: int | None = None, every_n_steps: int = 100,
                 metrics=None, hooks=None, name: str | None = None,
                 check_interval_secs: float | None = 5, early_stopping_rounds: int | None = None,
                 early_stopping_metric: str = "loss", early_stopping_metric_minimize: bool = True,
                 clock: Clock | None = None) -> None:
        if metrics is not None:
            raise ValueError("`eval_metrics` must be `None` with `tf.estimator.Estimator`: "
                             "put metrics in EstimatorSpec.eval_metric_ops instead.")
        if input_fn is None or not callable(input_fn):
            raise TypeError(f"ValidationMonitor needs a callable input_fn, got {input_fn!r}.")
        if every_n_steps is None or every_n_steps <= 0:
            raise ValueError(f"every_n_steps must be > 0, got {every_n_steps!r}.")
        self.input_fn = input_fn
        self.eval_steps = eval_steps
        self.every_n_steps = int(every_n_steps)
        self.hooks = list(hooks or [])
        self.name = name
        self.check_interval_secs = check_interval_secs
        self.early_stopping_rounds = early_stopping_rounds
        self.early_stopping_metric = early_stopping_metric
        self.early_stopping_metric_minimize = early_stopping_metric_minimize
        self._clock = get_clock(clock)
        self._last_active_step = 0
        self._last_check_time: float | None = None
        self._latest_path: str | None = None
        self.eval_results: dict[str, Any] | None = None
        self.best_step: int | None = None
        self.best_value: float | None = None
        self.best_metrics: dict[str, Any] | None = None
        self.early_stopped = False

    def state_dict(self) -> dict[str, Any]:
        return {"best_step": self.best_step, "best_value": self.best_value,
                "early_stopped": self.early_stopped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_step = state.get("best_step")
        self.best_value = state.get("best_value")
        self.early_stopped = bool(state.get("early_stopped", False))

    def after_run(self, run_context, run_values) -> None:
        step = run_values.global_step
        session = run_context.session
        last_step = getattr(session, "last_step", None)
        if not (step >= self.every_n_steps + self._last_active_step or step == last_step):
            return
        self._last_active_step = step
        if self._validate(session, step):
            run_context.request_stop()

    def _validate(self, session, step: int) -> bool:
        now = self._clock.monotonic()
        if (self.check_interval_secs is not None and self._last_check_time is not None
                and now - self._last_check_time <= self.check_interval_secs):
            logger.debug("Skipping evaluation: last check was %.1f s ago.",
                         now - self._last_check_time)
            return False
        self._last_check_time = now
        estimator = session.estimator
        latest = estimator.latest_checkpoint()
        if latest is None:
            logger.debug("Skipping evaluation since model has not been saved yet at step %d.", step)
            return False
        if latest == self._latest_path:
            logger.debug("Skipping evaluation due to same checkpoint %s for step %d.", latest, step)
            return False
        self._latest_path = latest
        results = estimator.evaluate(input_fn=self.input_fn, steps=self.eval_steps,
                                     hooks=self.hooks, name=self.name)
        self.eval_results = results
        logger.info("Validation (step %d): %s", step,
                    ", ".join(f"{k} = {v}" for k, v in sorted(results.items())))
        return self._early_stopping(results, step)

    def _early_stopping(self, results: dict[str, Any], step: int) -> bool:
        if self.early_stopping_rounds is None:
            return False
        if self.early_stopping_metric not in results:
            raise ValueError(f"Metric {self.early_stopping_metric!r} missing from the evaluation "
                             f"outputs {sorted(results)}; set early_stopping_metric to one of them.")
        value = float(results[self.early_stopping_metric])
        improved = (self.best_value is None
                    or (value < self.best_value if self.early_stopping_metric_minimize
                        else value > self.best_value))
        if improved:
            self.best_value, self.best_step, self.best_metrics = value, step, results
        if step - self.best_step >= self.early_stopping_rounds:
            logger.info("Stopping. Best step: %s with %s = %s.", self.best_step,
                        self.early_stopping_metric, self.best_value)
            self.early_stopped = True
            return True
        return False
