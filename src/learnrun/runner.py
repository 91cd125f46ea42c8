"""``learnrun.run`` and ``learnrun.tune``: build an Experiment and run the schedule of this task.

``run`` is TF's ``learn_runner.run`` for PyTorch. The user writes one experiment function and
``run`` decides from the process's role in the cluster what to do with the Experiment it
returns::

    def experiment_fn(run_config, hparams):
        estimator = learnrun.Estimator(model_fn, config=run_config, params=hparams)
        return learnrun.Experiment(estimator, train_input_fn, eval_input_fn, train_steps=1000)

    learnrun.run(experiment_fn, run_config=learnrun.RunConfig(model_dir="/tmp/m"),
                 hparams=learnrun.HParams(learning_rate=0.1))

Execution trace of ``run`` (each check raises before anything runs):

1. ``output_dir`` and ``run_config`` both given, or both missing -> ``ValueError``.
2. ``experiment_fn`` not callable -> ``TypeError``.
3. ``run_config`` given: the run_config and hparams are checked (types, ``model_dir``), the
   config's ``uid()`` is remembered, ``experiment_fn(run_config, hparams)`` is called
   positionally, and the Estimator inside the Experiment must use that very configuration
   (same ``uid()``), else ``RuntimeError``.
   ``output_dir`` given: ``experiment_fn(output_dir=output_dir)`` is called by keyword;
   ``hparams`` must then be None.
4. The schedule is ``schedule`` or the default for this task (see :func:`default_schedule`).
5. The Experiment's method of that name is called with no arguments; its value is returned.
"""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Callable
from typing import Any

from learnrun.config.run_config import RunConfig
from learnrun.experiment import Experiment
from learnrun.hparams import HParams

logger = logging.getLogger(__name__)

__all__ = ["run", "tune", "Tuner", "default_schedule", "available_schedules"]


def _check_experiment(experiment: Any) -> None:
    if not isinstance(experiment, Experiment):
        raise TypeError(
            f"Experiment builder did not return an Experiment instance, got {type(experiment)} instead."
        )


def _wrapped_experiment_fn_with_uid_check(
    experiment_fn: Callable[..., Any], require_hparams: bool = False
) -> Callable[[Any, Any], Any]:
    """Wrap ``experiment_fn`` so that the Estimator must use the run_config it was given."""

    def wrapped_experiment_fn(run_config: Any, hparams: Any) -> Any:
        if not isinstance(run_config, RunConfig):
            raise ValueError(
                f"`run_config` must be `learnrun.RunConfig` instance; got {type(run_config).__name__} ({run_config!r})."
            )
        if not run_config.model_dir:
            raise ValueError(
                "Must specify a model directory `model_dir` in `run_config`. Got model_dir="
                f"{run_config.model_dir!r}; use RunConfig(model_dir=...) or TF_CONFIG's model_dir."
            )
        if hparams is not None and not isinstance(hparams, HParams):
            raise ValueError(
                f"`hparams` must be `HParams` instance; got {type(hparams).__name__} ({hparams!r}). Build it with "
                "learnrun.HParams(name=value, ...)."
            )
        if require_hparams and hparams is None:
            raise ValueError(
                "`hparams` cannot be `None`. The tuner must pass the trial's learnrun.HParams."
            )

        expected_uid = run_config.uid()
        experiment = experiment_fn(run_config, hparams)
        _check_experiment(experiment)

        config = getattr(experiment.estimator, "config", None)
        if not hasattr(config, "uid"):
            raise RuntimeError(
                "Pass `run_config` argument of the `experiment_fn` to the Estimator in "
                "Experiment. It is likely a different `RunConfig` is passed to `Estimator` or "
                "the `config` constructor argument in `Estimator` is not set."
            )
        actual_uid = config.uid()
        if actual_uid != expected_uid:
            raise RuntimeError(
                "`RunConfig` instance is expected to be used by the `Estimator` inside the "
                f"`Experiment`. expected {expected_uid}, but got {actual_uid}"
            )
        return experiment

    return wrapped_experiment_fn


_DEFAULT_SCHEDULES = {
    "ps": "serve",
    "worker": "train",
    "master": "local_run",
    "chief": "local_run",
    "evaluator": "continuous_eval",
}


def default_schedule(config: RunConfig | None) -> str:
    """Return the schedule a task runs when ``run`` is given none (TF's learn_runner table).

    ====================================  ======================
    task                                  schedule
    ====================================  ======================
    not distributed (<= 1 task)           ``train_and_evaluate``
    distributed, no task type             ``ValueError``
    ``ps``                                ``serve``
    ``worker``                            ``train``
    ``master`` or ``chief``               ``local_run``
    ``evaluator``                         ``continuous_eval``
    anything else                         ``ValueError``
    ====================================  ======================
    """
    if config is None or not config.is_distributed:
        return "train_and_evaluate"
    task_type = config.task_type
    if not task_type:
        raise ValueError(
            "Must specify a schedule: the cluster has several tasks but the config has no task "
            "type (set task.type in TF_CONFIG, or pass schedule=...)."
        )
    try:
        return _DEFAULT_SCHEDULES[task_type]
    except KeyError:
        raise ValueError(
            "No default schedule for task type: {}. Pass schedule=... explicitly; default "
            "schedules exist for {}.".format(task_type, ", ".join(sorted(_DEFAULT_SCHEDULES)))
        ) from None


def available_schedules(experiment: Any) -> list[str]:
    """The public callable members of ``experiment``: the names ``schedule`` may take."""
    names = []
    for name in dir(experiment):
        if name.startswith("_"):
            continue
        try:
            value = getattr(experiment, name)
        except Exception:  # a property that fails is no schedule
            continue
        if callable(value):
            names.append(name)
    return names


def _schedule_error(experiment: Any, schedule: str, problem: str) -> str:
    """Log and return the message for a ``schedule`` that names ``problem`` (no usable method)."""
    allowed = available_schedules(experiment)
    logger.error("Schedule references %s %s", problem, schedule)
    logger.error("Allowed values for this experiment are: %s", allowed)
    return f"Schedule references {problem} {schedule}. Allowed values for this experiment are: {allowed}"


def _execute_schedule(experiment: Any, schedule: str) -> Any:
    if not hasattr(experiment, schedule):
        raise ValueError(_schedule_error(experiment, schedule, "non-existent task"))
    task = getattr(experiment, schedule)
    if not callable(task):
        raise TypeError(_schedule_error(experiment, schedule, "non-callable member"))
    return task()


def run(
    experiment_fn: Callable[..., Any],
    output_dir: str | None = None,
    schedule: str | None = None,
    run_config: Any = None,
    hparams: Any = None,
) -> Any:
    """Make an Experiment with ``experiment_fn`` and run ``schedule`` (or this task's default).

    Args:
      experiment_fn: ``experiment_fn(run_config, hparams) -> Experiment`` when ``run_config`` is
        given (the Estimator must be built with that ``run_config``), or
        ``experiment_fn(output_dir=...) -> Experiment`` when ``output_dir`` is given.
      output_dir: the model directory, for the ``output_dir`` form only.
      schedule: the name of the Experiment method to call with no arguments (``train``,
        ``evaluate``, ``train_and_evaluate``, ``local_run``, ``continuous_eval``, ``serve``,
        ... or a method of your own subclass). None picks the default of this task
        (:func:`default_schedule`).
      run_config: a ``learnrun.RunConfig`` with ``model_dir`` set.
      hparams: a ``learnrun.HParams`` or None, passed to ``experiment_fn`` unchanged.

    Returns:
      Whatever the schedule returns (``train_and_evaluate``: ``(eval_result, export_results)``).

    Raises:
      ValueError, TypeError, RuntimeError: see the module docstring for the order of checks.
    """
    if output_dir is not None and run_config is not None:
        raise ValueError("Cannot provide both `output_dir` and `run_config`")
    if output_dir is None and run_config is None:
        raise ValueError("Must set value for `output_dir` or `run_config`")
    if not callable(experiment_fn):
        raise TypeError(f'Experiment builder "{experiment_fn}" is not callable.')
    if schedule is not None and not isinstance(schedule, str):
        raise TypeError(
            f"`schedule` must be the name of an Experiment method such as 'train' (a str) or "
            f"None for this task's default, got {schedule!r}."
        )

    if run_config is not None:
        wrapped = _wrapped_experiment_fn_with_uid_check(experiment_fn)
        experiment = wrapped(run_config=run_config, hparams=hparams)
    else:
        if not output_dir:
            raise ValueError("Must specify an output directory")
        if not isinstance(output_dir, (str, os.PathLike)):
            raise TypeError(
                f"`output_dir` must be a path (str or os.PathLike), got {output_dir!r}."
            )
        if hparams is not None:
            raise ValueError("Must set `hparams` as None for `experiment_fn` with `output_dir`.")
        experiment = experiment_fn(output_dir=output_dir)
        _check_experiment(experiment)

    config = run_config or getattr(experiment.estimator, "config", None)
    schedule = schedule or default_schedule(config)
    return _execute_schedule(experiment, schedule)


class Tuner(abc.ABC):
    """A hyper-parameter tuning service, driven by :func:`tune`.

    Subclasses implement both methods (``learnrun.tuning.OptunaTuner`` is one).
    """

    @abc.abstractmethod
    def next_trial(self) -> bool:
        """Ask the tuning service for a new trial; True if one was assigned.

        May raise RuntimeError when the tuner is not initialised correctly.
        """
        raise NotImplementedError("Calling an abstract method.")

    @abc.abstractmethod
    def run_experiment(self, experiment_fn: Callable[..., Any]) -> Any:
        """Run one trial: build the trial's RunConfig and HParams, call
        ``experiment_fn(run_config=..., hparams=...)``, run the Experiment for this task and
        report the measure to the tuning service.
        """
        raise NotImplementedError("Calling an abstract method.")


def tune(experiment_fn: Callable[..., Any], tuner: Any) -> None:
    """Run trials while ``tuner.next_trial()`` is True; returns None.

    Each trial calls ``tuner.run_experiment(wrapped_fn)``, where ``wrapped_fn(run_config,
    hparams)`` checks its arguments (``hparams`` may not be None), calls ``experiment_fn`` and
    checks that the Estimator uses the given ``run_config``, as :func:`run` does.
    """
    if not callable(experiment_fn):
        raise TypeError(f'Experiment builder "{experiment_fn}" is not callable.')
    for method in ("next_trial", "run_experiment"):
        if not callable(getattr(tuner, method, None)):
            raise TypeError(
                "`tuner` must implement learnrun.Tuner (next_trial() and "
                f"run_experiment(experiment_fn)); {tuner!r} has no callable {method}."
            )
    wrapped = _wrapped_experiment_fn_with_uid_check(experiment_fn, require_hparams=True)
    while tuner.next_trial():
        tuner.run_experiment(wrapped)
