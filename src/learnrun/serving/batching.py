"""Dynamic batching: concurrent requests to one model version run as one call.

:class:`LoopBatcher` lives on the server's asyncio event loop. It takes a request's converted
inputs (``{name: tensor}``, first dimension = rows) and gives back its own rows of every
output.

The rules: a batch starts with the oldest waiting request and closes when it holds
``max_batch_size`` rows or ``batch_timeout_micros`` have passed since its first request
came; a request that would take it over ``max_batch_size`` waits for the next batch, and a
request larger than ``max_batch_size`` runs alone. The batch's inputs are concatenated along
the first dimension, the model is called once and each request gets its rows, in order. If
the batched call (or the split of its outputs) raises, each request of the batch runs again
alone, so that one bad request fails alone; a request that fails alone gets its exception.
``close()`` lets the waiting requests finish; a submit after it raises
:class:`BatcherClosed`.

:class:`LoopBatcher` hands nothing to another thread per request: :meth:`LoopBatcher.submit`
returns a future of the loop, a ``loop.call_later`` timer closes a partial batch, and by
default the model call runs on the loop itself: no thread switch at all (on a small model a
worker thread costs more in GIL hand-offs than it gains; ``docs/benchmarks.md`` has the
figures). Given an ``executor`` (``--num_batch_threads``), each batch runs in one of its
threads instead, while the loop keeps reading requests and forming the next batch;
:class:`ThreadRunner` does the same for single requests when batching is off.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
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
    """Each request's rows of every output, in request order.

    A request's rows are numpy arrays (views of the batch's output tensors: one
    ``tensor.numpy()`` per output, then slicing, about 10x cheaper than ``tensor.split``)
    where numpy has the dtype, else tensors. An output without ``sum(sizes)`` rows first
    raises ValueError.
    """
    if len(sizes) == 1:
        return [dict(outputs)]
    total = sum(sizes)
    bounds = [0]
    for size in sizes:
        bounds.append(bounds[-1] + size)
    parts = {}
    for name, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != total:
            raise ValueError(f"output {name!r} of shape {list(value.shape)} has no batch "
                             f"dimension of {total} rows")
        try:
            array = value.numpy()
        except (TypeError, RuntimeError):  # a dtype numpy lacks (bfloat16), or not on the CPU
            parts[name] = value.split(list(sizes))
            continue
        parts[name] = [array[bounds[i]:bounds[i + 1]] for i in range(len(sizes))]
    return [{name: parts[name][i] for name in outputs} for i in range(len(sizes))]


def run_batch(fn: Callable[[dict], Mapping[str, Any]],
              requests: Sequence[Mapping[str, Any]], sizes: Sequence[int]) -> list[tuple]:
    """Call ``fn`` once on the concatenated ``requests``; ``[(outputs, None) | (None, exc)]``.

    When the batched call or the split of its outputs raises and there is more than one
    request, each request runs again alone, so that only the ones that fail alone fail.
    """
    try:
        return [(out, None) for out in split_outputs(fn(concat_features(requests)), sizes)]
    except Exception as exc:  # noqa: BLE001 - reported per request below
        if len(requests) == 1:
            return [(None, exc)]
        logger.debug("a batch of %d requests failed (%s); running them one by one",
                     len(requests), exc)
    results: list[tuple] = []
    for features in requests:
        try:
            results.append((dict(fn(dict(features))), None))
        except Exception as exc:  # noqa: BLE001 - this request's own error
            results.append((None, exc))
    return results


class _Waiting:
    __slots__ = ("features", "rows", "future")

    def __init__(self, features: Mapping[str, Any], rows: int, future: asyncio.Future) -> None:
        self.features, self.rows, self.future = features, rows, future


class LoopBatcher:
    """Batches calls of ``fn({name: tensor}) -> {name: tensor}`` on an asyncio event loop.

    See the module docstring. :meth:`submit` must be called on the loop that serves the
    requests (the first call binds it); :meth:`close` may be called from any thread.
    ``executor``: run each batch in one of its threads (default: on the loop).
    """

    def __init__(self, fn: Callable[[dict], Mapping[str, Any]], max_batch_size: int = 32,
                 batch_timeout_micros: int = 1000, name: str = "batcher",
                 executor: concurrent.futures.Executor | None = None) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {batch_timeout_micros}")
        self.fn = fn
        self.max_batch_size = int(max_batch_size)
        self.timeout_s = batch_timeout_micros / 1e6
        self.name = name
        self.executor = executor
        self.batch_sizes: list[int] = []  # rows of the latest batches, for tests and logs
        self._waiting: list[_Waiting] = []
        self._rows = 0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = 0  # requests taken into a batch and not answered yet
        self._closed = False
        self._idle = threading.Event()
        self._idle.set()

    def submit(self, features: Mapping[str, Any]) -> asyncio.Future:
        """Queue one request in the open batch; await the future for its outputs."""
        if self._closed:
            raise BatcherClosed("this model version is unloading")
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        rows = rows_of(features)
        future = loop.create_future()
        self._idle.clear()
        if self._waiting and self._rows + rows > self.max_batch_size:
            self._flush()  # this request would overfill the batch: close it first
        self._waiting.append(_Waiting(features, rows, future))
        self._rows += rows
        if self._rows >= self.max_batch_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.timeout_s, self._deadline)
        return future

    def _deadline(self) -> None:
        self._timer = None
        self._flush()

    def _flush(self) -> None:
        """Close the open batch and run it on the loop."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting, self._rows = self._waiting, [], 0
        if not batch:
            return
        self._busy += len(batch)
        sizes = [item.rows for item in batch]
        self.batch_sizes = (self.batch_sizes + [sum(sizes)])[-1000:]
        features = [item.features for item in batch]
        if self.executor is not None:
            try:
                done = self._loop.run_in_executor(self.executor, run_batch, self.fn, features, sizes)
            except RuntimeError as exc:  # the executor is shut down
                self._answer(batch, [(None, exc)] * len(batch))
                return
            done.add_done_callback(lambda f: self._answer(
                batch, f.result() if f.exception() is None
                else [(None, f.exception())] * len(batch)))
            return
        try:
            results = run_batch(self.fn, features, sizes)
        except BaseException as exc:  # noqa: BLE001 - every waiting request gets the error
            results = [(None, exc)] * len(batch)
        self._answer(batch, results)

    def _answer(self, batch: list[_Waiting], results: list[tuple]) -> None:
        for item, (result, exc) in zip(batch, results, strict=True):
            if item.future.done():  # the request was cancelled (client gone)
                continue
            if exc is None:
                item.future.set_result(result)
            else:
                item.future.set_exception(exc)
        self._busy -= len(batch)
        if not self._busy and not self._waiting:
            self._idle.set()

    def close(self, timeout: float | None = 30.0) -> None:
        """Take no more requests; let the waiting ones finish (within ``timeout`` seconds)."""
        self._closed = True
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running() or self._idle.is_set():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._flush()
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._flush)
            self._idle.wait(timeout)


class ThreadRunner:
    """Runs each call of ``fn`` alone in a thread of ``executor`` (threads without batching).

    :meth:`submit` (on the event loop) returns an asyncio future of ``fn(features)``;
    after :meth:`close` it raises :class:`BatcherClosed`.
    """

    def __init__(self, fn: Callable[[dict], Mapping[str, Any]],
                 executor: concurrent.futures.Executor) -> None:
        self.fn = fn
        self.executor = executor
        self._closed = False

    def submit(self, features: Mapping[str, Any]) -> asyncio.Future:
        """Start ``fn(features)`` in a thread; await the future for its outputs."""
        if self._closed:
            raise BatcherClosed("this model version is unloading")
        return asyncio.get_running_loop().run_in_executor(self.executor, self.fn, features)

    def close(self, timeout: float | None = 30.0) -> None:
        """Take no more requests (the calls already running finish on their own)."""
        del timeout
        self._closed = True
