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
and the evaluate-and-export listener live in ``learnrun.experiment``.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
from collections.abc import Callable, Iterable
from typing import Any

from learnrun.clock import Clock, ThrottledWarning, get_clock
from learnrun.distributed import serve
from learnrun.hooks import (
    CheckpointSaverHook,
    CheckpointSaverListener,
    GlobalStepWaiterHook,
    ValidationMonitor,
)
from learnrun.model_dir.checkpoints import latest_checkpoint, training_ended_with
from learnrun.model_dir.storage import join
from learnrun.signatures import accepts

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


def _check_count(name: str, value: Any, minimum: int, hint: str = "") -> None:
    """Raise ValueError unless ``value`` is None or an int (not bool) >= ``minimum``."""
    if value is None or (
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    ):
        return
    raise ValueError(f"`{name}` must be None or an integer >= {minimum}, got {value!r}.{hint}")


def _check_secs(name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` is None or a number of seconds >= 0."""
    if value is None or (
        isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    ):
        return
    raise ValueError(f"`{name}` must be a number of seconds >= 0 (or None), got {value!r}.")


def _check_arguments(args: dict[str, Any]) -> None:
    """Check Experiment's constructor arguments (``args``: its ``locals()``) before storing them."""
    for name in ("train_input_fn", "eval_input_fn"):
        if not callable(args[name]):
            raise TypeError(f"`{name}` must be callable, given: {args[name]!r}.")
    _check_count("train_steps", args["train_steps"], 0)
    _check_count("eval_steps", args["eval_steps"], 1, " None evaluates until the input ends.")
    _check_count("local_eval_frequency", args["local_eval_frequency"], 0)
    _check_count("min_eval_frequency", args["min_eval_frequency"], 0, " 0: only a final eval.")
    for name in ("eval_delay_secs", "continuous_eval_throttle_secs", "check_interval_secs"):
        _check_secs(name, args[name])


def latest_checkpoint_of(estimator: Any) -> str | None:
    """``estimator.latest_checkpoint()`` when it has one, else the newest in its ``model_dir``."""
    latest = getattr(estimator, "latest_checkpoint", None)
    if callable(latest):
        return latest()
    return latest_checkpoint(estimator.model_dir)


def _hook_list(name: str, value: Any) -> list[Any]:
    """``list(value)`` for an iterable of hooks/listeners; TypeError naming ``name`` otherwise."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(
            f"`{name}` must be a list of hooks (or None), got {value!r}. Wrap a single hook in "
            "a list: [hook]."
        )
    return list(value)


def _make_hook(cls: type, **kwargs: Any) -> Any:
    """Build ``cls(**kwargs)``, passing ``clock`` only when the class accepts it."""
    if "clock" in kwargs and not accepts(cls, "clock"):
        kwargs.pop("clock")
    return cls(**kwargs)


def _standardize_predicate_fn(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Return ``fn`` callable as ``fn(eval_result, checkpoint_path=...)``."""
    if accepts(fn, "checkpoint_path"):
        return fn

    def _predicate(eval_result: Any, checkpoint_path: Any = None) -> Any:
        return fn(eval_result)

    return _predicate


class _EvalAndExportListener(CheckpointSaverListener):
    """Saving listener of ``train_and_evaluate(checkpoint_and_export=True)``.

    After every checkpoint save: evaluate the new latest checkpoint (eval dir
    ``eval_intermediate_export``) and run the export strategies on it; skips (with a warning)
    when nothing is saved yet or the latest checkpoint was already handled. Never stops training.
    """

    def __init__(
        self,
        eval_fn: Callable[..., Any],
        export_fn: Callable[..., Any],
        latest_checkpoint_fn: Callable[[], str | None],
    ) -> None:
        self._eval_fn = eval_fn
        self._export_fn = export_fn
        self._latest_checkpoint_fn = latest_checkpoint_fn
        self._latest_path: str | None = None
        self._eval_result: Any = None
        self._export_results: Any = None

    def begin(self) -> None:
        pass

    def before_save(self, session: Any, global_step_value: int) -> None:
        pass

    def after_save(self, session: Any, global_step_value: int) -> None:
        latest = self._latest_checkpoint_fn()
        if not latest:
            logger.warning("Skipping evaluation and export since model has not been saved yet.")
        elif latest == self._latest_path:
            logger.warning("Skipping evaluation due to same latest checkpoint %s.", latest)
        else:
            self._eval_result = self._eval_fn(name="intermediate_export", checkpoint_path=latest)
            self._export_results = self._export_fn(self._eval_result, checkpoint_path=latest)
            self._latest_path = latest

    def end(self, session: Any, global_step_value: int) -> None:
        pass

    @property
    def eval_result(self) -> Any:
        return self._eval_result

    @property
    def export_results(self) -> Any:
        return self._export_results


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


class Experiment:
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
            if eval_metrics is not None and not accepts(estimator.evaluate, "metrics"):
                raise ValueError(
                    "`eval_metrics` must be `None` with an estimator whose `evaluate` takes no "
                    f"`metrics` ({type(estimator).__name__}). Use `eval_metric_ops` in `learnrun.EstimatorSpec` instead."
                )
            if saving_listeners is not None and not accepts(estimator.train, "saving_listeners"):
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
        cluster_spec = config.cluster_spec
        master = config.master
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
            task_id = config.task_id
            if self._delay_workers_by_global_step:
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
            save_secs = config.save_checkpoints_secs
            save_steps = config.save_checkpoints_steps
            listener = None
            if self._checkpoint_and_export and (save_secs or save_steps):
                listener = _EvalAndExportListener(
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
        return serve(self)

    def run_std_server(self) -> Any:
        """Alias of :meth:`serve` (TF's name for the parameter-server schedule)."""
        return self.serve()

    # -- helpers ------------------------------------------------------------------------------
    def _check_server_config(self) -> None:
        config = self._estimator.config
        if not (
            config.cluster_spec
            and config.task_type
            and config.master
            and config.task_id is not None
        ):
            raise ValueError(
                _SERVER_CONFIG_ERROR
                + f" Got cluster_spec={config.cluster_spec!r}, task_type={config.task_type!r}, master={config.master!r}, task_id={config.task_id!r}."
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
        if saving_listeners is not None or accepts(self._estimator.train, "saving_listeners"):
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
        export_dir_base = join(self._estimator.model_dir, "export")
        return [
            strategy.export(
                self._estimator,
                join(export_dir_base, strategy.name),
                checkpoint_path=checkpoint_path,
                eval_result=eval_result,
            )
            for strategy in self._export_strategies
        ]

    # ------------------------------------------------------------ continuous schedules

    def continuous_eval(
        self,
        delay_secs: float | None = None,
        throttle_delay_secs: float | None = None,
        evaluate_checkpoint_only_once: bool = True,
        continuous_eval_predicate_fn: Callable[..., Any] | None = None,
        name: str = "continuous",
    ) -> None:
        """Evaluate (and export) each new checkpoint until training ends or the predicate says stop.

        Trace: wait ``delay_secs`` (default ``eval_delay_secs``); then loop while the predicate
        ``fn(eval_result[, checkpoint_path=...])`` is true (first called with ``None``): return
        once an evaluation's ``global_step >= train_steps`` or once the checkpoint with which
        training ended (recorded by the chief in the model directory, also when
        ``train_steps`` is None or the input ran out) is evaluated; evaluate the latest checkpoint
        unless there is none or it was evaluated already (then the result is ``{}`` and a
        warning is logged at most every 600 s); export it; sleep what is left of
        ``throttle_delay_secs`` (default ``continuous_eval_throttle_secs``).
        """
        return self._continuous_eval(
            self._eval_input_fn,
            name=name,
            delay_secs=delay_secs,
            throttle_delay_secs=throttle_delay_secs,
            evaluate_checkpoint_only_once=evaluate_checkpoint_only_once,
            continuous_eval_predicate_fn=continuous_eval_predicate_fn,
        )

    def continuous_eval_on_train_data(
        self,
        delay_secs: float | None = None,
        throttle_delay_secs: float | None = None,
        continuous_eval_predicate_fn: Callable[..., Any] | None = None,
        name: str = "continuous_on_train_data",
    ) -> None:
        """``continuous_eval`` on ``train_input_fn``, each checkpoint once, without exports."""
        return self._continuous_eval(
            self._train_input_fn,
            name=name,
            delay_secs=delay_secs,
            throttle_delay_secs=throttle_delay_secs,
            continuous_eval_predicate_fn=continuous_eval_predicate_fn,
            export=False,
        )

    def _continuous_eval(
        self,
        input_fn: Any,
        name: str,
        delay_secs: float | None,
        throttle_delay_secs: float | None,
        evaluate_checkpoint_only_once: bool = True,
        continuous_eval_predicate_fn: Callable[..., Any] | None = None,
        export: bool = True,
    ) -> None:
        predicate = self._check_predicate(continuous_eval_predicate_fn)
        if delay_secs is None:
            delay_secs = self._eval_delay_secs
        if throttle_delay_secs is None:
            throttle_delay_secs = self._continuous_eval_throttle_secs
        _check_secs("delay_secs", delay_secs)
        _check_secs("throttle_delay_secs", throttle_delay_secs)
        if delay_secs:
            logger.info("Waiting %f secs before starting eval.", delay_secs)
            self._clock.sleep(delay_secs)

        recorded_result = getattr(self._estimator, "recorded_eval_result", None)
        previous_path: str | None = None
        eval_result: Any = None
        warning = ThrottledWarning(self._clock)
        while predicate is None or predicate(eval_result, checkpoint_path=previous_path):
            if self._has_training_stopped(eval_result):
                logger.info(
                    "Exiting continuous eval, global_step=%s >= train_step=%s",
                    eval_result.get("global_step"),
                    self._train_steps,
                )
                return None
            start = self._clock.time()
            latest = self._latest_checkpoint()
            error_msg = None
            if not latest:
                error_msg = (
                    "Estimator is not fitted yet. Will start an evaluation when a checkpoint "
                    "is ready."
                )
            elif evaluate_checkpoint_only_once and latest == previous_path:
                error_msg = "No new checkpoint ready for evaluation."
            recorded = None
            if not error_msg and evaluate_checkpoint_only_once and callable(recorded_result):
                # evaluated before this process started (a restarted evaluator): take the
                # recorded result, so stopping at train_steps still works, but neither
                # evaluate nor export the checkpoint again
                recorded = recorded_result(latest, name)

            if recorded is not None:
                logger.info("Checkpoint %s was evaluated before (recorded in the eval results); "
                            "not evaluating or exporting it again.", latest)
                eval_result = recorded
                previous_path = latest
            elif error_msg:
                eval_result = {}
                warning.warn(logger, error_msg)
            else:
                eval_result = self._evaluate_on(input_fn, name, checkpoint_path=latest) or {}
                if export:
                    self._maybe_export(eval_result, checkpoint_path=latest)
                warning.reset()
                previous_path = latest
            if training_ended_with(self._estimator.model_dir, previous_path, self._train_steps):
                logger.info("Exiting continuous eval: training ended with %s, which is "
                            "evaluated.", previous_path)
                return None

            duration = self._clock.time() - start
            if duration < throttle_delay_secs:
                difference = throttle_delay_secs - duration
                logger.info("Waiting %f secs before starting next eval run.", difference)
                self._clock.sleep(difference)
        return None

    def continuous_train_and_eval(
        self, continuous_eval_predicate_fn: Callable[..., Any] | None = None
    ) -> tuple[Any, Any]:
        """Alternate training ``train_steps_per_iteration`` steps and evaluating, until done.

        Steps per round: ``train_steps_per_iteration``, else ``int(train_steps / 10)``, else
        1000. Stops once an evaluation reaches ``train_steps`` or the predicate
        ``fn(eval_result[, checkpoint_path=...])`` is false (checked before every round).
        Returns the last ``(eval_result, export_results)`` (``(None, None)`` without rounds).
        """
        predicate = self._check_predicate(continuous_eval_predicate_fn)
        steps_per_iter = 1000
        if self._train_steps_per_iteration is not None:
            steps_per_iter = self._train_steps_per_iteration
        elif self._train_steps is not None:
            steps_per_iter = int(self._train_steps / 10)

        eval_result = export_results = latest = None
        while predicate is None or predicate(
            eval_result, checkpoint_path=(latest if eval_result else None)
        ):
            if self._has_training_stopped(eval_result):
                logger.info("Stop training model as max steps reached")
                break
            self._call_train(
                input_fn=self._train_input_fn,
                steps=steps_per_iter,
                hooks=self._train_monitors,
                saving_listeners=self._saving_listeners,
            )
            latest = self._latest_checkpoint()
            eval_result = self._evaluate_on(self._eval_input_fn, "one_pass", checkpoint_path=latest)
            export_results = self._maybe_export(eval_result)
        return eval_result, export_results

    @staticmethod
    def _check_predicate(fn: Callable[..., Any] | None) -> Callable[..., Any] | None:
        if fn is None:
            return None
        if not callable(fn):
            raise ValueError(
                f"`continuous_eval_predicate_fn` must be a callable, or None. Got {fn!r}."
            )
        return _standardize_predicate_fn(fn)

    def _has_training_stopped(self, eval_result: Any) -> bool:
        if not eval_result:
            return False
        global_step = eval_result.get("global_step")
        return bool(global_step and self._train_steps and global_step >= self._train_steps)
