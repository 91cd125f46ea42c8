"""Graceful preemption: SIGTERM (and a first Ctrl-C) stop training after saving a checkpoint.

Execution trace (the whole loop is in :mod:`learnrun.estimator.train_loop`)::

    with PreemptionGuard() as guard:     # installs handlers (main thread only), keeps the old ones
        ... loop: at every step boundary, before fetching the next batch:
            if strategy.should_stop(stop requested or guard.triggered): break
        if preempted: save a checkpoint (chief), run end hooks,
            raise PreemptedError            # SystemExit(143): the scheduler requeues the job
    # the old handlers are back, whatever happened; but while PreemptedError propagates, a
    # SIGTERM that would kill the process (SIG_DFL) raises PreemptedError again: a storm of
    # SIGTERMs still ends in exit 143, never in death by signal after the checkpoint is saved

The handler only records the signal (no I/O, no allocation-heavy work): a signal may arrive
in the middle of a step, and saving inside the handler would write a half-updated model. A
second Ctrl-C (SIGINT) raises ``KeyboardInterrupt`` at once, as usual.

DataLoader workers: a scheduler usually signals the whole process group, and a worker killed
by SIGTERM makes the main process raise "DataLoader worker ... exited unexpectedly" before the
save can happen. ``Estimator.train`` therefore protects the ``torch.utils.data.DataLoader`` that
``input_fn`` returns (see :func:`protect_dataloader`): when it has ``num_workers > 0`` its
``worker_init_fn`` is wrapped so that workers first ignore SIGTERM and SIGINT, then run the
user's own ``worker_init_fn`` (if any). When training stops (preempted or not) the loop shuts
the workers down explicitly. An iterable that merely wraps a DataLoader is not seen: pass
:func:`worker_init_fn` yourself (or call it from yours)::

    DataLoader(dataset, num_workers=4, worker_init_fn=learnrun.estimator.preemption.worker_init_fn)
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from torch.utils.data import DataLoader

from learnrun.errors import PreemptedError

logger = logging.getLogger(__name__)


def worker_init_fn(worker_id: int = 0) -> None:
    """Make a DataLoader worker ignore SIGTERM and SIGINT (the main process handles them)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class ProtectedWorkerInit:
    """A picklable ``worker_init_fn``: :func:`worker_init_fn`, then the user's own (if any)."""

    def __init__(self, user_fn: Any = None) -> None:
        self.user_fn = user_fn

    def __call__(self, worker_id: int) -> None:
        worker_init_fn(worker_id)
        if self.user_fn is not None:
            self.user_fn(worker_id)


def protect_dataloader(iterable: Any) -> bool:
    """Make the workers of a multi-process ``DataLoader`` ignore SIGTERM/SIGINT; True if changed.

    Anything other than a ``torch.utils.data.DataLoader`` with ``num_workers > 0`` is left
    alone, and so is a loader whose ``worker_init_fn`` is already :func:`worker_init_fn` or
    wraps it. Workers already running (``persistent_workers`` after a first epoch) keep their
    handlers: the wrapper applies to workers started from now on.
    """
    if not isinstance(iterable, DataLoader) or not iterable.num_workers:
        return False
    current = iterable.worker_init_fn
    if current is worker_init_fn or isinstance(current, ProtectedWorkerInit):
        return False
    iterable.worker_init_fn = ProtectedWorkerInit(current)
    logger.debug("DataLoader workers will ignore SIGTERM/SIGINT (learnrun preemption).")
    return True


def shutdown_workers(iterator: Any) -> None:
    """Stop the worker processes of a DataLoader iterator now (no-op for other iterators)."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if callable(shutdown):
        try:
            shutdown()
        except Exception as exc:  # noqa: BLE001 - best effort while leaving the loop
            logger.warning("Could not shut down DataLoader workers cleanly: %s", exc)


def _exit_preempted(signum, frame) -> None:
    """SIGTERM after a preemption checkpoint: exit 143 again (``PreemptedError``)."""
    raise PreemptedError("SIGTERM again after the preemption checkpoint was saved.")


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

    def __exit__(self, exc_type, exc, tb) -> None:
        for signum, old in self._old.items():
            if old is None or old == signal.SIG_DFL or old is _exit_preempted:
                old = signal.SIG_DFL
                if signum == signal.SIGTERM and isinstance(exc, PreemptedError):
                    # the process is on its way out with 143 (the checkpoint is saved): a
                    # further SIGTERM of the same storm must not turn that into death by
                    # signal mid-exit, so it raises the same exit instead
                    old = _exit_preempted
            signal.signal(signum, old)
        self._old.clear()

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "none"
