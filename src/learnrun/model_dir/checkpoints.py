"""Atomic checkpoints in a model directory: ``ckpt-<step>/`` dirs listed by a JSON index.

Layout::

    model_dir/checkpoint          {"latest": "ckpt-N", "all": [...], "timestamps": [...], ...}
    model_dir/ckpt-<step>/        model.safetensors, state.pt, meta.json

A checkpoint exists if and only if the index lists it. :meth:`CheckpointManager.save` runs:

1. write ``tmp-<step>-<random>/`` (weights with safetensors, state with ``torch.save``,
   ``meta.json`` last, which records the sizes of the other two), fsync each file and the dir;
2. rename it to ``ckpt-<step>/`` (an older ``ckpt-<step>/`` is first unlisted, then moved away);
3. rewrite the index (temp file, fsync, ``os.replace``, dir fsync);
4. apply retention, deleting dropped directories only after the index no longer lists them.

A crash (even SIGKILL) at any instant leaves the latest listed checkpoint loadable; leftovers
are named ``tmp-*`` and removed by :func:`cleanup_temporaries` (run by the manager, i.e. the
chief, on construction). Readers (evaluator, exporter) only call the module functions. What
the files hold (weights for safetensors, weights_only-safe state, RNG states) is prepared by
:mod:`learnrun.model_dir.serialization`; its names are importable from here too.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import re
import secrets
import shutil
from collections.abc import Mapping
from typing import Any, NamedTuple

from learnrun._version import __version__
from learnrun.clock import Clock, get_clock
from learnrun.errors import CheckpointError
from learnrun.model_dir.serialization import capture_rng_state as capture_rng_state
from learnrun.model_dir.serialization import prepare_weights as _prepare_weights
from learnrun.model_dir.serialization import restore_rng_state as restore_rng_state
from learnrun.model_dir.serialization import to_weights_only_safe

logger = logging.getLogger(__name__)

INDEX_FILENAME = "checkpoint"
WEIGHTS_FILENAME = "model.safetensors"
STATE_FILENAME = "state.pt"
META_FILENAME = "meta.json"
FORMAT_VERSION = 1

_CKPT_RE = re.compile(r"^ckpt-(\d+)$")
# everything this module may leave behind after a crash; nothing else is ever deleted
_TMP_RE = re.compile(r"^tmp-(\d+|del-\d+|checkpoint)-[0-9a-f]+$")


class CheckpointInfo(NamedTuple):
    """One listed checkpoint: its directory, global step and save time (unix seconds)."""

    path: str
    step: int
    time: float


class Checkpoint(NamedTuple):
    """A loaded checkpoint: ``weights`` (name -> tensor), ``state`` (dict) and ``meta`` (dict)."""

    weights: dict
    state: dict
    meta: dict


# --------------------------------------------------------------------------------------------
# reading


def _read_index(model_dir: str) -> dict | None:
    """Return the parsed index of ``model_dir``, or None when missing or unreadable (warned)."""
    path = os.path.join(os.fspath(model_dir), INDEX_FILENAME)
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        logger.warning("Ignoring unreadable checkpoint index %s (%s): treating as no checkpoint.", path, e)
        return None
    names = index.get("all") if isinstance(index, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) and _CKPT_RE.match(n) for n in names):
        logger.warning("Ignoring malformed checkpoint index %s: treating as no checkpoint.", path)
        return None
    times = index.get("timestamps")
    if not isinstance(times, list) or len(times) != len(names):
        index["timestamps"] = [0.0] * len(names)
    return index


def _is_complete(ckpt_dir: str) -> bool:
    return all(
        os.path.isfile(os.path.join(ckpt_dir, n)) for n in (WEIGHTS_FILENAME, STATE_FILENAME, META_FILENAME)
    )


def list_checkpoints(model_dir: str) -> list[CheckpointInfo]:
    """List the checkpoints the index of ``model_dir`` holds, oldest first.

    Listed directories that are missing or incomplete are skipped with a warning. A missing or
    garbled index gives ``[]``.
    """
    model_dir = os.fspath(model_dir)
    index = _read_index(model_dir)
    if index is None:
        return []
    infos = []
    for name, ts in zip(index["all"], index["timestamps"], strict=True):
        path = os.path.join(model_dir, name)
        if not _is_complete(path):
            logger.warning("Checkpoint %s is listed in %s but missing or incomplete; skipping it.",
                           path, os.path.join(model_dir, INDEX_FILENAME))
            continue
        infos.append(CheckpointInfo(path, int(_CKPT_RE.match(name).group(1)), float(ts or 0.0)))
    return infos


def latest_checkpoint(model_dir: str) -> str | None:
    """Return the path of the latest valid checkpoint in ``model_dir``, or None.

    This is the index's ``latest`` entry; when that directory is missing or incomplete, the
    newest valid earlier one is returned (with a warning). ``model_dir`` must be a model
    directory; use :func:`resolve_checkpoint` for "a checkpoint or a model directory".
    """
    model_dir = os.fspath(model_dir)
    index = _read_index(model_dir)
    if index is None:
        return None
    names = list(index["all"])
    latest = index.get("latest")
    if isinstance(latest, str) and latest in names:  # the latest first, then newest to oldest
        names.remove(latest)
        names.append(latest)
    for name in reversed(names):
        path = os.path.join(model_dir, name)
        if _is_complete(path):
            return path
        logger.warning("Checkpoint %s is listed but missing or incomplete; using an earlier one.", path)
    return None


def checkpoint_step(path: str) -> int:
    """Return the global step of the checkpoint directory ``path`` (``ckpt-<step>``)."""
    path = os.fspath(path)
    m = _CKPT_RE.match(os.path.basename(os.path.normpath(path)))
    if m:
        return int(m.group(1))
    try:
        with open(os.path.join(path, META_FILENAME), encoding="utf-8") as f:
            return int(json.load(f)["step"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"Cannot tell the global step of checkpoint {path!r}: its name is not 'ckpt-<step>' "
            f"and its {META_FILENAME} gives no step ({e}). Pass a ckpt-<step> directory."
        ) from e


def resolve_checkpoint(path_or_model_dir: str) -> str | None:
    """Return a checkpoint directory from a checkpoint path or a model directory.

    A checkpoint directory (or a file inside one) gives that directory; a model directory gives
    its latest checkpoint, or None when it has none. A path that does not exist raises
    :class:`~learnrun.errors.CheckpointError`. Used by warm start and the CLI.
    """
    path = os.path.normpath(os.fspath(path_or_model_dir))
    if os.path.isfile(path) and os.path.basename(path) in (WEIGHTS_FILENAME, STATE_FILENAME, META_FILENAME):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise CheckpointError(
            f"No checkpoint or model directory at {path_or_model_dir!r}: the path does not exist. "
            "Pass a ckpt-<step> directory or a model_dir holding a 'checkpoint' index."
        )
    if os.path.isfile(os.path.join(path, WEIGHTS_FILENAME)):
        return path
    return latest_checkpoint(path)


def load_checkpoint(path: str, map_location: Any = "cpu") -> Checkpoint:
    """Load the checkpoint directory ``path``; tensors go to ``map_location``.

    Raises :class:`~learnrun.errors.CheckpointError` naming the file when the checkpoint is
    missing, half-written (a file is absent or shorter than recorded) or corrupt.
    """
    import torch
    from safetensors.torch import load_file

    path = os.fspath(path)
    if not os.path.isdir(path):
        raise CheckpointError(f"Checkpoint {path!r} does not exist. Use latest_checkpoint(model_dir) "
                              "or list_checkpoints(model_dir) to find the available checkpoints.")
    hint = ("It is corrupt or was not completely written; load an earlier checkpoint "
            "(list_checkpoints(model_dir)) or delete this one and its entry in the index.")
    missing = [n for n in (WEIGHTS_FILENAME, STATE_FILENAME, META_FILENAME)
               if not os.path.isfile(os.path.join(path, n))]
    if missing:
        if os.path.isfile(os.path.join(path, INDEX_FILENAME)):
            hint = "This is a model directory: pass latest_checkpoint(model_dir) instead."
        raise CheckpointError(f"Checkpoint {path!r} lacks {', '.join(missing)}. {hint}")
    meta_path = os.path.join(path, META_FILENAME)
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        if not isinstance(meta, dict):
            raise ValueError(f"expected a JSON object, got {type(meta).__name__}")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"Cannot read {meta_path}: {e}. {hint}") from e
    for name, size in (meta.get("files") or {}).items():
        actual = os.path.getsize(os.path.join(path, name))
        if actual != size:
            raise CheckpointError(f"{os.path.join(path, name)} has {actual} bytes, "
                                  f"{META_FILENAME} recorded {size}. {hint}")
    device = map_location
    if isinstance(device, (torch.device, str)):
        device = str(device)
    else:  # dicts / callables are torch.load-only: weights load to CPU
        device = "cpu"
    weights_path = os.path.join(path, WEIGHTS_FILENAME)
    try:
        weights = load_file(weights_path, device=device)
    except Exception as e:  # safetensors raises its own SafetensorError and OSError
        raise CheckpointError(f"Cannot read {weights_path}: {e}. {hint}") from e
    state_path = os.path.join(path, STATE_FILENAME)
    try:
        state = torch.load(state_path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle/zip/EOF/RuntimeError all mean the same to the user
        raise CheckpointError(f"Cannot read {state_path}: {e}. {hint}") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{state_path} holds a {type(state).__name__}, expected a dict. {hint}")
    return Checkpoint(weights, state, meta)


# --------------------------------------------------------------------------------------------
# writing


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms that cannot open directories (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _rmtree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def cleanup_temporaries(model_dir: str) -> list[str]:
    """Delete what an interrupted save left in ``model_dir`` (``tmp-*``); return the paths.

    Only names this module creates are touched; unlisted ``ckpt-*`` dirs and user files stay.
    Only the chief may call this (a concurrent save's temp dir would be deleted).
    """
    model_dir = os.fspath(model_dir)
    try:
        names = os.listdir(model_dir)
    except FileNotFoundError:
        return []
    removed = []
    for name in sorted(names):
        if _TMP_RE.match(name):
            path = os.path.join(model_dir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                _rmtree(path)
            else:
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass
            removed.append(path)
    if removed:
        logger.info("Removed %d leftover temporary checkpoint file(s) from %s.", len(removed), model_dir)
    return removed


class CheckpointManager:
    """Write checkpoints into ``model_dir`` atomically and apply retention (chief only).

    ``keep_checkpoint_max`` newest checkpoints are kept (0 or None keeps all); of the older
    ones, one per ``keep_checkpoint_every_n_hours`` is kept forever, as TF's Saver does.
    Construction removes ``tmp-*`` leftovers of a crashed save.
    """

    def __init__(self, model_dir: str, keep_checkpoint_max: int | None = 5,
                 keep_checkpoint_every_n_hours: float | None = 10000,
                 clock: Clock | None = None) -> None:
        if model_dir is None or not os.fspath(model_dir):
            raise ValueError(f"CheckpointManager needs a model_dir, got {model_dir!r}.")
        if keep_checkpoint_max is not None and (
                isinstance(keep_checkpoint_max, bool) or not isinstance(keep_checkpoint_max, int)
                or keep_checkpoint_max < 0):
            raise ValueError(f"keep_checkpoint_max must be an int >= 0 or None (0/None keep all), "
                             f"got {keep_checkpoint_max!r}.")
        if keep_checkpoint_every_n_hours is not None and (
                isinstance(keep_checkpoint_every_n_hours, bool)
                or not isinstance(keep_checkpoint_every_n_hours, (int, float))
                or keep_checkpoint_every_n_hours <= 0):
            raise ValueError("keep_checkpoint_every_n_hours must be a number > 0 or None, "
                             f"got {keep_checkpoint_every_n_hours!r}.")
        self.model_dir = os.fspath(model_dir)
        self.keep_checkpoint_max = keep_checkpoint_max
        self.keep_checkpoint_every_n_hours = keep_checkpoint_every_n_hours
        self._clock = get_clock(clock)
        os.makedirs(self.model_dir, exist_ok=True)
        self.cleanup_temporaries()
        index = _read_index(self.model_dir)
        preserved = index.get("last_preserved_timestamp") if index else None
        self._last_preserved = float(preserved) if isinstance(preserved, (int, float)) \
            else self._clock.time()

    def cleanup_temporaries(self) -> list[str]:
        """Remove ``tmp-*`` leftovers of interrupted saves (see :func:`cleanup_temporaries`)."""
        return cleanup_temporaries(self.model_dir)

    def latest_checkpoint(self) -> str | None:
        """Path of the latest valid checkpoint in this model directory, or None."""
        return latest_checkpoint(self.model_dir)

    def _tmp_name(self, kind: str) -> str:
        return os.path.join(self.model_dir, f"tmp-{kind}-{secrets.token_hex(4)}")

    def _write_index(self, entries: list[tuple[str, float]], latest: str | None,
                     preserved: list[str]) -> None:
        index = {
            "latest": latest,
            "all": [n for n, _ in entries],
            "timestamps": [t for _, t in entries],
            "preserved": [n for n in preserved if any(n == e for e, _ in entries)],
            "last_preserved_timestamp": self._last_preserved,
            "format_version": FORMAT_VERSION,
        }
        tmp = self._tmp_name("checkpoint")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.model_dir, INDEX_FILENAME))
        _fsync_dir(self.model_dir)

    def _write_files(self, tmp_dir: str, step: int, weights: Mapping, state: Mapping,
                     meta: Mapping | None, now: float) -> None:
        import torch
        from safetensors.torch import save_file


        weights_path = os.path.join(tmp_dir, WEIGHTS_FILENAME)
        save_file(_prepare_weights(weights), weights_path, metadata={"step": str(step)})
        _fsync_file(weights_path)
        state_path = os.path.join(tmp_dir, STATE_FILENAME)
        with open(state_path, "wb") as f:
            torch.save(to_weights_only_safe(dict(state), "state"), f)
            f.flush()
            os.fsync(f.fileno())
        record = dict(meta or {})
        record.update(step=step, time=now, learnrun_version=__version__,
                      torch_version=torch.__version__, format_version=FORMAT_VERSION,
                      files={n: os.path.getsize(os.path.join(tmp_dir, n))
                             for n in (WEIGHTS_FILENAME, STATE_FILENAME)})
        with open(os.path.join(tmp_dir, META_FILENAME), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp_dir)

    def save(self, step: int, weights: Mapping, state: Mapping, meta: Mapping | None = None) -> str:
        """Write checkpoint ``step`` atomically, update the index, apply retention; return its path.

        ``weights``: name -> tensor (e.g. ``module.state_dict()``); ``state``: a dict of plain
        containers, numbers, strings, tensors and numpy arrays (optimizer, scheduler, RNG,
        hooks, input position); ``meta``: JSON-serialisable extras for ``meta.json``.
        """
        given = step
        try:
            step = -1 if isinstance(step, bool) else operator.index(step)
        except TypeError:
            step = -1
        if step < 0:
            raise ValueError(f"Checkpoint step must be an int >= 0, got {given!r}.")
        if not isinstance(state, Mapping):
            raise CheckpointError(f"state must be a dict, got {type(state).__name__}.")
        if meta is not None:
            try:
                json.dumps(dict(meta))
            except (TypeError, ValueError) as e:
                raise CheckpointError(f"meta must be a JSON-serialisable dict: {e}.") from e
        now = self._clock.time()
        name = f"ckpt-{step}"
        final = os.path.join(self.model_dir, name)
        tmp_dir = self._tmp_name(str(step))
        os.makedirs(tmp_dir)
        try:
            self._write_files(tmp_dir, step, weights, state, meta, now)
        except BaseException:
            _rmtree(tmp_dir)
            raise

        index = _read_index(self.model_dir) or {"all": [], "timestamps": []}
        entries = list(zip(index["all"], index["timestamps"], strict=True))
        preserved = list(index.get("preserved") or [])
        latest = index.get("latest")
        old = None
        if os.path.lexists(final):  # a checkpoint of this step from an earlier run: replace it
            if any(n == name for n, _ in entries):
                entries = [e for e in entries if e[0] != name]
                latest = entries[-1][0] if latest == name and entries else (
                    None if latest == name else latest)
                self._write_index(entries, latest, preserved)
            old = self._tmp_name(f"del-{step}")
            os.rename(final, old)
        os.rename(tmp_dir, final)
        _fsync_dir(self.model_dir)

        entries = [e for e in entries if e[0] != name] + [(name, now)]
        dropped = self._retain(entries, preserved)
        entries = [e for e in entries if e[0] not in dropped]
        self._write_index(entries, name, preserved)
        for n in ([old] if old else []) + [os.path.join(self.model_dir, d) for d in dropped]:
            self._delete(n)
        return final

    def _retain(self, entries: list[tuple[str, float]], preserved: list[str]) -> set[str]:
        """Return the names to drop; move kept-by-hours ones into ``preserved`` (TF's sweep)."""
        keep_max = self.keep_checkpoint_max
        if not keep_max:
            return set()
        candidates = [e for e in entries if e[0] not in preserved]
        dropped: set[str] = set()
        hours = self.keep_checkpoint_every_n_hours
        while len(candidates) > keep_max:
            name, ts = candidates.pop(0)
            if hours and ts - hours * 3600.0 >= self._last_preserved:
                self._last_preserved = ts
                preserved.append(name)
                continue
            dropped.add(name)
        return dropped

    def _delete(self, path: str) -> None:
        """Move ``path`` to a ``tmp-del-*`` name (so a crash leaves only temporaries), remove it."""
        if os.path.basename(path).startswith("tmp-"):
            _rmtree(path)
            return
        step = checkpoint_step(path)
        doomed = self._tmp_name(f"del-{step}")
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return
        _rmtree(doomed)
