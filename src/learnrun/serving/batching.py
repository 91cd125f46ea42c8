"""Dynamic batching: concurrent requests to one model version run as one call.

A :class:`Batcher` owns one worker thread. :meth:`Batcher.submit` queues a request's
converted inputs (``{name: tensor}``, first dimension = rows) and returns a
``concurrent.futures.Future``. The worker takes the oldest request, then keeps adding queued
requests while the batch stays within ``max_batch_size`` rows and ``batch_timeout_micros``
have not passed since it took the first; it concatenates them along the first dimension,
makes one call and hands each request its own rows of every output. A request larger than
``max_batch_size`` runs alone. If the call raises, every request of that batch gets the
exception. :meth:`Batcher.close` lets the queued requests finish, then stops the worker;
:meth:`Batcher.submit` after that raises :class:`BatcherClosed`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

logger = logging.getLogger(__name__)


class BatcherClosed(RuntimeError):
    """The batcher no longer takes requests (its version is unloading)."""


def rows_of(features: Mapping[str, Any]) -> int:
    """The number of rows (first dimension) of a request's inputs."""
    return int(next(iter(features.values())).shape[0])


def plan_batch(sizes: Sequence[int], max_batch_size: int) -> int:
    """How many of the queued requests (row counts ``sizes``, oldest first) form the next batch.

    Always at least one: a request over ``max_batch_size`` rows runs alone.
    """
    total, count = 0, 0
    for size in sizes:
        if count and total + size > max_batch_size:
            break
        total += size
        count += 1
        if total >= max_batch_size:
            break
    return max(count, 1) if sizes else 0


def concat_features(requests: Sequence[Mapping[str, Any]]) -> dict:
    """One batch of inputs: every request's tensors concatenated along the first dimension."""
    import torch

    if len(requests) == 1:
        return dict(requests[0])
    return {name: torch.cat([r[name] for r in requests]) for name in requests[0]}


def split_outputs(outputs: Mapping[str, Any], sizes: Sequence[int]) -> list[dict]:
    """Each request's rows of every output tensor, in request order."""
    if len(sizes) == 1:
        return [dict(outputs)]
    parts = {name: value.split(list(sizes)) for name, value in outputs.items()}
    return [{name: parts[name][i] for name in outputs} for i in range(len(sizes))]


class _Item:
    __slots__ = ("features", "rows", "future")

    def __init__(self, features: Mapping[str, Any]) -> None:
        self.features = features
        self.rows = rows_of(features)
        self.future: Future = Future()


_STOP = object()


class Batcher:
    """Batches calls of ``fn({name: tensor}) -> {name: tensor}`` (see the module docstring)."""

    def __init__(self, fn: Callable[[dict], Mapping[str, Any]], max_batch_size: int = 32,
                 batch_timeout_micros: int = 1000, name: str = "batcher",
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {batch_timeout_micros}")
        self.fn = fn
        self.max_batch_size = int(max_batch_size)
        self.timeout_s = batch_timeout_micros / 1e6
        self._monotonic = monotonic
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._close_lock = threading.Lock()
        self.batch_sizes: list[int] = []  # rows of the latest batches, for tests and logs
        self._thread = threading.Thread(target=self._run, name=f"learnrun-{name}", daemon=True)
        self._thread.start()

    def submit(self, features: Mapping[str, Any]) -> Future:
        """Queue one request; its future gives its outputs ``{name: tensor}``."""
        item = _Item(features)
        with self._close_lock:
            if self._closed:
                raise BatcherClosed("this model version is unloading")
            self._queue.put(item)
        return item.future

    def close(self, timeout: float | None = 30.0) -> None:
        """Finish the queued requests, then stop the worker."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        carry: _Item | None = None
        stopping = False
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is _STOP:
                return
            batch, rows = [first], first.rows
            deadline = self._monotonic() + self.timeout_s
            while rows < self.max_batch_size and not stopping:
                remaining = deadline - self._monotonic()
                try:
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 \
                        else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                if plan_batch([rows, nxt.rows], self.max_batch_size) < 2:
                    carry = nxt
                    break
                batch.append(nxt)
                rows += nxt.rows
            self._execute(batch)
            if stopping and carry is None:
                self._drain()
                return

    def _drain(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                self._execute([item])

    def _execute(self, batch: list[_Item]) -> None:
        sizes = [item.rows for item in batch]
        self.batch_sizes = (self.batch_sizes + [sum(sizes)])[-1000:]
        try:
            outputs = self.fn(concat_features([item.features for item in batch]))
            results = split_outputs(outputs, sizes)
        except BaseException as exc:  # noqa: BLE001 - every waiting request gets the error
            for item in batch:
                item.future.set_exception(exc)
            return
        for item, result in zip(batch, results, strict=True):
            item.future.set_result(result)
