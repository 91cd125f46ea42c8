"""``Experiment``: an Estimator plus what to train and evaluate it on, and how (TF semantics).

An Experiment holds everything a schedule needs; :func:`learnrun.run` calls one of its methods
(the *schedule*) with no arguments. Schedules: ``train``, ``evaluate``, ``train_and_evaluate``,
``local_run``, ``continuous_eval``, ``continuous_eval_on_train_data``,
``continuous_train_and_eval``, ``test``, ``serve`` (alias ``run_std_server``).

The estimator may be a ``learnrun.Estimator`` or any object implementing its protocol
(docs/internals.md): ``config``, ``model_dir``, ``train(input_fn, hooks=, steps=, max_steps=,
saving_listeners=)``, ``evaluate(input_fn, steps=, hooks=, checkpoint_path=, name=)``,
``latest_checkpoint()`` and, for exports, ``export_savedmodel``. Every sleep and clock read goes
through ``clock`` (``learnrun.clock``), so tests pass a ``FakeClock``. The continuous schedules
and the evaluate-and-export listener live in ``learnrun.experiment_eval``.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
from collections.abc import Iterable
from typing import Any

from learnrun.clock import Clock, get_clock
from learnrun.experiment_eval import (
    _accepts,
    _check_arguments,
    _check_secs,
    _ContinuousSchedules,
    _eval_and_export_listener_class,
    _hook_list,
    _make_hook,
    latest_checkpoint_of,
)

logger = logging.getLogger(__name__)

__all__ = ["Experiment"]

_SERVER_CONFIG_ERROR = (
    "Could not start server; be sure to specify cluster_spec, task_type, master, and task in "
    "RunConfig or set the TF_CONFIG environment variable."
)
_EXPORT_STRATEGIES_ERROR = (
    "`export_strategies` must be an ExportStrategy, an iterable of ExportStrategy, or `None`, "
    "found %s."
)


def _is_learnrun_estimator(estimator: Any) -> bool:
    # Not imported yet means no instance can exist: avoid importing torch for a fake.
    module = sys.modules.get("learnrun.estimator.estimator")
    estimator_class = getattr(module, "Estimator", None)
    return estimator_class is not None and isinstance(estimator, estimator_class)


def _is_export_strategy(value: Any) -> bool:
    """An ExportStrategy: a ``name`` string and a callable ``export`` (``learnrun.export``)."""
    return isinstance(getattr(value, "name", None), str) and callable(
        getattr(value, "export", None)
    )


class Experiment(_ContinuousSchedules):
    """An Estimator with its input functions and the schedules that run them.

    Args (TF 1.15 ``tf.contrib.learn.Experiment``; nothing runs at construction):
      estimator: a ``learnrun.Estimator`` or an object implementing its protocol.
      train_input_fn, eval_input_fn: input functions for training and evaluation.
      eval_metrics: must be None with a ``learnrun.Estimator`` (use ``eval_metric_ops`` in the
        ``EstimatorSpec``); allowed only for estimators whose ``evaluate`` takes ``metrics``.
      train_steps: absolute global step at which ``train`` stops (``max_steps``); None trains
        until the input ends. Also ends the continuous-evaluation loops.
      eval_steps: batches per evaluation (None: until the eval input is exhausted).
      train_monitors, eval_hooks: hooks for training / evaluation (copied).
      local_eval_frequency: ``min_eval_frequency`` used by ``local_run``.
      eval_delay_secs: default wait before ``evaluate`` / continuous evaluation starts.
      continuous_eval_throttle_secs: minimum seconds between continuous evaluations.
      min_eval_frequency: ``train_and_evaluate`` evaluates new checkpoints at most every this
        many steps (None -> 1; 0 -> only the final evaluation).
      delay_workers_by_global_step: delay worker ``k`` until the global step reaches
        ``int(8000 * log(k + 1))`` instead of sleeping ``min(60, 5 * k)`` seconds.
      export_strategies: an ExportStrategy, an iterable of them, or None.
      train_steps_per_iteration: training steps per ``continuous_train_and_eval`` round (int).
      checkpoint_and_export: in ``train_and_evaluate``, evaluate and export at every checkpoint
        save instead of using ``min_eval_frequency``.
      saving_listeners: checkpoint-saver listeners passed to ``estimator.train``.
      check_interval_secs: minimum seconds between checkpoint checks of the validation hook.
      clock: the ``learnrun.clock.Clock`` for sleeps and time (default: the system clock).
    """

    def __init__(
        self,
        estimator: Any,
        train_input_fn: Any,
        eval_input_fn: Any,
        eval_metrics: Any = None,
        train_steps: int | None = None,
        eval_steps: int | None = 100,
        train_monitors: Iterable[Any] | None = None,
        eval_hooks: Iterable[Any] | None = None,
        local_eval_frequency: int | None = None,
        eval_delay_secs: float = 120,
        continuous_eval_throttle_secs: float = 60,
        min_eval_frequency: int | None = None,
        delay_workers_by_global_step: bool = False,
        export_strategies: Any = None,
        train_steps_per_iteration: int | None = None,
        checkpoint_and_export: bool = False,
        saving_listeners: Iterable[Any] | None = None,
        check_interval_secs: float | None = 5,
        *,
        clock: Clock | None = None,
    ) -> None:
        if _is_learnrun_estimator(estimator):
            if eval_metrics is not None:
                raise ValueError(
                    "`eval_metrics` must be `None` with `learnrun.Estimator`. Use "
                    "`eval_metric_ops` in `learnrun.EstimatorSpec` instead."
                )
        else:
            for method in ("evaluate", "train"):
                if not callable(getattr(estimator, method, None)):
                    raise ValueError(
                        f"`estimator` must implement `{method}` (the `learnrun.Estimator` "
                        f"protocol) or be a `learnrun.Estimator`; got {type(estimator).__name__}."
                    )
            if eval_metrics is not None and not _accepts(estimator.evaluate, "metrics"):
                raise ValueError(
                    "`eval_metrics` must be `None` with an estimator whose `evaluate` takes no "
                    f"`metrics` ({type(estimator).__name__}). Use `eval_metric_ops` in `learnrun.EstimatorSpec` instead."
                )
            if saving_listeners is not None and not _accepts(estimator.train, "saving_listeners"):
                raise ValueError(
                    "`saving_listeners` must be `None` with an estimator whose `train` takes no "
                    f"`saving_listeners` ({type(estimator).__name__})."
                )
        _check_arguments(locals())
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(
                f"`clock` must implement learnrun.clock.Clock (time, monotonic, sleep), got {clock!r}."
            )

        self._estimator = estimator
        self._train_input_fn = train_input_fn
        self._eval_input_fn = eval_input_fn
        self._eval_metrics = eval_metrics
        self._train_steps = train_steps
        self._eval_steps = eval_steps
        self._train_monitors = _hook_list("train_monitors", train_monitors or [])
        self._eval_hooks = _hook_list("eval_hooks", eval_hooks or [])
        self._local_eval_frequency = local_eval_frequency
        self._eval_delay_secs = eval_delay_secs
        self._continuous_eval_throttle_secs = continuous_eval_throttle_secs
        self._min_eval_frequency = 1 if min_eval_frequency is None else min_eval_frequency
        self._delay_workers_by_global_step = delay_workers_by_global_step
        self._checkpoint_and_export = checkpoint_and_export
        self._saving_listeners = (
            None if saving_listeners is None else _hook_list("saving_listeners", saving_listeners)
        )
        self._check_interval_secs = check_interval_secs
        self._clock = get_clock(clock)
        self._export_strategies: tuple[Any, ...] = self._validate_export_strategies(
            export_strategies
        )
        tspi = train_steps_per_iteration
        if tspi is not None and (not isinstance(tspi, int) or isinstance(tspi, bool) or tspi <= 0):
            raise ValueError(
                f"`train_steps_per_iteration` must be an integer. Got {tspi!r}; pass a positive int or None."
            )
        self._train_steps_per_iteration = train_steps_per_iteration

    # -- properties ---------------------------------------------------------------------------
    @property
    def estimator(self) -> Any:
        """The estimator this experiment trains and evaluates."""
        return self._estimator

    @property
    def eval_metrics(self) -> Any:
        return self._eval_metrics

    @property
    def train_steps(self) -> Any:
        return self._train_steps

    @property
    def eval_steps(self) -> Any:
        return self._eval_steps

    @property
    def export_strategies(self) -> tuple[Any, ...]:
        """The export strategies, as a tuple (change them with ``reset_export_strategies``)."""
        return self._export_strategies

    @property
    def min_eval_frequency(self) -> int:
        return self._min_eval_frequency

    # -- small public API ---------------------------------------------------------------------
    def extend_train_hooks(self, additional_hooks: Iterable[Any]) -> None:
        """Append hooks to the experiment's own copy of the train hooks (the caller's list is untouched)."""
        self._train_monitors.extend(_hook_list("additional_hooks", additional_hooks))

    def reset_export_strategies(self, new_export_strategies: Any = None) -> tuple[Any, ...]:
        """Replace the export strategies and return the previous ones (a tuple)."""
        old = self._export_strategies
        self._export_strategies = self._validate_export_strategies(new_export_strategies)
        return old

    @staticmethod
    def _validate_export_strategies(value: Any) -> tuple[Any, ...]:
        if not value:
            return ()
        if _is_export_strategy(value):
            return (value,)
        try:
            items = list(value)
        except TypeError:
            raise ValueError(_EXPORT_STRATEGIES_ERROR % (value,)) from None
        for item in items:
            if not _is_export_strategy(item):
                raise ValueError(_EXPORT_STRATEGIES_ERROR % (item,))
        return tuple(items)

    # -- schedules ----------------------------------------------------------------------------
    def train(self, delay_secs: float | None = None) -> Any:
        """Train until ``train_steps`` (absolute); returns what ``estimator.train`` returns.

        Trace: check the cluster settings (a distributed ``cloud`` config must name
        cluster_spec, task_type, master and task: ``ValueError`` otherwise); then, when
        ``delay_secs`` is None, delay this worker: ``min(60, 5 * task_id)`` seconds, or with
        ``delay_workers_by_global_step`` a ``GlobalStepWaiterHook`` until global step
        ``int(8000 * log(task_id + 1))``; sleep ``delay_secs``; call
        ``estimator.train(max_steps=train_steps, hooks=train_monitors (+ waiter),
        saving_listeners=saving_listeners)``.
        """
        _check_secs("delay_secs", delay_secs)
        start = self._clock.time()
        config = self._estimator.config
        cluster_spec = getattr(config, "cluster_spec", None)
        master = getattr(config, "master", None)
        if hasattr(config, "environment"):
            environment = config.environment
            if cluster_spec and master and environment == "local":
                logger.warning(
                    "ClusterSpec and master are provided, but environment is set to 'local'. "
                    "Set environment to 'cloud' if you intend to use the distributed runtime."
                )
            if environment not in ("local", "google") and cluster_spec and master:
                # Nothing to start: the estimator's distribution strategy joins the cluster
                # when training begins. Fail early on a config that cannot join it.
                self._check_server_config()
        elif cluster_spec and master:
            raise ValueError(
                "For distributed runtime, Experiment class only works with learnrun.RunConfig "
                f"for now, but provided {type(config)}"
            )

        extra_hooks: list[Any] = []
        if delay_secs is None:
            task_id = getattr(config, "task_id", 0) or 0
            if self._delay_workers_by_global_step:
                from learnrun.estimator.hooks import GlobalStepWaiterHook

                wait_until_step = int(8000.0 * math.log(task_id + 1))
                extra_hooks.append(
                    _make_hook(
                        GlobalStepWaiterHook, wait_until_step=wait_until_step, clock=self._clock
                    )
                )
                delay_secs = 0
            else:
                delay_secs = min(60, task_id * 5)

        if delay_secs > 0:
            elapsed = self._clock.time() - start
            logger.info("Waiting %d secs before starting training.", delay_secs - elapsed)
            self._clock.sleep(delay_secs)

        return self._call_train(
            input_fn=self._train_input_fn,
            max_steps=self._train_steps,
            hooks=self._train_monitors + extra_hooks,
            saving_listeners=self._saving_listeners,
        )

    def evaluate(self, delay_secs: float | None = None, name: str | None = None) -> Any:
        """Wait ``delay_secs`` (default ``eval_delay_secs``), evaluate the latest checkpoint once.

        Results go to ``model_dir/eval_<name or "one_pass">``; nothing is exported.
        """
        if delay_secs is None:
            delay_secs = self._eval_delay_secs
        _check_secs("delay_secs", delay_secs)
        if delay_secs:
            logger.info("Waiting %d secs before starting eval.", delay_secs)
            self._clock.sleep(delay_secs)
        return self._evaluate_on(self._eval_input_fn, name or "one_pass")

    def train_and_evaluate(self) -> tuple[Any, Any]:
        """Train with in-training validation, then evaluate and export; ``(eval_result, exports)``.

        With ``checkpoint_and_export`` (and checkpoints on in the config) a
        ``CheckpointSaverHook`` evaluates and exports every checkpoint it saves and the last of
        those results is returned. Otherwise a ``ValidationMonitor`` evaluates new checkpoints
        at most every ``min_eval_frequency`` steps / ``check_interval_secs`` seconds (none when
        it is 0), and after training the latest checkpoint is evaluated (``model_dir/eval``)
        and exported. The experiment's own train hooks are left as they were.
        """
        saved_monitors = self._train_monitors
        self._train_monitors = list(saved_monitors)
        try:
            config = self._estimator.config
            save_secs = getattr(config, "save_checkpoints_secs", None)
            save_steps = getattr(config, "save_checkpoints_steps", None)
            listener = None
            if self._checkpoint_and_export and (save_secs or save_steps):
                from learnrun.estimator.hooks import CheckpointSaverHook

                listener = _eval_and_export_listener_class()(
                    eval_fn=functools.partial(self._evaluate_on, self._eval_input_fn),
                    export_fn=self._maybe_export,
                    latest_checkpoint_fn=self._latest_checkpoint,
                )
                self._train_monitors.append(
                    _make_hook(
                        CheckpointSaverHook,
                        checkpoint_dir=self._estimator.model_dir,
                        save_secs=None if save_steps else save_secs,
                        save_steps=save_steps,
                        listeners=[listener],
                        clock=self._clock,
                    )
                )
            elif self._min_eval_frequency:
                from learnrun.hooks import ValidationMonitor

                self._train_monitors.append(
                    _make_hook(
                        ValidationMonitor,
                        input_fn=self._eval_input_fn,
                        eval_steps=self._eval_steps,
                        every_n_steps=self._min_eval_frequency,
                        check_interval_secs=self._check_interval_secs,
                        name=None,
                        hooks=self._eval_hooks,
                        clock=self._clock,
                    )
                )
            self.train(delay_secs=0)
        finally:
            self._train_monitors = saved_monitors

        if listener is not None:
            return listener.eval_result, listener.export_results
        eval_result = self._evaluate_on(self._eval_input_fn, None)
        return eval_result, self._maybe_export(eval_result)

    def local_run(self) -> tuple[Any, Any]:
        """``train_and_evaluate`` with ``min_eval_frequency = local_eval_frequency``."""
        saved = self._min_eval_frequency
        self._min_eval_frequency = self._local_eval_frequency
        try:
            return self.train_and_evaluate()
        finally:
            self._min_eval_frequency = saved

    def test(self) -> Any:
        """Smoke test: train 1 step, evaluate 1 batch (``eval_one_pass``), export; returns the result."""
        self._call_train(
            input_fn=self._train_input_fn,
            steps=1,
            hooks=self._train_monitors,
            saving_listeners=self._saving_listeners,
        )
        eval_result = self._call_evaluate(
            input_fn=self._eval_input_fn, steps=1, metrics=self._eval_metrics, name="one_pass"
        )
        self._maybe_export(eval_result)
        return eval_result

    def serve(self) -> Any:
        """Parameter-server schedule: hold this ps task's parameter shard until training ends.

        Requires a cluster config (``ValueError`` otherwise); delegates to
        ``learnrun.distributed.serve(experiment)``, which blocks until the trainers finish.
        """
        self._check_server_config()
        from learnrun.distributed import serve

        return serve(self)

    def run_std_server(self) -> Any:
        """Alias of :meth:`serve` (TF's name for the parameter-server schedule)."""
        return self.serve()

    # -- helpers ------------------------------------------------------------------------------
    def _check_server_config(self) -> None:
        config = self._estimator.config
        if not (
            getattr(config, "cluster_spec", None)
            and getattr(config, "task_type", None)
            and getattr(config, "master", None)
            and getattr(config, "task_id", None) is not None
        ):
            raise ValueError(
                _SERVER_CONFIG_ERROR
                + " Got cluster_spec={!r}, task_type={!r}, master={!r}, task_id={!r}.".format(
                    getattr(config, "cluster_spec", None),
                    getattr(config, "task_type", None),
                    getattr(config, "master", None),
                    getattr(config, "task_id", None),
                )
            )

    def _latest_checkpoint(self) -> str | None:
        return latest_checkpoint_of(self._estimator)

    def _evaluate_on(
        self, input_fn: Any, name: str | None, checkpoint_path: str | None = None
    ) -> Any:
        """Evaluate with the experiment's ``eval_steps``, ``eval_metrics`` and ``eval_hooks``."""
        return self._call_evaluate(
            input_fn=input_fn,
            steps=self._eval_steps,
            metrics=self._eval_metrics,
            name=name,
            checkpoint_path=checkpoint_path,
            hooks=self._eval_hooks,
        )

    def _call_train(
        self,
        *,
        input_fn: Any,
        steps: int | None = None,
        hooks: list[Any] | None = None,
        max_steps: int | None = None,
        saving_listeners: list[Any] | None = None,
    ) -> Any:
        kwargs: dict[str, Any] = {
            "input_fn": input_fn,
            "steps": steps,
            "max_steps": max_steps,
            "hooks": hooks,
        }
        if saving_listeners is not None or _accepts(self._estimator.train, "saving_listeners"):
            kwargs["saving_listeners"] = saving_listeners
        return self._estimator.train(**kwargs)

    def _call_evaluate(
        self,
        *,
        input_fn: Any,
        steps: int | None,
        metrics: Any,
        name: str | None,
        checkpoint_path: str | None = None,
        hooks: list[Any] | None = None,
    ) -> Any:
        kwargs: dict[str, Any] = {
            "input_fn": input_fn,
            "steps": steps,
            "name": name,
            "checkpoint_path": checkpoint_path,
            "hooks": hooks,
        }
        if metrics is not None:
            kwargs["metrics"] = metrics
        return self._estimator.evaluate(**kwargs)

    def _maybe_export(self, eval_result: Any, checkpoint_path: str | None = None) -> list[Any]:
        export_dir_base = os.path.join(self._estimator.model_dir, "export")
        return [
            strategy.export(
                self._estimator,
                os.path.join(export_dir_base, strategy.name),
                checkpoint_path=checkpoint_path,
                eval_result=eval_result,
            )
            for strategy in self._export_strategies
        ]
