"""Training-loop hooks with TensorFlow's ``SessionRunHook`` lifecycle (public as ``learnrun.hooks``).

Execution trace of one ``Estimator.train`` call (evaluate and predict run the same trace over
their own loop, with ``mode`` set accordingly)::

    model_fn(...) -> spec; strategy.prepare(...)
    for hook in hooks: hook.begin()                     # model built, nothing restored yet
    restore latest checkpoint (weights, optimizer, RNG, input position, hook.load_state_dict)
    for hook in hooks: hook.after_create_session(session, coord=None)
    while not session.stop_requested:                   # checked at every step boundary
        batch = next(input)                             # StopIteration ends the loop normally
        ctx = RunContext(session)
        args = [hook.before_run(ctx) for hook in hooks] # SessionRunArgs name what to fetch
        forward, backward, optimizer step (global_step += 1)
        for hook in hooks: hook.after_run(ctx, RunValues(results, global_step, fetched))
        if ctx.stop_requested: stop after this step
    for hook in hooks: hook.end(session)                # e.g. the final checkpoint save

Exception semantics (as in TF's MonitoredSession): input exhaustion (``StopIteration``) or a
stop request leave the loop normally, so ``end`` runs for every hook. Any other exception raised
by the step or by a hook (``NanLossDuringTrainingError``, a ``KeyboardInterrupt``) propagates at
once: the remaining ``after_run`` calls and every ``end`` are skipped and no final checkpoint is
written, so the model directory keeps the last good checkpoint. Preemption (SIGTERM) is not an
exception inside the loop: it stops at the next boundary, saves, runs ``end``, then raises
``learnrun.errors.PreemptedError``.

Hooks that define ``state_dict()`` / ``load_state_dict(state)`` have that state saved in every
checkpoint (keyed by class name and position among hooks of that class) and restored before
``after_create_session``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

from learnrun.clock import Clock, get_clock
from learnrun.errors import NanLossDuringTrainingError

logger = logging.getLogger("learnrun")


class SessionRunArgs:
    """What a hook's ``before_run`` asks of the coming step.

    ``fetches``: a name or list of names (``loss``, ``outputs`` keys, ``global_step``,
    ``learning_rate``, ...); their host values (a device sync) appear in
    ``run_values.fetched`` for that step only.
    """

    def __init__(self, fetches=None) -> None:
        if fetches is None:
            fetches = ()
        elif isinstance(fetches, str):
            fetches = (fetches,)
        self.fetches = tuple(fetches)

    def __repr__(self) -> str:
        return f"SessionRunArgs(fetches={self.fetches!r})"


class RunValues:
    """What ``after_run`` receives about the step that just ran.

    ``results``: ``loss`` (a detached tensor still on the device: reading it syncs),
    ``outputs``, ``features``, ``labels``. ``global_step``: after this step's update.
    ``fetched``: host values of the names requested through ``SessionRunArgs``.
    """

    def __init__(self, results: dict, global_step: int, fetched: dict | None = None) -> None:
        self.results = results
        self.global_step = global_step
        self.fetched = fetched or {}


class RunContext:
    """Passed to ``before_run``/``after_run``: the session, and a way to stop after this step."""

    def __init__(self, session) -> None:
        self.session = session
        self._stop_requested = False

    def request_stop(self) -> None:
        """Stop the loop after the current step (``end`` hooks still run)."""
        self._stop_requested = True
        self.session.request_stop()

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested


class SessionRunHook:
    """Base class of training/evaluation hooks; override what you need (see module trace).

    ``session`` is the loop's ``RunSession``: ``estimator, module, optimizer, scheduler,
    model_dir, mode, config, is_chief, global_step, last_step, shared_global_step(),
    save_checkpoint(), request_stop()``.
    """

    def begin(self) -> None:
        """Called once before the loop; the model is built, nothing is restored yet."""

    def after_create_session(self, session, coord=None) -> None:
        """Called once after the checkpoint (if any) was restored."""

    def before_run(self, run_context: RunContext) -> SessionRunArgs | None:
        """Called before each step; may return ``SessionRunArgs`` naming values to fetch."""
        return None

    def after_run(self, run_context: RunContext, run_values: RunValues) -> None:
        """Called after each step; ``run_context.request_stop()`` ends the loop."""

    def end(self, session) -> None:
        """Called once when the loop ends normally (not on exceptions)."""


Hook = SessionRunHook


class SecondOrStepTimer:
    """Trigger every ``every_secs`` seconds (through ``clock``) or every ``every_steps`` steps."""

    def __init__(self, every_secs: float | None = None, every_steps: int | None = None,
                 clock: Clock | None = None) -> None:
        if every_secs is None and every_steps is None:
            raise ValueError("Either every_steps or every_secs should be provided.")
        if every_secs is not None and every_steps is not None:
            raise ValueError("Can not provide both every_steps and every_secs.")
        self._every_secs = every_secs
        self._every_steps = every_steps
        self._clock = get_clock(clock)
        self.reset()

    def reset(self) -> None:
        self._last_time: float | None = None
        self._last_step: int | None = None

    def should_trigger_for_step(self, step: int) -> bool:
        """True when the interval has passed since the last trigger (always true the first time)."""
        if self._last_step is None:
            return True
        if step == self._last_step:
            return False
        if self._every_secs is not None:
            return self._clock.monotonic() >= self._last_time + self._every_secs
        return step >= self._last_step + self._every_steps

    def update_last_triggered_step(self, step: int) -> tuple[float | None, int | None]:
        """Record a trigger at ``step``; return ``(elapsed_secs, elapsed_steps)`` since the last."""
        now = self._clock.monotonic()
        if self._last_time is None:
            elapsed = (None, None)
        else:
            elapsed = (now - self._last_time, step - self._last_step)
        self._last_time, self._last_step = now, step
        return elapsed

    def last_triggered_step(self) -> int | None:
        return self._last_step


def to_python(value: Any) -> Any:
    """A host value: a Python number for one-element tensors, a nested list otherwise."""
    if hasattr(value, "detach") and hasattr(value, "numel"):
        value = value.detach()
        return value.item() if value.numel() == 1 else value.cpu().tolist()
    return value

__all__ = [
    "CheckpointSaverHook",
    "CheckpointSaverListener",
    "GlobalStepWaiterHook",
    "Hook",
    "LoggingTensorHook",
    "NanTensorHook",
    "RunContext",
    "RunValues",
    "SecondOrStepTimer",
    "SessionRunArgs",
    "SessionRunHook",
    "StepCounterHook",
    "StopAtStepHook",
    "SummarySaverHook",
]


class StopAtStepHook(SessionRunHook):
    """Request stop at a global step: ``num_steps`` more steps, or absolute ``last_step``."""

    def __init__(self, num_steps: int | None = None, last_step: int | None = None) -> None:
        if num_steps is None and last_step is None:
            raise ValueError("One of num_steps or last_step must be specified.")
        if num_steps is not None and last_step is not None:
            raise ValueError("Only one of num_steps or last_step can be specified.")
        self._num_steps = num_steps
        self._last_step = last_step

    @property
    def last_step(self) -> int | None:
        return self._last_step

    def after_create_session(self, session, coord=None) -> None:
        if self._last_step is None:
            self._last_step = session.global_step + self._num_steps
        if session.global_step >= self._last_step:
            session.request_stop()

    def after_run(self, run_context, run_values) -> None:
        if run_values.global_step >= self._last_step:
            run_context.request_stop()


class LoggingTensorHook(SessionRunHook):
    """Log named values every N steps or seconds: ``loss = 0.25, step = 100 (0.120 sec)``.

    ``tensors`` is a list of names or a ``{tag: name}`` dict. A name is a key of the step's
    results (``loss``, ``outputs``, ``features``, ``labels``), ``global_step``,
    ``learning_rate``, or a key of ``outputs`` when the module returns a dict. Reading a value
    synchronises with the device, which is why this runs every N steps only.
    """

    def __init__(self, tensors, every_n_iter: int | None = None, every_n_secs: float | None = None,
                 at_end: bool = False, formatter=None, clock: Clock | None = None) -> None:
        if isinstance(tensors, str):
            tensors = [tensors]
        if isinstance(tensors, Mapping):
            self._tags = dict(tensors)
        else:
            self._tags = {name: name for name in tensors}
        if not at_end and (every_n_iter is None) == (every_n_secs is None):
            raise ValueError(
                "either at_end and/or exactly one of every_n_iter and every_n_secs must be "
                f"provided; got every_n_iter={every_n_iter!r}, every_n_secs={every_n_secs!r}."
            )
        if every_n_iter is not None and every_n_iter <= 0:
            raise ValueError(f"invalid every_n_iter={every_n_iter}.")
        self._timer = (SecondOrStepTimer(every_secs=every_n_secs, every_steps=every_n_iter, clock=clock)
                       if not (every_n_iter is None and every_n_secs is None) else None)
        self._at_end = at_end
        self._formatter = formatter
        self._last_values: dict[str, Any] | None = None
        self._iter = 0

    def begin(self) -> None:
        if self._timer is not None:
            self._timer.reset()
        self._iter = 0

    def after_run(self, run_context, run_values) -> None:
        triggered = self._timer is not None and self._timer.should_trigger_for_step(self._iter)
        if triggered or self._at_end:
            values = {tag: _lookup(name, run_context.session, run_values)
                      for tag, name in self._tags.items()}
            self._last_values = values
            if triggered:
                elapsed, _ = self._timer.update_last_triggered_step(self._iter)
                self._log(values, elapsed)
        self._iter += 1

    def end(self, session) -> None:
        if self._at_end and self._last_values is not None:
            self._log(self._last_values, None)

    def _log(self, values: dict[str, Any], elapsed: float | None) -> None:
        if self._formatter is not None:
            logger.info(self._formatter(values))
            return
        text = ", ".join(f"{tag} = {_fmt(value)}" for tag, value in values.items())
        if elapsed is not None:
            text += f" ({elapsed:.3f} sec)"
        logger.info(text)


class NanTensorHook(SessionRunHook):
    """Stop (or raise ``NanLossDuringTrainingError``) when the loss is NaN or infinite.

    The finiteness check accumulates on the device and is read back every ``every_n_iter``
    steps (default 1: every step) and at ``end``, so ``every_n_iter > 1`` avoids a host sync
    per step at the price of noticing a NaN up to ``every_n_iter - 1`` steps late.
    """

    def __init__(self, loss_tensor: str = "loss", fail_on_nan_loss: bool = True,
                 every_n_iter: int = 1) -> None:
        if every_n_iter <= 0:
            raise ValueError(f"NanTensorHook every_n_iter must be > 0, got {every_n_iter!r}.")
        self._name = loss_tensor
        self._fail = fail_on_nan_loss
        self._every = int(every_n_iter)
        self._bad = None
        self._count = 0
        self._first_step: int | None = None

    def after_run(self, run_context, run_values) -> None:
        import torch

        loss = run_values.results.get(self._name)
        if loss is None:
            return
        bad = ~torch.isfinite(torch.as_tensor(loss).detach()).all()
        self._bad = bad if self._bad is None else (self._bad | bad)
        if self._first_step is None:
            self._first_step = run_values.global_step
        self._count += 1
        if self._count % self._every == 0:
            self._check(run_context.session, run_values.global_step, run_context)

    def end(self, session) -> None:
        if self._bad is not None:
            self._check(session, session.global_step, None)

    def _check(self, session, step: int, run_context) -> None:
        bad, first = bool(self._bad), self._first_step
        self._bad, self._first_step = None, None
        if not bad:
            return
        where = f"at step {step}" if first == step else f"between steps {first} and {step}"
        message = f"NaN loss during training ({self._name} was NaN or infinite {where})."
        if self._fail:
            logger.error(message)
            raise NanLossDuringTrainingError(message)
        logger.warning("%s Requesting stop.", message)
        (run_context or session).request_stop()


class StepCounterHook(SessionRunHook):
    """Log and record ``global_step/sec`` every N steps or seconds (chief writes a summary)."""

    def __init__(self, every_n_steps: int | None = 100, every_n_secs: float | None = None,
                 output_dir: str | None = None, clock: Clock | None = None) -> None:
        if (every_n_steps is None) == (every_n_secs is None):
            raise ValueError("exactly one of every_n_steps and every_n_secs should be provided.")
        self._timer = SecondOrStepTimer(every_steps=every_n_steps, every_secs=every_n_secs, clock=clock)
        self._output_dir = output_dir
        self.last_rate: float | None = None

    def after_create_session(self, session, coord=None) -> None:
        self._timer.reset()
        if self._output_dir is None and session.is_chief:
            self._output_dir = session.model_dir

    def after_run(self, run_context, run_values) -> None:
        step = run_values.global_step
        if not self._timer.should_trigger_for_step(step):
            return
        elapsed_secs, elapsed_steps = self._timer.update_last_triggered_step(step)
        if elapsed_secs is None or elapsed_secs <= 0:
            return
        self.last_rate = elapsed_steps / elapsed_secs
        logger.info("global_step/sec: %g", self.last_rate)
        if self._output_dir is not None and run_context.session.is_chief:
            from learnrun.estimator import summary

            summary.write_scalars(self._output_dir, step, {"global_step/sec": self.last_rate})


class SummarySaverHook(SessionRunHook):
    """Write ``loss`` and ``learning_rate`` (and ``scalar_fn``'s values) as TensorBoard scalars.

    ``scalar_fn(run_context, run_values) -> dict[str, float]`` adds custom scalars. Exactly one
    of ``save_steps`` and ``save_secs``. Only the chief writes.
    """

    def __init__(self, save_steps: int | None = None, save_secs: float | None = None,
                 output_dir: str | None = None, scalars: Iterable[str] = ("loss", "learning_rate"),
                 scalar_fn=None, clock: Clock | None = None) -> None:
        if (save_steps is None) == (save_secs is None):
            raise ValueError("Exactly one of save_steps and save_secs should be provided.")
        self._timer = SecondOrStepTimer(every_steps=save_steps, every_secs=save_secs, clock=clock)
        self._output_dir = output_dir
        self._scalars = tuple(scalars)
        self._scalar_fn = scalar_fn

    def after_create_session(self, session, coord=None) -> None:
        self._timer.reset()
        if self._output_dir is None:
            self._output_dir = session.model_dir

    def after_run(self, run_context, run_values) -> None:
        step = run_values.global_step
        if not run_context.session.is_chief or not self._timer.should_trigger_for_step(step):
            return
        self._timer.update_last_triggered_step(step)
        values: dict[str, float] = {}
        for name in self._scalars:
            if name == "learning_rate":
                values.update(_learning_rates(run_context.session))
            else:
                value = _lookup(name, run_context.session, run_values)
                if value is not None:
                    values[name] = float(value)
        if self._scalar_fn is not None:
            values.update({k: float(v) for k, v in self._scalar_fn(run_context, run_values).items()})
        if values:
            from learnrun.estimator import summary

            summary.write_scalars(self._output_dir, step, values)


class CheckpointSaverListener:
    """Callbacks around every checkpoint save of a ``CheckpointSaverHook``.

    Trace: ``begin()`` when training begins; for each save ``before_save(session, step)``,
    the atomic write, ``after_save(session, step)`` (returning True requests stop);
    ``end(session, step)`` after the final save.
    """

    def begin(self) -> None:
        """Called once before the loop."""

    def before_save(self, session, global_step_value: int) -> None:
        """Called before each checkpoint is written."""

    def after_save(self, session, global_step_value: int) -> bool | None:
        """Called after each checkpoint is committed; return True to stop training."""

    def end(self, session, global_step_value: int) -> None:
        """Called once at the end of training, after the final save."""


class CheckpointSaverHook(SessionRunHook):
    """Save a checkpoint every ``save_steps`` steps or ``save_secs`` seconds, and at the end.

    Like TF 1.15, it also saves when the session is created (the state at the starting step;
    skipped when that step is already the latest checkpoint, the listeners still being told),
    so the first ``after_save`` a listener sees is for the starting step. Saves only on the chief.
    """

    def __init__(self, checkpoint_dir: str, save_secs: float | None = None,
                 save_steps: int | None = None, saver=None, checkpoint_basename: str = "model.ckpt",
                 scaffold=None, listeners=None, clock: Clock | None = None) -> None:
        if (save_steps is None) == (save_secs is None):
            raise ValueError("Exactly one of save_steps and save_secs should be provided.")
        if save_steps is not None and save_steps <= 0:
            raise ValueError(f"save_steps must be > 0, got {save_steps!r}.")
        self._checkpoint_dir = str(checkpoint_dir)
        self._timer = SecondOrStepTimer(every_steps=save_steps, every_secs=save_secs, clock=clock)
        self._listeners = list(listeners or [])
        for listener in self._listeners:
            if not isinstance(listener, CheckpointSaverListener):
                raise TypeError(
                    "listeners must be CheckpointSaverListener instances, got "
                    f"{type(listener).__name__}: {listener!r}."
                )
        self._steps_per_run = 1
        self.last_saved_step: int | None = None

    @property
    def checkpoint_dir(self) -> str:
        return self._checkpoint_dir

    def add_listeners(self, listeners) -> None:
        """Attach more listeners (the Estimator's ``saving_listeners``)."""
        for listener in listeners or ():
            if not isinstance(listener, CheckpointSaverListener):
                raise TypeError(
                    "saving_listeners must be CheckpointSaverListener instances, got "
                    f"{type(listener).__name__}: {listener!r}."
                )
            self._listeners.append(listener)

    def begin(self) -> None:
        self._timer.reset()
        for listener in self._listeners:
            listener.begin()

    def after_create_session(self, session, coord=None) -> None:
        step = session.global_step
        if session.is_chief and self._save(session, step, skip_if_exists=True):
            session.request_stop()
        self._timer.update_last_triggered_step(step)

    def after_run(self, run_context, run_values) -> None:
        step = run_values.global_step
        if self._timer.should_trigger_for_step(step):
            self._timer.update_last_triggered_step(step)
            if run_context.session.is_chief and self._save(run_context.session, step):
                run_context.request_stop()

    def end(self, session) -> None:
        step = session.global_step
        if session.is_chief and step != self.last_saved_step:
            self._save(session, step)
        for listener in self._listeners:
            listener.end(session, step)

    def save_now(self, session) -> str | None:
        """Save at the current step (no-op when already saved); used on preemption."""
        step = session.global_step
        if step != self.last_saved_step and session.is_chief:
            self._save(session, step)
        return session.last_checkpoint_path

    def _save(self, session, step: int, skip_if_exists: bool = False) -> bool:
        for listener in self._listeners:
            listener.before_save(session, step)
        if not (skip_if_exists and session.checkpoint_step(self._checkpoint_dir) == step):
            logger.info("Saving checkpoints for %d into %s.", step, self._checkpoint_dir)
            session.write_checkpoint(self._checkpoint_dir)
        self.last_saved_step = step
        stop = False
        for listener in self._listeners:
            if listener.after_save(session, step):
                logger.info("A CheckpointSaverListener requested that training be stopped. "
                            "listener: %s", listener)
                stop = True
        return stop


class GlobalStepWaiterHook(SessionRunHook):
    """Delay the first step until the cluster's global step reaches ``wait_until_step``.

    Polls ``session.shared_global_step()`` every ``poll_secs`` through ``clock``; with
    ``timeout_secs`` set, raises ``TimeoutError`` instead of waiting forever.
    """

    def __init__(self, wait_until_step: int, clock: Clock | None = None, poll_secs: float = 0.5,
                 timeout_secs: float | None = None) -> None:
        self._wait_until_step = int(wait_until_step)
        self._clock = get_clock(clock)
        self._poll_secs = poll_secs
        self._timeout_secs = timeout_secs
        self._done = False

    def begin(self) -> None:
        self._done = False

    def before_run(self, run_context):
        if self._done:
            return None
        if self._wait_until_step <= 0:
            self._done = True
            return None
        logger.info("Waiting for global step %d before starting training.", self._wait_until_step)
        start = self._clock.monotonic()
        last_log = start
        while True:
            current = int(run_context.session.shared_global_step())
            if current >= self._wait_until_step:
                self._done = True
                return None
            now = self._clock.monotonic()
            if self._timeout_secs is not None and now - start > self._timeout_secs:
                raise TimeoutError(
                    f"GlobalStepWaiterHook waited {now - start:.0f} s for global step "
                    f"{self._wait_until_step}; the cluster is at step {current}. Is the chief "
                    "training? Raise timeout_secs or check the chief's log."
                )
            if now - last_log >= 60:
                logger.info("Waiting for global step %d before starting training. Current step "
                            "is %d.", self._wait_until_step, current)
                last_log = now
            self._clock.sleep(self._poll_secs)


def _lookup(name: str, session, run_values) -> Any:
    if name == "global_step":
        return run_values.global_step
    if name == "learning_rate":
        rates = _learning_rates(session)
        return next(iter(rates.values())) if rates else None
    results = run_values.results
    if name in results:
        return to_python(results[name])
    outputs = results.get("outputs")
    if isinstance(outputs, Mapping) and name in outputs:
        return to_python(outputs[name])
    raise KeyError(
        f"LoggingTensorHook: unknown name {name!r}. Known: global_step, learning_rate, "
        f"{', '.join(sorted(results))}"
        + (f", and outputs keys {sorted(outputs)}" if isinstance(outputs, Mapping) else "") + "."
    )


def _learning_rates(session) -> dict[str, float]:
    optimizer = getattr(session, "optimizer", None)
    if optimizer is None:
        return {}
    groups = optimizer.param_groups
    if len(groups) == 1:
        return {"learning_rate": float(groups[0]["lr"])}
    return {f"learning_rate/{i}": float(g["lr"]) for i, g in enumerate(groups)}


def _fmt(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g}"
    return str(value)


_EVAL_DRIVEN = {
    "EarlyStoppingHook", "ValidationMonitor", "make_early_stopping_hook", "read_eval_metrics",
    "stop_if_higher_hook", "stop_if_lower_hook", "stop_if_no_decrease_hook",
    "stop_if_no_increase_hook",
}


def __getattr__(name: str) -> Any:
    # The evaluation-driven hooks live in ``learnrun.hooks`` (they call Estimator.evaluate and
    # read eval results); they are reachable from here too.
    if name in _EVAL_DRIVEN:
        import learnrun.hooks

        return getattr(learnrun.hooks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
