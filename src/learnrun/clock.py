"""Injectable time source: every sleep and clock read in learnrun goes through a ``Clock``.

Tests pass a :class:`FakeClock`, whose ``sleep`` advances virtual time instantly, so no test
sleeps for real.
"""

from __future__ import annotations

import logging
import time as _time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What learnrun needs of a clock."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (used for timestamps and throttles)."""

    def monotonic(self) -> float:
        """Monotonic seconds (used for durations and timeouts)."""

    def sleep(self, secs: float) -> None:
        """Block for ``secs`` seconds (non-positive values return at once)."""


class SystemClock:
    """The real clock (``time`` and ``monotonic`` are the C functions themselves: the hooks
    read the clock at every step)."""

    time = staticmethod(_time.time)
    monotonic = staticmethod(_time.monotonic)

    def sleep(self, secs: float) -> None:
        if secs > 0:
            _time.sleep(secs)


class FakeClock:
    """A virtual clock for tests: ``sleep`` advances time and records the call.

    ``sleeps`` lists every requested sleep; ``on_sleep`` (optional) is called after each, so a
    test can make something happen "while" the code sleeps.
    """

    def __init__(self, start: float = 1_500_000_000.0, on_sleep=None) -> None:
        self._now = float(start)
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def advance(self, secs: float) -> None:
        self._now += float(secs)

    def sleep(self, secs: float) -> None:
        self.sleeps.append(secs)
        if secs > 0:
            self._now += float(secs)
        if self.on_sleep is not None:
            self.on_sleep(secs)


SYSTEM_CLOCK = SystemClock()


def get_clock(clock: Clock | None) -> Clock:
    """Return ``clock`` or the system clock when it is None."""
    return SYSTEM_CLOCK if clock is None else clock


class ThrottledWarning:
    """Log a repeated warning at most once per ``interval_secs`` of ``clock`` time.

    ``warn(logger, message)`` logs when the previous warning is older than the interval;
    ``reset()`` (after progress) lets the next warning through at once.
    """

    def __init__(self, clock: Clock, interval_secs: float = 600.0) -> None:
        self._clock = clock
        self._interval = interval_secs
        self._last = 0.0

    def warn(self, logger: logging.Logger, message: str) -> None:
        now = self._clock.time()
        if now - self._last > self._interval:
            logger.warning(message)
            self._last = now

    def reset(self) -> None:
        self._last = 0.0
