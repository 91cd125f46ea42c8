"""Unit tests of learnrun.hooks.progress: the progress bar on a terminal, log lines otherwise."""

from __future__ import annotations

import io
import logging

from learnrun.clock import FakeClock
from learnrun.hooks import SessionRunHook
from learnrun.hooks.progress import ProgressHook
from tests.helpers.hooks import FakeSession, run_steps


def test_progress_hook_plain_log_lines(caplog):
    hook = ProgressHook(every_n_iter=2, use_bar=False, clock=FakeClock())
    with caplog.at_level(logging.INFO, logger="learnrun"):
        run_steps([hook], FakeSession(), 4, loss=0.25)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["loss = 0.25, step = 1", "loss = 0.25, step = 3 (0.000 sec)"]


def test_progress_hook_bar_on_a_terminal_stream():
    import io

    stream = io.StringIO()
    hook = ProgressHook(every_n_iter=2, stream=stream, use_bar=True, clock=FakeClock())
    session = FakeSession()
    session.last_step = 4
    run_steps([hook], session, 4, loss=0.25)
    assert "4/4" in stream.getvalue() and "loss=0.25" in stream.getvalue()
    assert hook.lines == 2


class _Terminal(io.StringIO):
    def isatty(self):
        return True


class _TickingHook(SessionRunHook):
    """Advances the fake clock by 0.5 s per step, as a real step would take time."""

    def __init__(self, clock):
        self.clock = clock

    def after_run(self, run_context, run_values):
        self.clock.advance(0.5)


def test_progress_hook_chooses_bar_or_lines_from_isatty(caplog):
    terminal = _Terminal()
    session = FakeSession()
    session.last_step = 4
    with caplog.at_level(logging.INFO, logger="learnrun"):
        run_steps([ProgressHook(every_n_iter=2, stream=terminal, clock=FakeClock())], session, 4,
                  loss=0.5)
    assert "4/4" in terminal.getvalue() and "loss=0.5" in terminal.getvalue()
    assert not [r for r in caplog.records if r.getMessage().startswith("loss =")]

    caplog.clear()
    plain, clock = io.StringIO(), FakeClock()
    with caplog.at_level(logging.INFO, logger="learnrun"):
        run_steps([_TickingHook(clock), ProgressHook(every_n_iter=2, stream=plain, clock=clock)],
                  FakeSession(), 5, loss=0.5)
    assert plain.getvalue() == ""  # no bar on a log file
    assert [r.getMessage() for r in caplog.records] == [
        "loss = 0.5, step = 1", "loss = 0.5, step = 3 (1.000 sec)", "loss = 0.5, step = 5 (1.000 sec)"]
