"""``ValidationMonitor``: evaluate the latest checkpoint during training.

It is what ``Experiment(min_eval_frequency=N)`` adds to training (TF contrib's
``monitors.ValidationMonitor``), with optional early stopping on an evaluation metric.
"""

from __future__ import annotations

import logging
from typing import Any

from learnrun.clock import Clock, get_clock
from learnrun.hooks.base import SessionRunHook

logger = logging.getLogger(__name__)

__all__ = ["ValidationMonitor"]


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
        last_step = session.last_step
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
