"""Experiment's evaluation schedules: continuous evaluation and evaluate-and-export on save.

``_ContinuousSchedules`` holds the ``continuous_eval``, ``continuous_eval_on_train_data`` and
``continuous_train_and_eval`` schedules of :class:`learnrun.Experiment` (a mixin: it uses the
Experiment's attributes and ``_call_train`` / ``_evaluate_on`` / ``_maybe_export`` /
``_latest_checkpoint``). ``_eval_and_export_listener_class()`` is the saving listener of
``train_and_evaluate(checkpoint_and_export=True)``. Every sleep and clock read goes through the
Experiment's ``clock``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("learnrun.experiment")

_WARNING_INTERVAL_SECS = 600


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    """True when ``fn`` can be called with keyword ``name`` (declared or via ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    if name in params:
        return params[name].kind is not inspect.Parameter.POSITIONAL_ONLY
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


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
    from learnrun.estimator.checkpoint import latest_checkpoint

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
    if "clock" in kwargs and not _accepts(cls, "clock"):
        kwargs.pop("clock")
    return cls(**kwargs)


def _standardize_predicate_fn(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Return ``fn`` callable as ``fn(eval_result, checkpoint_path=...)``."""
    if _accepts(fn, "checkpoint_path"):
        return fn

    def _predicate(eval_result: Any, checkpoint_path: Any = None) -> Any:
        return fn(eval_result)

    return _predicate


class _EvalAndExportListenerMixin:
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


_LISTENER_CLASS: list[type] = []


def _eval_and_export_listener_class() -> type:
    """The listener class, a ``CheckpointSaverListener`` (built on first use: lazy import)."""
    if not _LISTENER_CLASS:
        from learnrun.estimator.hooks import CheckpointSaverListener

        _LISTENER_CLASS.append(
            type(
                "_EvalAndExportListener",
                (_EvalAndExportListenerMixin, CheckpointSaverListener),
                {"__module__": __name__},
            )
        )
    return _LISTENER_CLASS[0]


class _ContinuousSchedules:
    """The continuous schedules of ``Experiment`` (see the module docstring)."""

    _estimator: Any
    _train_steps: int | None
    _train_input_fn: Any
    _eval_input_fn: Any
    _train_monitors: list[Any]
    _saving_listeners: list[Any] | None
    _eval_delay_secs: float
    _continuous_eval_throttle_secs: float
    _train_steps_per_iteration: int | None
    _clock: Any
    _call_train: Callable[..., Any]
    _evaluate_on: Callable[..., Any]
    _maybe_export: Callable[..., list[Any]]
    _latest_checkpoint: Callable[[], str | None]

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
        once an evaluation's ``global_step >= train_steps``; evaluate the latest checkpoint
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
        last_warning_time = 0.0
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
                now = self._clock.time()
                if now - last_warning_time > _WARNING_INTERVAL_SECS:
                    logger.warning(error_msg)
                    last_warning_time = now
            else:
                eval_result = self._evaluate_on(input_fn, name, checkpoint_path=latest) or {}
                if export:
                    self._maybe_export(eval_result, checkpoint_path=latest)
                last_warning_time = 0.0
                previous_path = latest

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
