"""Checkpoint saving during training: ``CheckpointSaverHook`` and ``CheckpointSaverListener``.

Re-exported by :mod:`learnrun.hooks`; import from there.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from learnrun.clock import Clock
from learnrun.hooks.base import SecondOrStepTimer, SessionRunHook, skips_idle_steps

logger = logging.getLogger(__name__)

__all__ = ["CheckpointSaverHook", "CheckpointSaverListener"]


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
    With ``session.defer_saves`` (synchronous clusters) a due save is requested with
    ``session.request_save()`` and made at the next step boundary, once every trainer agreed
    (:meth:`save_requested`), for the same step.
    Before each save the session checks the losses its NaN hooks kept (``check_losses``).
    Nothing is saved (and no listener is called) while ``session.nan_message`` is set: the
    weights of a step whose loss was NaN or infinite never reach a checkpoint.

    With ``RunConfig(async_checkpoint=True)`` ``session.write_checkpoint`` returns a pending
    save instead of a path; the trace of one save is then: wait for the save in flight and run
    its ``after_save``; ``before_save``; copy the state and return to training; at the first
    step boundary after the commit (or at the next save, the end, a preemption) ``after_save``.
    Listeners thus always run after the commit, in step order, on the training thread; the
    save's error (disk full) is raised there.
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
        self._listeners = checked_listeners(listeners, "listeners")
        self._steps_per_run = 1
        self.last_saved_step: int | None = None
        self._in_flight: tuple[int, Any] | None = None

    @property
    def checkpoint_dir(self) -> str:
        return self._checkpoint_dir

    def add_listeners(self, listeners) -> None:
        """Attach more listeners (the Estimator's ``saving_listeners``)."""
        self._listeners.extend(checked_listeners(listeners, "saving_listeners"))

    def begin(self) -> None:
        self._timer.reset()
        for listener in self._listeners:
            listener.begin()

    def after_create_session(self, session, coord=None) -> None:
        step = session.global_step
        if session.is_chief and self._save(session, step, skip_if_exists=True):
            session.request_stop()
        self._timer.update_last_triggered_step(step)
        self._update_idle()

    @skips_idle_steps
    def after_run(self, run_context, run_values) -> None:
        step = run_values.global_step
        stop = False
        if self._in_flight is not None:
            stop = self._committed(run_context.session, wait=False)
            self._update_idle()
        if self._timer.should_trigger_for_step(step):
            self._timer.update_last_triggered_step(step)
            session = run_context.session
            if session.is_chief and getattr(session, "defer_saves", False):
                session.request_save()  # saved at the next step boundary: save_requested()
            elif session.is_chief and self._save(session, step):
                stop = True
            self._update_idle()
        if stop:
            run_context.request_stop()

    def _update_idle(self) -> None:
        """Idle until the timer's next due step or time, unless an asynchronous save is in
        flight (its commit is looked for at every step)."""
        if self._in_flight is None:
            self.idle_until_due(self._timer)
        else:
            self.idle_until_step, self.idle_until_time = 0, -math.inf

    def end(self, session) -> None:
        step = session.global_step
        if session.is_chief and step != self.last_saved_step:
            self._save(session, step)
        self._committed(session, wait=True)
        for listener in self._listeners:
            listener.end(session, step)

    def save_now(self, session) -> str | None:
        """Save at the current step (no-op when already saved) and wait for it; used on preemption."""
        step = session.global_step
        if step != self.last_saved_step and session.is_chief:
            self._save(session, step)
        self._committed(session, wait=True)
        return session.last_checkpoint_path

    def save_requested(self, session) -> bool:
        """Save the step a deferred request was made for (``session.defer_saves``: every
        trainer's state is gathered at a step boundary first); True when a listener requested
        stop."""
        if session.global_step == self.last_saved_step:
            return False
        return self._save(session, session.global_step)

    def restart_from(self, step: int) -> None:
        """The loop went back to checkpoint ``step`` (a NaN rollback): count from there."""
        self.last_saved_step = step
        self._timer.update_last_triggered_step(step)
        self._update_idle()

    def _save(self, session, step: int, skip_if_exists: bool = False) -> bool:
        stop = self._committed(session, wait=True)  # at most one save in flight
        check_losses = getattr(session, "check_losses", None)
        if check_losses is not None:  # losses a NanTensorHook kept unchecked: now
            check_losses()
        if getattr(session, "nan_message", None):  # never a checkpoint of non-finite weights
            logger.warning("Not saving a checkpoint at step %d: the loss was NaN or infinite.",
                           step)
            return stop
        for listener in self._listeners:
            listener.before_save(session, step)
        written = None
        if not (skip_if_exists and session.checkpoint_step(self._checkpoint_dir) == step):
            logger.info("Saving checkpoints for %d into %s.", step, self._checkpoint_dir)
            written = session.write_checkpoint(self._checkpoint_dir)
        self.last_saved_step = step
        if written is not None and callable(getattr(written, "done", None)):
            self._in_flight = (step, written)  # asynchronous: listeners run after the commit
            self._update_idle()  # its commit is looked for at every step until it comes
            return stop
        return self._after_save(session, step) or stop

    def _committed(self, session, wait: bool) -> bool:
        """Run ``after_save`` for the asynchronous save in flight once it is committed.

        ``wait``: block until it is; otherwise only look. Re-raises the save's error. Returns
        True when a listener requested stop.
        """
        if self._in_flight is None:
            return False
        step, pending = self._in_flight
        if not wait and not pending.done():
            return False
        self._in_flight = None
        pending.result()
        return self._after_save(session, step)

    def _after_save(self, session, step: int) -> bool:
        stop = False
        for listener in self._listeners:
            if listener.after_save(session, step):
                logger.info("A CheckpointSaverListener requested that training be stopped. "
                            "listener: %s", listener)
                stop = True
        return stop


def checked_listeners(listeners: Any, what: str) -> list[CheckpointSaverListener]:
    """``listeners`` as a list, each a ``CheckpointSaverListener`` (TypeError naming ``what``)."""
    checked = list(listeners or ())
    for listener in checked:
        if not isinstance(listener, CheckpointSaverListener):
            raise TypeError(
                f"{what} must be CheckpointSaverListener instances, got "
                f"{type(listener).__name__}: {listener!r}."
            )
    return checked
