"""The evaluation side of ``train_and_evaluate``: evaluate new checkpoints, then export.

``_Evaluator.evaluate_and_export`` evaluates the latest checkpoint once (skipping, with a
throttled warning, when there is none or it was already evaluated) and runs the EvalSpec's
exporters on it. ``_NewCheckpointListenerForEvaluate`` is the saving listener that does this
during local/master training; ``_ContinuousEvalListener`` lets callers stop either loop.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from learnrun.clock import Clock
from learnrun.estimator.hooks import CheckpointSaverListener
from learnrun.experiment_eval import latest_checkpoint_of

if TYPE_CHECKING:
    from learnrun.training import EvalSpec

logger = logging.getLogger(__name__)

_WARNING_INTERVAL_SECS = 600


class _EvalStatus:
    UNSET = "unset"
    EVALUATED = "evaluated"
    MISSING_CHECKPOINT = "missing checkpoint"
    NO_NEW_CHECKPOINT = "no new checkpoint"


class _EvalResult:
    """The outcome of one evaluation pass: status, metrics and checkpoint path (validated)."""

    def __init__(self, status: str, metrics: Any = None, checkpoint_path: str | None = None):
        if status == _EvalStatus.EVALUATED:
            if not metrics:
                raise ValueError(
                    "Internal error: `Estimator.evaluate` should never return empty metrics."
                )
            if not isinstance(metrics, dict):
                raise TypeError(f"`Estimator.evaluate` should return dict. Given {type(metrics)}.")
            if "global_step" not in metrics:
                raise ValueError(
                    "Internal error: `Estimator.evaluate` result should have `global_step` in "
                    f"result. Given {metrics}"
                )
        self.status = status
        self.metrics = metrics
        self.checkpoint_path = checkpoint_path

    def __repr__(self) -> str:
        return f"_EvalResult({self.status!r}, {self.metrics!r}, {self.checkpoint_path!r})"


class _ContinuousEvalListener:
    """Hooks into continuous evaluation: return False from either method to stop."""

    def before_eval(self) -> bool:
        return True

    def after_eval(self, eval_result: _EvalResult) -> bool:
        return True


class _Evaluator:
    """Evaluate the latest checkpoint once per new checkpoint, then run the exporters."""

    def __init__(self, estimator, eval_spec: EvalSpec, max_training_steps, clock: Clock):
        self._estimator = estimator
        self._eval_spec = eval_spec
        self._max_training_steps = max_training_steps
        self._clock = clock
        self._previous_ckpt_path: str | None = None
        self._last_warning_time = 0.0

    def _log_err_msg(self, message: str) -> None:
        now = self._clock.time()
        if now - self._last_warning_time > _WARNING_INTERVAL_SECS:
            logger.warning(message)
            self._last_warning_time = now

    def evaluate_and_export(self) -> tuple[_EvalResult, list[Any]]:
        latest = latest_checkpoint_of(self._estimator)
        if not latest:
            self._log_err_msg(
                "Estimator is not trained yet. Will start an evaluation when a checkpoint is ready."
            )
            return _EvalResult(_EvalStatus.MISSING_CHECKPOINT), []
        if latest == self._previous_ckpt_path:
            self._log_err_msg(
                "No new checkpoint ready for evaluation. Skip the current evaluation pass as "
                "evaluation results are expected to be same for the same checkpoint."
            )
            return _EvalResult(_EvalStatus.NO_NEW_CHECKPOINT), []
        metrics = self._estimator.evaluate(
            input_fn=self._eval_spec.input_fn,
            steps=self._eval_spec.steps,
            name=self._eval_spec.name,
            checkpoint_path=latest,
            hooks=list(self._eval_spec.hooks),
        )
        eval_result = _EvalResult(_EvalStatus.EVALUATED, metrics, latest)
        is_final = (
            self._max_training_steps is not None
            and metrics["global_step"] >= self._max_training_steps
        )
        export_results = self._export(eval_result, is_final)
        if is_final:
            logger.info("Training has already ended at global step %s.", metrics["global_step"])
        self._previous_ckpt_path = latest
        self._last_warning_time = 0.0
        return eval_result, export_results

    def _export(self, eval_result: _EvalResult, is_the_final_export: bool) -> list[Any]:
        results = []
        for exporter in self._eval_spec.exporters:
            results.append(
                exporter.export(
                    estimator=self._estimator,
                    export_path=os.path.join(self._estimator.model_dir, "export", exporter.name),
                    checkpoint_path=eval_result.checkpoint_path,
                    eval_result=eval_result.metrics,
                    is_the_final_export=is_the_final_export,
                )
            )
        return results


class _NewCheckpointListenerForEvaluate(CheckpointSaverListener):
    """Saving listener of ``run_local``/``run_master``: evaluate new checkpoints while training.

    Trace: ``begin`` resets the throttle; the first ``after_save`` (the checkpoint at the
    starting step) is ignored; later saves are evaluated and exported when ``throttle_secs``
    passed since the last evaluation (else skipped with a log line); ``end`` evaluates the final
    step unless it was just evaluated. ``continuous_eval_listener`` returning False stops
    training (``after_save`` returns True).
    """

    def __init__(self, evaluator: _Evaluator, throttle_secs, continuous_eval_listener, clock):
        self._evaluator = evaluator
        self._throttle_secs = throttle_secs
        self._listener = continuous_eval_listener
        self._clock = clock
        self._last_step: int | None = None
        self._last_time: float | None = None
        self._is_first_run = True
        self.eval_result: _EvalResult | None = None
        self.export_results: list[Any] | None = None

    def begin(self) -> None:
        self._last_step = self._last_time = None
        self._is_first_run = True

    def _should_trigger(self, step: int) -> bool:
        if self._last_step is None:
            return True
        if step == self._last_step:
            return False
        return self._clock.monotonic() - self._last_time >= self._throttle_secs

    def after_save(self, session, global_step_value):
        if self._is_first_run:
            self._is_first_run = False
            return None
        if not self._listener.before_eval():
            logger.info(
                "Exiting training and evaluation loop, as requested by "
                "_ContinuousEvalListener.before_eval."
            )
            return True
        if self._should_trigger(global_step_value):
            self._evaluate(global_step_value)
            if not self._listener.after_eval(self.eval_result):
                logger.info(
                    "Exiting evaluation, as requested by _ContinuousEvalListener.after_eval."
                )
                return True
        else:
            logger.info(
                "Skip the current checkpoint eval due to throttle secs (%s secs).",
                self._throttle_secs,
            )
        return None

    def end(self, session, global_step_value):
        if global_step_value != self._last_step and self._listener.before_eval():
            self._evaluate(global_step_value)
            self._listener.after_eval(self.eval_result)

    def _evaluate(self, global_step_value: int) -> None:
        self._last_step = global_step_value
        self._last_time = self._clock.monotonic()
        self.eval_result, self.export_results = self._evaluator.evaluate_and_export()
        if self.eval_result.status != _EvalStatus.EVALUATED:
            raise RuntimeError(
                "There was no new checkpoint after the training. Eval status: "
                f"{self.eval_result.status}"
            )
