"""Early stopping from evaluation results (TF's ``tf.estimator.experimental`` hooks).

``stop_if_no_decrease_hook``, ``stop_if_no_increase_hook``, ``stop_if_higher_hook``,
``stop_if_lower_hook``, ``make_early_stopping_hook`` and ``read_eval_metrics`` read
``<eval_dir>/results.jsonl`` (what ``Estimator.evaluate`` appends), so they work with any
evaluation that writes there: a ``ValidationMonitor``, ``train_and_evaluate``'s evaluator, or
a separate evaluator process. ``EarlyStoppingHook``'s state is saved in checkpoints.
"""

from __future__ import annotations

import logging
import operator
import sys
from collections.abc import Callable
from typing import Any

from learnrun.clock import Clock
from learnrun.hooks.base import SecondOrStepTimer, SessionRunHook, skips_idle_steps
from learnrun.model_dir import eval_results

logger = logging.getLogger(__name__)

__all__ = [
    "EarlyStoppingHook", "make_early_stopping_hook", "read_eval_metrics", "stop_if_higher_hook",
    "stop_if_lower_hook", "stop_if_no_decrease_hook", "stop_if_no_increase_hook",
]


def read_eval_metrics(eval_dir: str) -> dict[int, dict[str, Any]]:
    """Evaluation results in ``eval_dir/results.jsonl`` as ``{global_step: metrics}``, by step.

    A step evaluated twice keeps its latest record.
    """
    by_step: dict[int, dict[str, Any]] = {}
    for record in eval_results.read_eval_results(eval_dir):
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
        self.idle_until_due(self._timer)
        if not session.is_chief:  # only the chief decides: elsewhere nothing to do at any step
            self.idle_until_step = sys.maxsize
        if self.stop_triggered:
            logger.info("Early stopping was requested before this restart; stopping.")
            session.request_stop()

    @skips_idle_steps
    def after_run(self, run_context, run_values) -> None:
        if not run_context.session.is_chief:
            return
        step = run_values.global_step
        if self._timer.should_trigger_for_step(step):
            self._timer.update_last_triggered_step(step)
            self.idle_until_due(self._timer)
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
    return eval_results.eval_dir(estimator.model_dir, None)


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
