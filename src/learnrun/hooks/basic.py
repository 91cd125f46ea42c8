"""The standard training hooks: stop at a step, log values, NaN guard, step rate, summaries.

``StopAtStepHook``, ``LoggingTensorHook``, ``NanTensorHook``, ``StepCounterHook``,
``SummarySaverHook`` and ``GlobalStepWaiterHook``, with TF's arguments and error texts.
Re-exported by :mod:`learnrun.hooks`; import from there.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from learnrun.clock import Clock, get_clock
from learnrun.errors import NanLossDuringTrainingError
from learnrun.hooks.base import (
    SecondOrStepTimer,
    SessionRunHook,
    fetch_value,
    learning_rates,
    skips_idle_steps,
)
from learnrun.model_dir import summaries

logger = logging.getLogger(__name__)

__all__ = [
    "GlobalStepWaiterHook", "LoggingTensorHook", "NanTensorHook", "StepCounterHook",
    "StopAtStepHook", "SummarySaverHook",
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
        self.idle_until_step = self._last_step
        if session.global_step >= self._last_step:
            session.request_stop()

    @skips_idle_steps
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
            values = {tag: fetch_value(name, run_context.session, run_values)
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

    Every step's loss is kept as it is (a reference: no device op, no host sync) and the kept
    losses are checked together, with one host sync, every ``every_n_iter`` steps (default 1:
    every step), when :meth:`flush` is called (the Estimator's session calls it before every
    checkpoint save and before training stops) and at ``end``. A non-finite loss is reported
    with its own step, at most ``every_n_iter - 1`` steps late. At most ``MAX_KEPT`` losses
    are kept between checks.

    ``on_nan``: called with the message instead of raising or requesting stop; the Estimator
    passes its ``RunConfig(on_nan_loss=...)`` policy this way (applied at the next step boundary).
    """

    #: the most losses kept between two checks (a larger ``every_n_iter`` checks this often)
    MAX_KEPT = 1024

    def __init__(self, loss_tensor: str = "loss", fail_on_nan_loss: bool = True,
                 every_n_iter: int = 1, *, on_nan=None) -> None:
        if every_n_iter <= 0:
            raise ValueError(f"NanTensorHook every_n_iter must be > 0, got {every_n_iter!r}.")
        self._name = loss_tensor
        self._fail = fail_on_nan_loss
        self._every = min(int(every_n_iter), self.MAX_KEPT)
        self._kept: list[tuple[int, Any]] = []  # (global step, loss) not checked yet
        self._on_nan = on_nan

    def after_run(self, run_context, run_values) -> None:
        loss = run_values.results.get(self._name)
        if loss is None:
            return
        self._kept.append((run_values.global_step, loss))
        if len(self._kept) >= self._every:
            self._check(run_context.session, run_context)

    def flush(self, session) -> None:
        """Check the losses kept so far now (before a checkpoint save or the end)."""
        if self._kept:
            self._check(session, None)

    def end(self, session) -> None:
        self.flush(session)

    def _check(self, session, run_context) -> None:
        kept, self._kept = self._kept, []
        step = first_non_finite(kept)
        if step is None:
            return
        message = nan_loss_message(self._name, step)
        if self._on_nan is not None:
            self._on_nan(message)
            return
        if self._fail:
            logger.error(message)
            raise NanLossDuringTrainingError(message)
        logger.warning("%s Requesting stop.", message)
        (run_context or session).request_stop()


def nan_loss_message(name: str, step: int) -> str:
    """The report of a non-finite loss ``name`` at global step ``step``."""
    return f"NaN loss during training ({name} was NaN or infinite at step {step})."


def first_non_finite(kept: list[tuple[int, Any]]) -> int | None:
    """The step of the first NaN or infinite value among ``(step, loss)`` pairs, else None.

    Python floats (the training loop keeps CPU losses as their values) are summed: a NaN or
    an infinity makes the sum non-finite, and only then is each one looked at. Losses on an
    accelerator are checked together: a stack, one ``isfinite`` and one host sync for the
    whole list. On the CPU, where reading a value syncs nothing, each value is read (three
    times cheaper than the stack for a hundred losses). Anything else (non-scalar or complex
    tensors) is checked with ``isfinite`` one by one.
    """
    import torch

    first = kept[0][1] if kept else None
    if type(first) is float:
        try:
            if math.isfinite(sum(loss for _, loss in kept)):
                return None
        except (TypeError, ValueError, RuntimeError):  # not all numbers: one by one below
            pass
    with torch.no_grad():  # no graph, so no per-loss detach either
        if len(kept) > 1 and isinstance(first, torch.Tensor) and first.device.type != "cpu":
            values = [loss if isinstance(loss, torch.Tensor) else torch.as_tensor(loss) for _, loss in kept]
            try:
                finite = torch.isfinite(torch.stack(values))
            except RuntimeError:  # several devices or shapes: one at a time below
                pass
            else:
                if bool(finite.all()):
                    return None
                return kept[int((~finite.reshape(len(values), -1).all(1)).nonzero()[0, 0])][0]
        for step, loss in kept:
            try:
                finite = math.isfinite(loss.item() if isinstance(loss, torch.Tensor) else loss)
            except (RuntimeError, TypeError, ValueError):  # not one real number
                finite = bool(torch.isfinite(torch.as_tensor(loss)).all())
            if not finite:
                return step
    return None


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
        self.idle_until_due(self._timer)
        if self._output_dir is None and session.is_chief:
            self._output_dir = session.model_dir

    @skips_idle_steps
    def after_run(self, run_context, run_values) -> None:
        step = run_values.global_step
        if not self._timer.should_trigger_for_step(step):
            return
        elapsed_secs, elapsed_steps = self._timer.update_last_triggered_step(step)
        self.idle_until_due(self._timer)
        if elapsed_secs is None or elapsed_secs <= 0:
            return
        self.last_rate = elapsed_steps / elapsed_secs
        logger.info("global_step/sec: %g", self.last_rate)
        if self._output_dir is not None and run_context.session.is_chief:
            summaries.write_scalars(self._output_dir, step, {"global_step/sec": self.last_rate})


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
        self.idle_until_due(self._timer)
        if not session.is_chief:  # only the chief writes: elsewhere nothing to do at any step
            self.idle_until_step = sys.maxsize
        if self._output_dir is None:
            self._output_dir = session.model_dir

    @skips_idle_steps
    def after_run(self, run_context, run_values) -> None:
        step = run_values.global_step
        if not run_context.session.is_chief or not self._timer.should_trigger_for_step(step):
            return
        self._timer.update_last_triggered_step(step)
        self.idle_until_due(self._timer)
        values: dict[str, float] = {}
        for name in self._scalars:
            if name == "learning_rate":
                values.update(learning_rates(run_context.session))
            else:
                value = fetch_value(name, run_context.session, run_values)
                if value is not None:
                    values[name] = float(value)
        if self._scalar_fn is not None:
            values.update({k: float(v) for k, v in self._scalar_fn(run_context, run_values).items()})
        if values:
            summaries.write_scalars(self._output_dir, step, values)


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


def _fmt(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g}"
    return str(value)
