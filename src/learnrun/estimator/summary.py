"""TensorBoard scalars and evaluation results in the model directory.

* ``get_summary_writer(logdir)`` gives one cached tensorboardX ``SummaryWriter`` per
  directory, created on first use (tensorboardX is imported then, not at import time). Only
  the chief writes training summaries; each evaluation writes into its own ``eval_dir``.
* ``append_eval_result(eval_dir, record)`` appends one JSON line per evaluated checkpoint to
  ``eval_dir/results.jsonl`` (flushed and fsynced, so a reader never sees half a record
  except after a crash, and :func:`read_eval_results` skips such a torn last line).
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import threading
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

RESULTS_FILENAME = "results.jsonl"

_writers: dict[str, Any] = {}
_lock = threading.Lock()


def _key(logdir: str) -> str:
    return os.path.abspath(os.fspath(logdir))


def get_summary_writer(logdir: str):
    """Return the cached tensorboardX ``SummaryWriter`` for ``logdir``, creating it lazily."""
    if logdir is None or not os.fspath(logdir):
        raise ValueError(f"get_summary_writer needs a log directory, got {logdir!r}.")
    key = _key(logdir)
    with _lock:
        writer = _writers.get(key)
        if writer is None:
            from tensorboardX import SummaryWriter

            os.makedirs(key, exist_ok=True)
            writer = SummaryWriter(logdir=key)
            _writers[key] = writer
        return writer


def _scalar(value: Any, what: str) -> float:
    """Convert a Python/numpy/torch scalar to float, or raise naming ``what``."""
    if isinstance(value, numbers.Number) and not isinstance(value, complex):
        return float(value)
    item = getattr(value, "item", None)
    size = getattr(value, "numel", None) or getattr(value, "size", None)
    n = size() if callable(size) else size
    if callable(item) and n == 1:
        out = item()
        if isinstance(out, numbers.Number) and not isinstance(out, complex):
            return float(out)
    raise ValueError(f"{what} must be a real scalar (number, 0-d/1-element tensor or array), "
                     f"got {type(value).__name__}: {value!r:.80}.")


def write_scalars(logdir: str, step: int, scalars: Mapping[str, Any]) -> None:
    """Write each ``tag -> scalar`` of ``scalars`` at global step ``step`` into ``logdir``.

    Values may be Python numbers, numpy scalars or one-element tensors (converted to float,
    which synchronises with the device for CUDA tensors: call this every N steps).
    """
    if not isinstance(scalars, Mapping):
        raise TypeError(f"scalars must be a dict of tag -> number, got {type(scalars).__name__}.")
    values = {str(tag): _scalar(v, f"Summary value {tag!r}") for tag, v in scalars.items()}
    writer = get_summary_writer(logdir)
    for tag, value in values.items():
        writer.add_scalar(tag, value, global_step=int(step))


def _drain(writer: Any) -> None:
    """Write every queued event of ``writer`` to disk before returning.

    tensorboardX's ``flush()`` does not wait for its background queue, so events written just
    before it may still be missing. The worker thread is stopped (it writes everything queued
    before the stop signal) and restarted on the same queue and file.
    """
    try:
        for file_writer in (writer.all_writers or {}).values():
            events = file_writer.event_writer
            worker = events._worker
            if events._closed or worker is None:
                continue
            worker.stop()
            events._worker = type(worker)(events._event_queue, events._ev_writer, events._flush_secs)
            events._worker.start()
            events._ev_writer.flush()
    except AttributeError:  # another tensorboardX version: best effort
        logger.debug("tensorboardX internals changed; falling back to SummaryWriter.flush().")
        writer.flush()


def flush(logdir: str) -> None:
    """Write everything written so far to ``logdir`` to disk (no-op without a writer)."""
    with _lock:
        writer = _writers.get(_key(logdir))
        if writer is not None:
            _drain(writer)


def flush_all() -> None:
    """Write everything written so far by every cached writer to disk."""
    with _lock:
        for writer in _writers.values():
            _drain(writer)


def close_writer(logdir: str) -> None:
    """Close and forget the writer of ``logdir`` (a later write opens a new event file)."""
    with _lock:
        writer = _writers.pop(_key(logdir), None)
    if writer is not None:
        writer.close()


def close_all() -> None:
    """Close and forget every cached writer (end of training or of the process)."""
    with _lock:
        writers = list(_writers.values())
        _writers.clear()
    for writer in writers:
        writer.close()


def eval_dir(model_dir: str, name: str | None = None) -> str:
    """Return ``model_dir/eval`` (``name`` None) or ``model_dir/eval_<name>``."""
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"Evaluation name must be a non-empty string or None, got {name!r}.")
    return os.path.join(os.fspath(model_dir), "eval" if name is None else f"eval_{name}")


def _jsonable(value: Any, where: str) -> Any:
    """Convert tensors and numpy values to Python numbers/lists for JSON."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    tolist = getattr(value, "tolist", None)  # torch.Tensor, numpy arrays and scalars
    if callable(tolist):
        if hasattr(value, "detach"):
            value = value.detach().cpu()
        out = value.tolist()
        if isinstance(out, float) and not math.isfinite(out):
            return out
        return _jsonable(out, where)
    raise TypeError(f"Cannot store {where} in the evaluation results: a {type(value).__name__} "
                    "is not a number, string, list, dict, tensor or numpy value.")


def append_eval_result(eval_dir: str, record: Mapping[str, Any]) -> str:
    """Append ``record`` as one JSON line to ``eval_dir/results.jsonl``; return the file path.

    The record usually holds ``checkpoint_path``, ``global_step`` and the metrics; tensors and
    numpy values become Python numbers (or lists). The line is flushed and fsynced.
    """
    if not isinstance(record, Mapping):
        raise TypeError(f"An evaluation result must be a dict, got {type(record).__name__}.")
    line = json.dumps(_jsonable(record, "record"), sort_keys=True)
    os.makedirs(eval_dir, exist_ok=True)
    path = os.path.join(os.fspath(eval_dir), RESULTS_FILENAME)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
    return path


def read_eval_results(eval_dir: str) -> list[dict]:
    """Return the records of ``eval_dir/results.jsonl`` in order ([] when there is none).

    Unparseable lines (a record torn by a crash) are skipped with a warning.
    """
    path = os.path.join(os.fspath(eval_dir), RESULTS_FILENAME)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return []
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            logger.warning("Skipping unreadable line %d of %s (torn by a crash?).", number, path)
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            logger.warning("Skipping line %d of %s: not a JSON object.", number, path)
    return records
