"""TensorBoard event files in the model directory.

``get_summary_writer(logdir)`` gives one cached tensorboardX ``EventsWriter`` per directory,
created on first use (tensorboardX is imported then, not at import time). It writes each
event in the calling thread, into the file's buffer: no background thread or queue (a
``SummaryWriter``'s two threads cost more than the writes themselves, and its ``flush`` does
not wait for its queue), and :func:`flush` puts everything written so far on disk. Only the
chief writes training summaries; each evaluation writes into its own ``eval_dir``.

A remote ``logdir`` (``s3://...``, any fsspec URL) is written through a local staging
directory: the writer appends to event files there, and :func:`flush` / :func:`flush_all` /
:func:`close_writer` / :func:`close_all` upload each changed event file whole to the remote
directory. The Estimator flushes at every checkpoint and when training ends, so
``tensorboard --logdir s3://...`` sees the scalars up to the latest checkpoint.

:func:`flush_all` and :func:`flush_remote` touch only the writers handed out since their last
flush. At interpreter exit every writer is closed and every staging directory removed.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import numbers
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any

from learnrun.model_dir.storage import is_remote, is_url, storage_for

logger = logging.getLogger(__name__)

_writers: dict[str, Any] = {}
#: keys of the writers that may hold events not yet flushed by flush / flush_all (every writer
#: handed out since its last flush): flush_all and flush_remote leave the others alone, so a
#: process that trained in many model directories (a tuning study) does not flush them all
#: at the end of each ``train``
_written: set[str] = set()
#: writer key -> when (time.monotonic) its events were last put on disk
_flushed_at: dict[str, float] = {}
#: At most this long between a write and its events reaching the disk (a killed process loses
#: no more): tensorboardX's ``SummaryWriter`` default.
FLUSH_SECS = 120.0
#: remote logdir -> (local staging directory, {relative file: size uploaded})
_staging: dict[str, tuple[str, dict[str, int]]] = {}
_lock = threading.Lock()
#: numbers the event files this process opens (their names' last part)
_file_numbers = itertools.count()


def _checked_key(logdir: Any, what: str) -> str:
    """``logdir``'s key, or a ValueError naming ``what`` when it is None or empty (an empty
    path would mean the working directory)."""
    if logdir is None or not os.fspath(logdir):
        raise ValueError(f"{what} needs a log directory, got {logdir!r}.")
    return _key(logdir)


def _key(logdir: str) -> str:
    text = os.fspath(logdir)
    return text.rstrip("/") if is_url(text) else os.path.abspath(text)


def _upload(key: str) -> None:
    """Copy the staged event files of remote ``key`` that changed since the last upload."""
    staged = _staging.get(key)
    if staged is None:
        return
    local, uploaded = staged
    changed = _not_uploaded(local, uploaded)
    if changed:
        st = storage_for(key)
        for path, rel, size in changed:
            st.put_file(path, st.join(key, rel))
            uploaded[rel] = size


def _not_uploaded(local: str, uploaded: dict[str, int]) -> list[tuple[str, str, int]]:
    """``(path, name relative to local, size)`` of the staged files under ``local`` whose
    size differs from the one last uploaded (event files only grow)."""
    changed = []
    for root, _, files in os.walk(local):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, local).replace(os.sep, "/")
            size = os.path.getsize(path)
            if uploaded.get(rel) != size:
                changed.append((path, rel, size))
    return changed


def get_summary_writer(logdir: str):
    """Return the cached tensorboardX ``EventsWriter`` for ``logdir``, creating it lazily.

    Its event file is ``logdir/events.out.tfevents.<time>.<host>.<pid>.<n>`` (TF 2's names;
    ``n`` counts this process's writers).
    """
    return _writer(_checked_key(logdir, "get_summary_writer"))


def _writer(key: str):
    """:func:`get_summary_writer` of the directory whose key is ``key``."""
    with _lock:
        writer = _writers.get(key)
        if writer is None:
            from tensorboardX.event_file_writer import EventsWriter

            if is_remote(key):
                storage_for(key)  # a bad URL or a missing backend fails here, in one line
                local = tempfile.mkdtemp(prefix="learnrun-events-")
                _staging[key] = (local, {})
            else:
                local = key
                os.makedirs(key, exist_ok=True)
            # events.out.tfevents.<time>.<host>.<pid>.<n> (TF 2's pattern): a writer reopened
            # within the same second, or another process on this host, gets a file of its
            # own instead of truncating the earlier one
            writer = EventsWriter(os.path.join(local, "events"),
                                  filename_suffix=f".{os.getpid()}.{next(_file_numbers)}")
            _writers[key] = writer
            _flushed_at[key] = time.monotonic()
        _written.add(key)  # the caller may write events with it
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


#: tag -> the tag written for it, cleaned as tensorboardX's ``add_scalar`` cleans it
_event_tags: dict[str, str] = {}


def _event_tag(tag: str) -> str:
    """``tag`` as tensorboardX writes it (characters TensorBoard refuses become ``_``), asked
    of tensorboardX once per tag."""
    cleaned = _event_tags.get(tag)
    if cleaned is None:
        from tensorboardX.summary import scalar

        cleaned = _event_tags[tag] = scalar(tag, 0.0).value[0].tag
    return cleaned


def write_scalars(logdir: str, step: int, scalars: Mapping[str, Any]) -> None:
    """Write each ``tag -> scalar`` of ``scalars`` at global step ``step`` into ``logdir``.

    Values may be Python numbers, numpy scalars or one-element tensors (converted to float,
    which synchronises with the device for CUDA tensors: call this every N steps).
    """
    if not isinstance(scalars, Mapping):
        raise TypeError(f"scalars must be a dict of tag -> number, got {type(scalars).__name__}.")
    values = {str(tag): _scalar(v, f"Summary value {tag!r}") for tag, v in scalars.items()}
    if not values:
        return
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary

    # one event holding every value
    summary = Summary(value=[Summary.Value(tag=_event_tag(tag), simple_value=value)
                             for tag, value in values.items()])
    key = _checked_key(logdir, "write_scalars")
    writer = _writer(key)
    writer.write_event(Event(wall_time=time.time(), step=int(step), summary=summary))
    if time.monotonic() - _flushed_at.get(key, 0.0) >= FLUSH_SECS:  # a local flush: no upload
        _to_disk(key, writer)


def _to_disk(key: str, writer: Any) -> None:
    """Put what ``writer`` wrote on disk (file flush and fsync) and note when."""
    writer.flush()
    _flushed_at[key] = time.monotonic()


def flush(logdir: str) -> None:
    """Write everything written so far to ``logdir`` to disk (no-op without a writer)."""
    with _lock:
        key = _key(logdir)
        writer = _writers.get(key)
        if writer is not None:
            _flush_written(key, writer)


def _flush_written(key: str, writer: Any) -> None:
    """Put ``writer``'s events on disk, upload them if its directory is remote, and forget
    that it was written."""
    _to_disk(key, writer)
    _upload(key)
    _written.discard(key)


def flush_all() -> None:
    """Write everything written so far by every cached writer to disk (and upload it, for a
    remote directory). Writers not handed out since their last flush have nothing to add."""
    with _lock:
        for key in [k for k in _writers if k in _written]:
            _flush_written(key, _writers[key])


def flush_remote() -> None:
    """Upload what every writer of a remote directory wrote so far (no-op when none is remote)."""
    if _staging:
        with _lock:
            for key in [k for k in _writers if k in _written and k in _staging]:
                _flush_written(key, _writers[key])


def close_writer(logdir: str) -> None:
    """Close and forget the writer of ``logdir`` (a later write opens a new event file)."""
    key = _key(logdir)
    with _lock:
        writer = _writers.pop(key, None)
        _flushed_at.pop(key, None)
        _written.discard(key)
        if writer is not None:
            writer.close()
            _finish(key)


def close_under(directory: str) -> None:
    """Close and forget the writers of ``directory`` and of the directories below it (a
    tuning trial's model directory and its ``eval`` directories, once the trial is over), so
    a process that trains in many directories keeps no event file of the finished ones open.
    """
    root = _checked_key(directory, "close_under")
    prefix = root.rstrip("/") + "/" if is_url(root) else os.path.join(root, "")
    with _lock:
        below = [k for k in _writers if k == root or k.startswith(prefix)]
    for key in below:
        close_writer(key)


def _forget_all() -> list[tuple[str, Any]]:
    """Every cached ``(key, writer)``, forgotten (the caller holds ``_lock`` and closes them)."""
    writers = list(_writers.items())
    _writers.clear()
    _flushed_at.clear()
    _written.clear()
    return writers


def close_all() -> None:
    """Close and forget every cached writer (end of training or of the process).

    Every writer is closed and every staging directory removed even when one fails (a full
    disk, an unreachable object store); the first error is raised after that.
    """
    error: BaseException | None = None
    with _lock:
        for key, writer in _forget_all():
            try:
                writer.close()
            except Exception as exc:
                error = error or exc
            try:
                _finish(key)
            except Exception as exc:
                error = error or exc
    if error is not None:
        raise error


def close_at_exit() -> None:
    """At interpreter exit (registered with ``atexit`` below; a process that
    leaves through ``os._exit`` calls it first): close every writer (a local event file gets
    its last events) and remove the staging directories of remote ones instead of leaving
    them in the temporary directory.

    Nothing is uploaded then: fsspec's S3 client needs worker threads that the interpreter has
    already stopped. Events of a remote directory written since its last :func:`flush` (the
    Estimator flushes at every checkpoint and at the end of ``train``) are named in a warning.
    """
    with _lock:
        for key, writer in _forget_all():
            try:
                writer.close()
            except Exception as exc:
                logger.warning("Closing the TensorBoard event file of %s at exit failed: %s", key, exc)
            staged = _staging.pop(key, None)
            if staged is None:
                continue
            local, uploaded = staged
            if _not_uploaded(local, uploaded):
                logger.warning("TensorBoard events written to %s since its last flush were not "
                               "uploaded before the process exited. Call "
                               "learnrun.model_dir.summaries.flush(logdir) after writing them.", key)
            shutil.rmtree(local, ignore_errors=True)


atexit.register(close_at_exit)


def _finish(key: str) -> None:
    """Upload the closed writer's staged files and remove its staging directory."""
    if key not in _staging:
        return
    try:
        _upload(key)
    finally:
        local, _ = _staging.pop(key)
        shutil.rmtree(local, ignore_errors=True)
