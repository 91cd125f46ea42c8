"""``train_and_evaluate(estimator, train_spec, eval_spec)``: TF's core successor of Experiment.

Each task of a cluster calls the same ``train_and_evaluate``; what it does depends on the
task type in ``estimator.config``:

* no cluster (local): train with a saving listener that evaluates and exports every new
  checkpoint (at most every ``eval_spec.throttle_secs``) and the final one; returns
  ``(metrics, export_results)``.
* ``chief`` / ``worker``: train (workers first wait ``min(60, 5 * (task_id + 1))`` s).
* ``master``: train like the chief, evaluating and exporting new checkpoints as in local mode.
* ``ps``: serve parameters (``learnrun.distributed.serve``) until training ends.
* ``evaluator``: evaluate and export each new checkpoint until ``max_steps`` is reached.

Exporters (``LatestExporter``, ``BestExporter``, ``FinalExporter``, defined in
``learnrun.export.exporters`` and re-exported here) write to
``<model_dir>/export/<exporter.name>/<timestamp>/``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from learnrun.clock import Clock, ThrottledWarning, get_clock
from learnrun.distributed import serve
from learnrun.experiment import latest_checkpoint_of
from learnrun.export.exporters import (
    BestExporter,
    Exporter,
    FinalExporter,
    LatestExporter,
    validate_exporters,
)
from learnrun.hooks import CheckpointSaverListener, SessionRunHook
from learnrun.model_dir.checkpoints import training_ended_with
from learnrun.model_dir.storage import join

logger = logging.getLogger(__name__)

__all__ = [
    "TrainSpec",
    "EvalSpec",
    "train_and_evaluate",
    "Exporter",
    "LatestExporter",
    "BestExporter",
    "FinalExporter",
]

_MAX_WORKER_DELAY_SECS = 60


def _validate_hooks(hooks: Iterable[Any] | None) -> tuple[Any, ...]:
    hooks = tuple(hooks or ())
    for hook in hooks:
        if not isinstance(hook, SessionRunHook):
            raise TypeError(f"All hooks must be `SessionRunHook` instances, given: {hook!r}")
    return hooks


class TrainSpec:
    """What to train on: ``input_fn``, absolute ``max_steps`` (None: until the input ends), hooks."""

    __slots__ = ("input_fn", "max_steps", "hooks")

    def __init__(self, input_fn: Callable[..., Any], max_steps: int | None = None, hooks=None):
        if not callable(input_fn):
            raise TypeError(f"`input_fn` must be callable, given: {input_fn!r}")
        if max_steps is not None and max_steps <= 0:
            raise ValueError(f"Must specify max_steps > 0, given: {max_steps}")
        self.input_fn = input_fn
        self.max_steps = max_steps
        self.hooks = _validate_hooks(hooks)

    def __repr__(self) -> str:
        return (
            f"TrainSpec(input_fn={self.input_fn!r}, max_steps={self.max_steps}, hooks={self.hooks})"
        )


class EvalSpec:
    """How to evaluate and export: input, ``steps`` (None: whole input), name, hooks, exporters,
    ``start_delay_secs`` (evaluator's first wait) and ``throttle_secs`` (minimum seconds between
    evaluations)."""

    __slots__ = (
        "input_fn",
        "steps",
        "name",
        "hooks",
        "exporters",
        "start_delay_secs",
        "throttle_secs",
    )

    def __init__(
        self,
        input_fn: Callable[..., Any],
        steps: int | None = 100,
        name: str | None = None,
        hooks=None,
        exporters=None,
        start_delay_secs: float = 120,
        throttle_secs: float = 600,
    ) -> None:
        if not callable(input_fn):
            raise TypeError(f"`input_fn` must be callable, given: {input_fn!r}")
        if steps is not None and steps <= 0:
            raise ValueError(f"Must specify steps > 0, given: {steps}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"`name` must be string, given: {name!r}")
        if start_delay_secs < 0:
            raise ValueError(f"Must specify start_delay_secs >= 0, given: {start_delay_secs}")
        if throttle_secs < 0:
            raise ValueError(f"Must specify throttle_secs >= 0, given: {throttle_secs}")
        self.input_fn = input_fn
        self.steps = steps
        self.name = name
        self.hooks = _validate_hooks(hooks)
        self.exporters = validate_exporters(exporters)
        self.start_delay_secs = start_delay_secs
        self.throttle_secs = throttle_secs

    def __repr__(self) -> str:
        return (
            f"EvalSpec(steps={self.steps}, name={self.name!r}, exporters="
            f"{[e.name for e in self.exporters]}, start_delay_secs={self.start_delay_secs}, "
            f"throttle_secs={self.throttle_secs})"
        )


# ------------------------------------------------------------------ evaluation and export

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
        self._warning = ThrottledWarning(clock)

    @property
    def last_evaluated(self) -> str | None:
        """The checkpoint evaluated last (None before the first evaluation)."""
        return self._previous_ckpt_path

    def _log_err_msg(self, message: str) -> None:
        self._warning.warn(logger, message)

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
        is_final = training_ended_with(self._estimator.model_dir, latest,
                                       self._max_training_steps) or (
            self._max_training_steps is not None
            and metrics["global_step"] >= self._max_training_steps
        )
        export_results = self._export(eval_result, is_final)
        if is_final:
            logger.info("Training has already ended at global step %s.", metrics["global_step"])
        self._previous_ckpt_path = latest
        self._warning.reset()
        return eval_result, export_results

    def _export(self, eval_result: _EvalResult, is_the_final_export: bool) -> list[Any]:
        results = []
        for exporter in self._eval_spec.exporters:
            results.append(
                exporter.export(
                    estimator=self._estimator,
                    export_path=join(self._estimator.model_dir, "export", exporter.name),
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


class _TrainingExecutor:
    """Runs the part of ``train_and_evaluate`` that belongs to this task (``run``)."""

    def __init__(
        self,
        estimator,
        train_spec,
        eval_spec,
        train_hooks=None,
        continuous_eval_listener=None,
        clock: Clock | None = None,
    ):
        if not (
            callable(getattr(estimator, "train", None))
            and callable(getattr(estimator, "evaluate", None))
            and hasattr(estimator, "config")
        ):
            raise TypeError(
                "`estimator` must have type `learnrun.Estimator` (or implement its protocol: "
                f"config, model_dir, train, evaluate). Got: {type(estimator)}"
            )
        if not isinstance(train_spec, TrainSpec):
            raise TypeError(
                f"`train_spec` must have type `learnrun.TrainSpec`. Got: {type(train_spec)}"
            )
        if eval_spec is not None and not isinstance(eval_spec, EvalSpec):
            raise TypeError(
                "`eval_spec` must be either `None` or have type `learnrun.EvalSpec`. Got: "
                f"{type(eval_spec)}"
            )
        if continuous_eval_listener is not None and not isinstance(
            continuous_eval_listener, _ContinuousEvalListener
        ):
            raise TypeError("`continuous_eval_listener` must have type `_ContinuousEvalListener`.")
        self._estimator = estimator
        self._train_spec = train_spec
        self._eval_spec = eval_spec
        self._train_hooks = _validate_hooks(train_hooks)
        self._listener = continuous_eval_listener or _ContinuousEvalListener()
        self._clock = get_clock(clock)

    @property
    def estimator(self):
        return self._estimator

    def run(self):
        """Dispatch on the task type: ``run_local`` without a cluster, else ``run_<task_type>``."""
        config = self._estimator.config
        task_type = config.task_type
        if not config.cluster_spec and task_type != "evaluator":
            logger.info("Running training and evaluation locally (non-distributed).")
            return self.run_local()
        if not task_type:
            raise ValueError(
                "`estimator.config` must have task_type set. This usually means TF_CONFIG "
                "environment is not set correctly."
            )
        if task_type == "local":
            raise ValueError(
                "`task.type` in TF_CONFIG cannot be `local`. Leaving `cluster` and `task` "
                "properties in TF_CONFIG absent triggers train and evaluate `Estimator` locally "
                "(non-distributed)."
            )
        method = getattr(self, "run_" + task_type, None)
        if not callable(method):
            supported = [
                name[len("run_") :]
                for name in dir(self)
                if name.startswith("run_") and name != "run_local" and callable(getattr(self, name))
            ]
            raise ValueError(
                f"Task type {task_type} is not supported. Supported task types are {supported}"
            )
        method()
        return None

    # -- per task ------------------------------------------------------------------------------
    def run_chief(self):
        """Train (no delay); the chief writes checkpoints."""
        return self._start_distributed_training()

    def run_worker(self):
        """Wait ``min(60, 5 * (task_id + 1))`` s (``experimental_max_worker_delay_secs`` caps it), train."""
        return self._start_distributed_training(delay_worker=True)

    def run_master(self):
        """Train like the chief, evaluating and exporting new checkpoints as they are saved."""
        listener = self._new_checkpoint_listener("master")
        return self._start_distributed_training(saving_listeners=[listener])

    def run_ps(self):
        """Serve this ps task's parameters until training ends (``learnrun.distributed.serve``)."""
        config = self._estimator.config
        self._check_cluster_config(config)
        return serve(config)

    def run_evaluator(self):
        """Evaluate and export each new checkpoint until its global step reaches ``max_steps``
        or the checkpoint with which training ended (recorded in the model directory by the
        chief, also when ``max_steps`` is None or the input ran out) is evaluated."""
        self._require_eval_spec("evaluator")
        spec = self._eval_spec
        if spec.start_delay_secs:
            logger.info("Waiting %s secs before starting evaluation.", spec.start_delay_secs)
            self._clock.sleep(spec.start_delay_secs)
        evaluator = _Evaluator(self._estimator, spec, self._train_spec.max_steps, self._clock)
        max_steps = self._train_spec.max_steps
        result: _EvalResult | None = None
        while True:
            if (
                result is not None
                and result.status == _EvalStatus.EVALUATED
                and max_steps is not None
                and result.metrics["global_step"] >= max_steps
            ):
                logger.info(
                    "Exiting evaluation, global_step=%s >= train max_steps=%s",
                    result.metrics["global_step"],
                    max_steps,
                )
                return None
            start = self._clock.time()
            if not self._listener.before_eval():
                logger.info("Exiting evaluation, as requested by before_eval.")
                return None
            result, _ = evaluator.evaluate_and_export()
            if not self._listener.after_eval(result):
                logger.info("Exiting evaluation, as requested by after_eval.")
                return None
            last = evaluator.last_evaluated
            if training_ended_with(self._estimator.model_dir, last, max_steps):
                logger.info("Exiting evaluation: training ended with %s, which is evaluated.",
                            last)
                return None
            difference = spec.throttle_secs - (self._clock.time() - start)
            if difference > 0:
                logger.info("Waiting %f secs before starting next eval run.", difference)
                self._clock.sleep(difference)
            elif spec.throttle_secs == 0 and result.status != _EvalStatus.EVALUATED:
                logger.warning(
                    "EvalSpec.throttle_secs is set as 0. This might overload the job before "
                    "finding (next) new checkpoint. Please consider to increase it."
                )

    def run_local(self):
        """Train once with a listener that evaluates new checkpoints; ``(metrics, exports)``."""
        listener = self._new_checkpoint_listener("local")
        logger.info(
            "Start train and evaluate loop. The evaluate will happen after every checkpoint. "
            "Checkpoint frequency is determined based on RunConfig arguments: "
            "save_checkpoints_steps %s or save_checkpoints_secs %s.",
            self._estimator.config.save_checkpoints_steps,
            self._estimator.config.save_checkpoints_secs,
        )
        self._train(saving_listeners=[listener])
        metrics = listener.eval_result.metrics if listener.eval_result is not None else None
        return metrics, listener.export_results

    # -- helpers -------------------------------------------------------------------------------
    def _require_eval_spec(self, task: str) -> None:
        if self._eval_spec is None:
            raise TypeError(
                f"`eval_spec` must have type `learnrun.EvalSpec` for the {task} task. Got: None"
            )

    def _new_checkpoint_listener(self, task: str) -> _NewCheckpointListenerForEvaluate:
        """The saving listener that evaluates and exports new checkpoints (local / master)."""
        self._require_eval_spec(task)
        evaluator = _Evaluator(
            self._estimator, self._eval_spec, self._train_spec.max_steps, self._clock
        )
        return _NewCheckpointListenerForEvaluate(
            evaluator, self._eval_spec.throttle_secs, self._listener, self._clock
        )

    def _train(self, saving_listeners: list[Any] | None) -> Any:
        return self._estimator.train(
            input_fn=self._train_spec.input_fn,
            max_steps=self._train_spec.max_steps,
            hooks=list(self._train_spec.hooks) + list(self._train_hooks),
            saving_listeners=saving_listeners,
        )

    @staticmethod
    def _check_cluster_config(config) -> None:
        """The checks TF's std-server start made (learnrun joins the cluster in the strategy)."""
        cluster_spec = config.cluster_spec
        task_type = config.task_type
        task_id = config.task_id
        if not cluster_spec or not task_type or task_id is None:
            raise RuntimeError(
                "Could not start server; be sure to specify cluster_spec, task_type, and task in "
                "RunConfig or set the TF_CONFIG environment variable. Got cluster_spec="
                f"{cluster_spec!r}, task_type={task_type!r}, task_id={task_id!r}."
            )
        if not config.master:
            jobs = cluster_spec.as_dict() if hasattr(cluster_spec, "as_dict") else cluster_spec
            single_trainer = len(jobs) == 1 and any(
                job in jobs and len(jobs[job]) == 1 for job in ("chief", "master", "worker")
            )
            if not single_trainer:
                raise RuntimeError(
                    "Could not start server; be sure to specify master in RunConfig or set the "
                    "TF_CONFIG environment variable."
                )

    def _start_distributed_training(self, saving_listeners=None, delay_worker=False):
        config = self._estimator.config
        if config.environment != "google":
            self._check_cluster_config(config)
        if delay_worker:
            max_delay = _MAX_WORKER_DELAY_SECS
            configured = config.experimental_max_worker_delay_secs
            if configured is not None:
                max_delay = int(configured)
            delay = min(max_delay, (config.task_id + 1) * 5)
            if delay > 0:
                logger.info("Waiting %d secs before starting training.", delay)
                self._clock.sleep(delay)
        return self._train(saving_listeners)


def train_and_evaluate(estimator, train_spec: TrainSpec, eval_spec: EvalSpec, *, clock=None):
    """Train and evaluate ``estimator`` as this task's role requires (see the module docstring).

    Returns ``(metrics, export_results)`` when run locally, None on a cluster.

    Raises:
      TypeError: ``eval_spec`` is not an EvalSpec (checked first), or bad estimator/train_spec.
      ValueError: a second evaluator (task id > 0), or an unsupported/missing task type.
    """
    if not isinstance(eval_spec, EvalSpec):
        raise TypeError(f"`eval_spec` must have type `learnrun.EvalSpec`. Got: {type(eval_spec)}")
    executor = _TrainingExecutor(estimator, train_spec, eval_spec, clock=clock)
    config = estimator.config
    if config.task_type == "evaluator" and (config.task_id or 0) > 0:
        raise ValueError(
            "For distributed training, there can only be one `evaluator` task (with task id "
            f"0).  Given task id {config.task_id}"
        )
    return executor.run()
