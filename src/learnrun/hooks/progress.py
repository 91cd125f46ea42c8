"""Training progress: a tqdm bar on a terminal, plain log lines otherwise.

On a terminal the bar shows the global step, the steps/sec rate and the last logged loss;
elsewhere (a log file, a cluster job) ``ProgressHook`` logs TF's line
``loss = 0.25, step = 100 (0.120 sec)`` every ``every_n_iter`` steps. The loss is read from
the device only at those steps (the bar's counter needs no device sync).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from learnrun.clock import Clock
from learnrun.hooks.base import SecondOrStepTimer, SessionRunHook, skips_idle_steps, to_python

logger = logging.getLogger(__name__)


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # closed stream
        return False


class ProgressHook(SessionRunHook):
    """Show a progress bar (terminal) or log ``loss = ..., step = ... (... sec)`` lines.

    Args:
      every_n_iter: how often the loss is read and shown or logged (``log_step_count_steps``).
      stream: where the bar goes (default ``sys.stderr``); the bar is used only when it is a
        terminal and ``use_bar`` is not False.
      use_bar: force the bar on (True) or off (False); None decides from ``stream``.
    """

    def __init__(self, every_n_iter: int = 100, stream: Any = None, use_bar: bool | None = None,
                 clock: Clock | None = None) -> None:
        if every_n_iter is None or every_n_iter <= 0:
            raise ValueError(f"ProgressHook every_n_iter must be > 0, got {every_n_iter!r}.")
        self._every = int(every_n_iter)
        self._stream = stream
        self._use_bar = use_bar
        self._clock = clock
        self._timer = SecondOrStepTimer(every_steps=self._every, clock=clock)
        self._bar = None
        self.last_loss: float | None = None
        self.lines: int = 0

    def after_create_session(self, session, coord=None) -> None:
        self._timer.reset()
        self._timer.update_last_triggered_step(session.global_step)
        stream = self._stream if self._stream is not None else sys.stderr
        use_bar = _is_terminal(stream) if self._use_bar is None else self._use_bar
        self._first = True
        if use_bar and session.is_chief:
            from tqdm.auto import tqdm

            last = session.last_step
            self._bar = tqdm(total=last, initial=session.global_step, file=stream, unit="step",
                             dynamic_ncols=True, leave=True)
        self.idle_until_step = 0  # the first step is logged; the bar counts every step

    @skips_idle_steps
    def after_run(self, run_context, run_values) -> None:
        step = run_values.global_step
        if self._bar is not None:
            self._bar.update(1)
        if not (self._first or self._timer.should_trigger_for_step(step)):
            return
        elapsed, _ = self._timer.update_last_triggered_step(step)
        loss = run_values.results.get("loss")
        self.last_loss = to_python(loss) if loss is not None else None
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{self.last_loss:.4g}" if self.last_loss is not None else "-")
        elif self._first:
            logger.info("loss = %s, step = %d", _fmt(self.last_loss), step)
        else:
            logger.info("loss = %s, step = %d (%.3f sec)", _fmt(self.last_loss), step, elapsed or 0.0)
        self._first = False
        self.lines += 1
        if self._bar is None:
            self.idle_until_step = self._timer.next_step

    def end(self, session) -> None:
        self.close()

    def close(self) -> None:
        """Close the bar (also called by the Estimator when training fails)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _fmt(value: float | None) -> str:
    return "nan" if value is None else f"{value:g}"
