"""Graceful preemption: SIGTERM (and a first Ctrl-C) stop training after saving a checkpoint.

Execution trace::

    with PreemptionGuard() as guard:     # installs handlers (main thread only), keeps the old ones
        ... loop: at every step boundary, before fetching the next batch:
            if strategy.should_stop(local_stop or guard.triggered):
                save a checkpoint (chief), run end hooks,
                raise PreemptedError            # SystemExit(143): the scheduler requeues the job
    # the old handlers are back, whatever happened

The handler only records the signal (no I/O, no allocation-heavy work): roughly a third of
signals arrive mid-step, so saving inside the handler would write a half-updated model. A
second Ctrl-C (SIGINT) raises ``KeyboardInterrupt`` at once, as usual.

DataLoader workers: a scheduler usually signals the whole process group, and a worker killed
by SIGTERM makes the main process raise "DataLoader worker ... killed by signal" before the
save can happen. Pass :func:`worker_init_fn` (or call it from yours) so workers ignore SIGTERM
and SIGINT; they are then shut down by the main process when the loader is released::

    DataLoader(dataset, num_workers=4, worker_init_fn=learnrun.estimator.preemption.worker_init_fn)
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

logger = logging.getLogger("learnrun")


def worker_init_fn(worker_id: int = 0) -> None:
    """Make a DataLoader worker ignore SIGTERM and SIGINT (the main process handles them)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class PreemptionGuard:
    """Context manager recording SIGTERM / first SIGINT in ``triggered`` during training.

    Outside the main thread (where Python cannot install handlers) it does nothing and
    ``triggered`` stays False. ``enabled=False`` disables it explicitly.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.triggered = False
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.triggered:
            raise KeyboardInterrupt
        self.triggered = True
        self.signum = signum

    def __enter__(self) -> PreemptionGuard:
        if not self.enabled or threading.current_thread() is not threading.main_thread():
            return self
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[signum] = signal.signal(signum, self._handle)
            except (ValueError, OSError):  # pragma: no cover - embedded interpreters
                pass
        return self

    def __exit__(self, *exc) -> None:
        for signum, old in self._old.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
        self._old.clear()

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "none"
