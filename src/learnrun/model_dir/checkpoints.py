"""Checkpoints in a model directory: commit without rename, a self-healing index, verified loads.

Layout::

    model_dir/checkpoint          {"latest": "ckpt-N", "all": [...], "timestamps": [...], ...}
    model_dir/ckpt-<step>/        model.safetensors, state.pt, [trainer-<rank>.pt ...],
                                  meta.json (written last)
    model_dir/final               {"checkpoint": "ckpt-N", "step": N, "last_step": limit, "time":
                                  t}: training ended normally there (see :func:`mark_final`)

**A checkpoint exists if and only if its** ``meta.json`` **is there and its files match it.**
``meta.json`` records the step, the time, the config uid and versions, and every file with
its size and ``xxh3_64`` checksum. :meth:`CheckpointManager.save` runs:

1. remove what is not a checkpoint: ``ckpt-*`` directories without ``meta.json`` (a save
   that was interrupted) and ``tmp-*`` leftovers; committed checkpoints are never deleted here;
2. write ``ckpt-<step>/model.safetensors`` and ``state.pt`` (each fsynced, checksummed while
   written), then ``meta.json``: from that instant the checkpoint exists;
3. rewrite the ``checkpoint`` index, a cache of the committed checkpoints (latest, save
   times, the ones kept forever by ``keep_checkpoint_every_n_hours``);
4. apply retention: a dropped checkpoint leaves the index first, then loses its
   ``meta.json`` (it stops existing), then its files.

No step renames anything, so the protocol holds on object stores. A crash (even SIGKILL) at
any instant leaves every committed checkpoint loadable; the half-written directory is removed
by the next save. A failed save (disk full, permission denied) removes what it wrote and
raises a one-line :class:`~learnrun.errors.CheckpointError` naming the path.

Reading. The truth is the directory: a missing or unreadable index is rebuilt from the
committed ``ckpt-*`` (with a warning) and never means "no checkpoint". :func:`latest_checkpoint`
and :func:`list_checkpoints` check that each file is present with its recorded size;
:func:`load_checkpoint` also checks the checksums and raises
:class:`DamagedCheckpointError` naming the file. :func:`restore_checkpoint` (training's
restore) falls back to the newest intact checkpoint, moving damaged newer ones aside
(``ckpt-<step>.damaged-<time>``, never deleted); when every checkpoint is damaged it raises
one line and touches nothing. Checkpoints written before checksums existed (``meta.json``
with sizes only) still load, their sizes checked.

Asynchronous saves: :meth:`CheckpointManager.save_async` copies the state to CPU memory (a
:class:`~learnrun.model_dir.serialization.Stager`) and returns; a background thread writes and
commits it. At most one save is in flight: the next ``save_async``/``save``/:meth:`~CheckpointManager.wait`
first waits for it and re-raises its error.

What the files hold (weights for safetensors, weights_only-safe state, RNG states) is prepared
by :mod:`learnrun.model_dir.serialization`; its names are importable from here too. All file
I/O goes through :mod:`learnrun.model_dir.storage`.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import operator
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from learnrun._version import __version__
from learnrun.clock import Clock, get_clock
from learnrun.errors import CheckpointError
from learnrun.model_dir.serialization import (
    Stager,
    check_weights,
    safetensors_parts,
    to_weights_only_safe,
)
from learnrun.model_dir.serialization import capture_rng_state as capture_rng_state
from learnrun.model_dir.serialization import prepare_weights as _prepare_weights
from learnrun.model_dir.serialization import restore_rng_state as restore_rng_state
from learnrun.model_dir.storage import Storage, prepare_model_dir, storage_for

logger = logging.getLogger(__name__)

INDEX_FILENAME = "checkpoint"
FINAL_FILENAME = "final"
WEIGHTS_FILENAME = "model.safetensors"
STATE_FILENAME = "state.pt"
META_FILENAME = "meta.json"
TRAINER_FILENAME = "trainer-{rank}.pt"  # each trainer's input position and RNG (sync clusters)
FORMAT_VERSION = 2
CHECKSUM = "xxh3_64"
_REQUIRED = (WEIGHTS_FILENAME, STATE_FILENAME)
_CHUNK = 8 << 20  # hash and write in pieces: the GIL is free between them

_CKPT_RE = re.compile(r"^ckpt-(\d+)$")
_TRAINER_RE = re.compile(r"^trainer-(\d+)\.pt$")
# leftovers of interrupted writes (this version's index temp files and the old format's
# temp/deletion directories); nothing else is ever deleted by cleanup
_TMP_RE = re.compile(r"^tmp-(\d+|del-\d+|checkpoint|final)-[0-9a-f]+$")
_WARNED_INDEX: set[tuple[str, str]] = set()


class DamagedCheckpointError(CheckpointError):
    """A committed checkpoint whose files do not match its ``meta.json`` (or it is unreadable)."""


class CheckpointInfo(NamedTuple):
    """One committed checkpoint: its directory, global step and save time (unix seconds)."""

    path: str
    step: int
    time: float


class Checkpoint(NamedTuple):
    """A loaded checkpoint: ``weights`` (name -> tensor), ``state`` (dict) and ``meta`` (dict)."""

    weights: dict
    state: dict
    meta: dict


# --------------------------------------------------------------------------------------------
# checksums


def _new_hasher():
    import xxhash

    return xxhash.xxh3_64()


def checksum(data: Any) -> str:
    """The ``xxh3_64`` checksum (hex) of a bytes-like object, as ``meta.json`` records it."""
    hasher = _new_hasher()
    view = memoryview(data).cast("B")
    for start in range(0, len(view), _CHUNK):
        hasher.update(view[start:start + _CHUNK])
    return hasher.hexdigest()


# --------------------------------------------------------------------------------------------
# reading


def _step_of(name: str) -> int | None:
    m = _CKPT_RE.match(name)
    return int(m.group(1)) if m else None


def _committed_names(st: Storage, model_dir: str, sizes: dict[str, int] | None = None) -> list[str]:
    """``ckpt-<step>`` names under ``model_dir`` that hold a ``meta.json``, oldest first.

    ``sizes`` (:meth:`Storage.file_sizes`, object stores) answers without further requests.
    """
    if sizes is not None:
        found = {rel.split("/")[0] for rel in sizes
                 if rel.count("/") == 1 and rel.endswith("/" + META_FILENAME)}
        return sorted((n for n in found if _step_of(n) is not None), key=_step_of)
    names = [n for n in st.listdir(model_dir) if _step_of(n) is not None]
    names.sort(key=_step_of)
    return [n for n in names if st.exists(st.join(model_dir, n, META_FILENAME))]


def _read_json(st: Storage, path: str) -> Any:
    return json.loads(st.read_bytes(path).decode("utf-8"))


def _read_index(st: Storage, model_dir: str) -> dict | None:
    """The parsed index, or None when missing or unreadable (the reason is logged once)."""
    path = st.join(model_dir, INDEX_FILENAME)
    try:
        index = _read_json(st, path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        _warn_index(model_dir, f"the index {path} is unreadable ({e})")
        return None
    names = index.get("all") if isinstance(index, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) and _CKPT_RE.match(n) for n in names):
        _warn_index(model_dir, f"the index {path} is malformed")
        return None
    times = index.get("timestamps")
    if not isinstance(times, list) or len(times) != len(names) or \
            not all(isinstance(t, (int, float)) for t in times):
        index["timestamps"] = [0.0] * len(names)
    return index


def _warn_index(model_dir: str, reason: str) -> None:
    key = (model_dir, reason)
    if key not in _WARNED_INDEX:
        _WARNED_INDEX.add(key)
        logger.warning("Checkpoint index: %s; rebuilding it from the committed ckpt-* "
                       "directories in %s.", reason, model_dir)


def _read_meta(st: Storage, path: str) -> dict:
    """``meta.json`` of checkpoint ``path``; DamagedCheckpointError when absent or unreadable."""
    meta_path = st.join(path, META_FILENAME)
    try:
        meta = _read_json(st, meta_path)
    except FileNotFoundError as e:
        raise DamagedCheckpointError(f"Checkpoint {path!r} lacks {META_FILENAME}: it was never "
                                     "committed.") from e
    except (OSError, ValueError) as e:
        raise DamagedCheckpointError(f"Cannot read {meta_path}: {e}.") from e
    if not isinstance(meta, dict):
        raise DamagedCheckpointError(f"Cannot read {meta_path}: expected a JSON object, got "
                                     f"{type(meta).__name__}.")
    return meta


def _recorded_files(meta: dict, meta_path: str) -> dict[str, tuple[int, str | None]]:
    """name -> (size, checksum or None) from ``meta["files"]`` (both formats)."""
    files = meta.get("files")
    if files is None:  # the earliest format recorded nothing: presence is all we can check
        return {}
    if not isinstance(files, dict):
        raise DamagedCheckpointError(f"{meta_path}: 'files' is a {type(files).__name__}, "
                                     "expected an object.")
    out = {}
    for name, rec in files.items():
        if isinstance(rec, int) and not isinstance(rec, bool):  # sizes only (format 1)
            out[name] = (rec, None)
        elif isinstance(rec, dict) and isinstance(rec.get("size"), int):
            digest = rec.get(CHECKSUM)
            out[name] = (rec["size"], digest if isinstance(digest, str) else None)
        else:
            raise DamagedCheckpointError(f"{meta_path}: the entry of {name!r} is {rec!r}, "
                                         "expected a size and a checksum.")
    return out


def _check_sizes(st: Storage, path: str, meta: dict, sizes: dict[str, int] | None = None) -> None:
    """Raise DamagedCheckpointError unless every file is present with its recorded size.

    ``sizes``: the model directory's :meth:`Storage.file_sizes` (no request per file).
    """
    recorded = _recorded_files(meta, st.join(path, META_FILENAME))
    for name in sorted(set(recorded) | set(_REQUIRED)):
        size = st.size(st.join(path, name)) if sizes is None else \
            sizes.get(f"{st.basename(path)}/{name}")
        if size is None:
            raise DamagedCheckpointError(f"Checkpoint {path!r} lacks {name}.")
        if name in recorded and size != recorded[name][0]:
            raise DamagedCheckpointError(f"{st.join(path, name)} has {size} bytes, "
                                         f"{META_FILENAME} recorded {recorded[name][0]}.")


def check_checkpoint(path: str, verify_checksums: bool = True) -> str | None:
    """Return why checkpoint directory ``path`` is damaged, or None when it is intact.

    Checks ``meta.json``, the presence and sizes of the files and, with ``verify_checksums``,
    their checksums (this reads every file). Checkpoints without recorded checksums (written
    before they existed) are checked for sizes only.
    """
    st = storage_for(path)
    try:
        meta = _read_meta(st, path)
        _check_sizes(st, path, meta)
        if verify_checksums:
            recorded = _recorded_files(meta, st.join(path, META_FILENAME))
            for name, (_, digest) in sorted(recorded.items()):
                if digest is not None:
                    _verified_bytes(st, path, name, recorded)
    except DamagedCheckpointError as e:
        return str(e)
    except OSError as e:
        return f"Cannot read {path}: {e}."
    return None


def _verified_bytes(st: Storage, path: str, name: str,
                    recorded: dict[str, tuple[int, str | None]]) -> bytes:
    file = st.join(path, name)
    try:
        data = st.read_bytes(file)
    except FileNotFoundError as e:
        raise DamagedCheckpointError(f"Checkpoint {path!r} lacks {name}.") from e
    if name in recorded:
        size, digest = recorded[name]
        if len(data) != size:
            raise DamagedCheckpointError(f"{file} has {len(data)} bytes, {META_FILENAME} "
                                         f"recorded {size}.")
        if digest is not None:
            actual = checksum(data)
            if actual != digest:
                raise DamagedCheckpointError(f"{file} does not match its checksum ({CHECKSUM} "
                                             f"{actual}, {META_FILENAME} recorded {digest}).")
    return data


def _entries(st: Storage, model_dir: str, index: dict | None = None) -> list[tuple[str, float]]:
    """(name, save time) of every committed checkpoint, oldest first (index times when listed)."""
    if index is None:
        index = _read_index(st, model_dir)
    times = dict(zip(index["all"], index["timestamps"], strict=True)) if index else {}
    names = _committed_names(st, model_dir)
    if index is None and names and st.exists(st.join(model_dir, INDEX_FILENAME)) is False:
        _warn_index(model_dir, "the index is missing")
    out = []
    for name in names:
        ts = times.get(name)
        if ts is None:
            try:
                ts = float(_read_meta(st, st.join(model_dir, name)).get("time") or 0.0)
            except (DamagedCheckpointError, TypeError, ValueError):
                ts = 0.0
        out.append((name, float(ts)))
    return out


def list_checkpoints(model_dir: str) -> list[CheckpointInfo]:
    """List the committed checkpoints of ``model_dir``, oldest first.

    A checkpoint whose ``meta.json`` is unreadable or whose files are missing or of the wrong
    size is left out with a warning (checksums are checked by :func:`load_checkpoint`). The
    index only supplies save times: a missing or garbled one is rebuilt (warned once).
    """
    model_dir = str(model_dir)
    st = storage_for(model_dir)
    infos = []
    for name, ts in _entries(st, model_dir):
        path = st.join(model_dir, name)
        try:
            _check_sizes(st, path, _read_meta(st, path))
        except DamagedCheckpointError as e:
            logger.warning("Skipping damaged checkpoint %s: %s", path, e)
            continue
        infos.append(CheckpointInfo(path, _step_of(name), ts))
    return infos


def verify_checkpoints(model_dir: str) -> list[tuple[CheckpointInfo, str | None]]:
    """Check every committed checkpoint of ``model_dir`` fully (sizes and checksums).

    Returns ``(info, problem)`` pairs, oldest first, damaged checkpoints included; ``problem``
    is None for an intact checkpoint. Reads every file: this costs a full read of the
    directory.
    """
    model_dir = str(model_dir)
    st = storage_for(model_dir)
    return [(CheckpointInfo(st.join(model_dir, name), _step_of(name), ts),
             check_checkpoint(st.join(model_dir, name)))
            for name, ts in _entries(st, model_dir)]


def latest_checkpoint(model_dir: str) -> str | None:
    """Return the path of the newest committed checkpoint of ``model_dir`` that looks whole.

    Newer checkpoints whose files are missing or of the wrong size are skipped with a warning.
    ``model_dir`` must be a model directory; use :func:`resolve_checkpoint` for "a checkpoint
    or a model directory". None when there is no checkpoint.
    """
    model_dir = str(model_dir)
    st = storage_for(model_dir)
    sizes = st.file_sizes(model_dir)  # object stores: one listing, then the newest meta.json
    for name in reversed(_committed_names(st, model_dir, sizes)):
        path = st.join(model_dir, name)
        try:
            _check_sizes(st, path, _read_meta(st, path), sizes)
        except DamagedCheckpointError as e:
            logger.warning("Checkpoint %s is damaged (%s); using an earlier one.", path, e)
            continue
        return path
    return None


def checkpoint_step(path: str) -> int:
    """Return the global step of the checkpoint directory ``path`` (``ckpt-<step>``)."""
    path = str(path)
    st = storage_for(path)
    step = _step_of(st.basename(path))
    if step is not None:
        return step
    try:
        return int(_read_json(st, st.join(path, META_FILENAME))["step"])
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
    st = storage_for(str(path_or_model_dir))
    path = st.normpath(str(path_or_model_dir))
    if st.isfile(path) and st.basename(path) in (WEIGHTS_FILENAME, STATE_FILENAME, META_FILENAME):
        path = st.dirname(path)
    if not st.isdir(path):
        raise CheckpointError(
            f"No checkpoint or model directory at {path_or_model_dir!r}: the path does not exist. "
            "Pass a ckpt-<step> directory or a model_dir holding a 'checkpoint' index."
        )
    if st.isfile(st.join(path, WEIGHTS_FILENAME)):
        return path
    return latest_checkpoint(path)


_HINT = ("It is corrupt or was not completely written; load an earlier checkpoint "
         "(list_checkpoints(model_dir)) or move this one away.")


def load_checkpoint(path: str, map_location: Any = "cpu") -> Checkpoint:
    """Load the checkpoint directory ``path``, verifying it; tensors go to ``map_location``.

    Every file is checked against ``meta.json`` (size and checksum) before it is parsed.
    Raises :class:`DamagedCheckpointError` naming the file when the checkpoint is half-written
    or corrupt, :class:`~learnrun.errors.CheckpointError` when it does not exist.
    """
    import torch
    from safetensors.torch import load as load_safetensors

    path = str(path)
    st = storage_for(path)
    if not st.isdir(path):
        raise CheckpointError(f"Checkpoint {path!r} does not exist. Use latest_checkpoint(model_dir) "
                              "or list_checkpoints(model_dir) to find the available checkpoints.")
    if not st.exists(st.join(path, META_FILENAME)) and st.isfile(st.join(path, INDEX_FILENAME)):
        raise CheckpointError(f"{path!r} is a model directory, not a checkpoint: pass "
                              "latest_checkpoint(model_dir) instead.")
    try:
        meta = _read_meta(st, path)
        recorded = _recorded_files(meta, st.join(path, META_FILENAME))
        missing = [n for n in sorted(set(recorded) | set(_REQUIRED))
                   if not st.exists(st.join(path, n))]
        if missing:
            raise DamagedCheckpointError(f"Checkpoint {path!r} lacks {', '.join(missing)}.")
        weights_bytes = _verified_bytes(st, path, WEIGHTS_FILENAME, recorded)
        state_bytes = _verified_bytes(st, path, STATE_FILENAME, recorded)
        for name in sorted(recorded):  # small: a damaged one makes the checkpoint damaged
            if _TRAINER_RE.match(name):
                _verified_bytes(st, path, name, recorded)
    except DamagedCheckpointError as e:
        raise DamagedCheckpointError(f"{e} {_HINT}") from e
    weights_path = st.join(path, WEIGHTS_FILENAME)
    try:
        weights = load_safetensors(weights_bytes)
    except Exception as e:  # safetensors raises its own SafetensorError
        raise DamagedCheckpointError(f"Cannot read {weights_path}: {e}. {_HINT}") from e
    del weights_bytes
    weights = {name: weights[name] for name in sorted(weights)}  # a stable order, as saved
    device = str(map_location) if isinstance(map_location, (torch.device, str)) else "cpu"
    if device != "cpu":
        weights = {k: v.to(device) for k, v in weights.items()}
    state_path = st.join(path, STATE_FILENAME)
    try:
        state = torch.load(io.BytesIO(state_bytes), map_location=map_location, weights_only=True)
    except Exception as e:  # pickle/zip/EOF/RuntimeError all mean the same to the user
        raise DamagedCheckpointError(f"Cannot read {state_path}: {e}. {_HINT}") from e
    if not isinstance(state, dict):
        raise DamagedCheckpointError(f"{state_path} holds a {type(state).__name__}, expected a "
                                     f"dict. {_HINT}")
    return Checkpoint(weights, state, meta)


def load_trainer_state(path: str, rank: int) -> dict | None:
    """Trainer ``rank``'s part of checkpoint ``path`` (input position, RNG), verified; None
    when the checkpoint has no such part. The number of parts is ``meta["num_trainers"]``."""
    import torch

    path = str(path)
    st = storage_for(path)
    meta = _read_meta(st, path)
    recorded = _recorded_files(meta, st.join(path, META_FILENAME))
    name = TRAINER_FILENAME.format(rank=int(rank))
    if name not in recorded:
        return None
    data = _verified_bytes(st, path, name, recorded)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # as for state.pt
        raise DamagedCheckpointError(f"Cannot read {st.join(path, name)}: {e}. {_HINT}") from e
    return state if isinstance(state, dict) else None


def _damaged_name(st: Storage, model_dir: str, name: str, now: float) -> str:
    stamp = datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = f"{name}.damaged-{stamp}"
    n = 1
    while st.exists(st.join(model_dir, target)):
        n += 1
        target = f"{name}.damaged-{stamp}-{n}"
    return target


def move_aside(path: str, clock: Clock | None = None) -> str:
    """Move damaged checkpoint ``path`` to ``<path>.damaged-<UTC time>`` (never deleted); return it.

    Writer only. Its ``meta.json`` goes last, so an interrupted move on an object store leaves
    no second copy that looks committed.
    """
    st = storage_for(path)
    model_dir, name = st.dirname(path), st.basename(path)
    target = st.join(model_dir, _damaged_name(st, model_dir, name, get_clock(clock).time()))
    if st.local:
        st.move(path, target)
    else:
        st.makedirs(target)
        meta = st.join(path, META_FILENAME)
        for entry in [n for n in st.listdir(path) if n != META_FILENAME] + [META_FILENAME]:
            src = st.join(path, entry)
            if st.exists(src):
                st.move(src, st.join(target, entry))
        st.remove(meta)
        st.rmtree(path)
    return target


def restore_checkpoint(model_dir: str, map_location: Any = "cpu", *, move_damaged: bool = False,
                       clock: Clock | None = None) -> tuple[str, Checkpoint] | None:
    """Load the newest intact checkpoint of ``model_dir``: ``(path, checkpoint)``, or None.

    Trace: the committed checkpoints are tried newest first, each verified by
    :func:`load_checkpoint`. When a newer one is damaged and an older one loads, a warning
    names the damaged one(s) and the one used, and (``move_damaged``: the writer, under the
    lease) the damaged ones are moved aside with :func:`move_aside`. When every checkpoint is
    damaged, a :class:`DamagedCheckpointError` lists them in one line and nothing is moved.
    """
    model_dir = str(model_dir)
    st = storage_for(model_dir)
    damaged: list[tuple[str, str]] = []
    for name in reversed(_committed_names(st, model_dir)):
        path = st.join(model_dir, name)
        try:
            loaded = load_checkpoint(path, map_location)
        except DamagedCheckpointError as e:
            damaged.append((path, str(e).replace(f" {_HINT}", "").rstrip(".")))
            continue
        for bad, reason in damaged:
            where = ""
            if move_damaged:
                try:
                    where = f"; moved aside to {move_aside(bad, clock)}"
                except OSError as e:
                    where = f"; could not move it aside ({e})"
            logger.warning("Checkpoint %s is damaged (%s): using %s instead%s.", bad, reason,
                           path, where)
        return path, loaded
    if damaged:
        listed = "; ".join(f"{st.basename(p)}: {r}" for p, r in damaged)
        raise DamagedCheckpointError(
            f"Every checkpoint in {model_dir} is damaged ({listed}). Nothing was changed; "
            f"restore them from a backup, or move them out of {model_dir} to train from scratch.")
    return None


def training_end(model_dir: str) -> dict | None:
    """How training last ended normally (see :func:`mark_final`), while its checkpoint is
    committed: ``{"path", "step", "last_step"}``; else None."""
    model_dir = str(model_dir)
    st = storage_for(model_dir)
    try:
        record = _read_json(st, st.join(model_dir, FINAL_FILENAME))
        name = str(record["checkpoint"])
        last_step = record.get("last_step")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    path = st.join(model_dir, name)
    if not (_CKPT_RE.match(name) and st.exists(st.join(path, META_FILENAME))):
        return None
    return {"path": path, "step": _step_of(name),
            "last_step": last_step if isinstance(last_step, int) else None}


def training_ended_with(model_dir: str, checkpoint_path: str | None,
                        target_step: int | None = None) -> bool:
    """True when training ended normally with ``checkpoint_path`` and no more is to come.

    An evaluator waiting for ``target_step`` (None: no target) stops after evaluating that
    checkpoint when the run that wrote it had no step limit, stopped before its limit (the
    input ran out, a stop was requested), or aimed at ``target_step`` or beyond; a run that
    reached a smaller limit of its own may be followed by another, so the evaluator waits.
    """
    end = training_end(model_dir) if checkpoint_path else None
    if end is None or end["path"] != checkpoint_path:
        return False
    last = end["last_step"]
    return (target_step is None or last is None or end["step"] < last
            or last >= target_step)


# --------------------------------------------------------------------------------------------
# writing


def mark_final(model_dir: str, checkpoint_path: str | None, last_step: int | None = None,
               clock: Clock | None = None) -> None:
    """Record that training ended normally with ``checkpoint_path`` (the writer, at the end).

    ``last_step``: the step limit of that run (None: none). ``None`` as the path (no
    checkpoint) only clears an earlier record. Read by :func:`training_ended_with`.
    """
    model_dir = str(model_dir)
    st = storage_for(model_dir)
    if checkpoint_path is None:
        clear_final(model_dir)
        return
    name = st.basename(str(checkpoint_path).rstrip("/"))
    record = {"checkpoint": name, "step": _step_of(name), "time": get_clock(clock).time(),
              "last_step": None if last_step is None else int(last_step)}
    st.put(st.join(model_dir, FINAL_FILENAME), json.dumps(record).encode("utf-8"))


def clear_final(model_dir: str) -> None:
    """Forget the end-of-training record (the writer, when training starts again)."""
    model_dir = str(model_dir)
    st = storage_for(model_dir)
    st.remove(st.join(model_dir, FINAL_FILENAME))



def cleanup_temporaries(model_dir: str) -> list[str]:
    """Delete what interrupted saves left in ``model_dir``; return the paths.

    That is ``ckpt-<step>`` directories without ``meta.json`` (never committed) and ``tmp-*``
    names this module creates. Committed checkpoints, moved-aside ``*.damaged-*`` ones and
    user files stay. Only the writer may call this (an in-flight save would be deleted).
    """
    model_dir = str(model_dir)
    st = storage_for(model_dir)
    removed = []
    for name in st.listdir(model_dir):
        path = st.join(model_dir, name)
        if _TMP_RE.match(name):
            if st.isdir(path):
                st.rmtree(path)
            else:
                st.remove(path)
            removed.append(path)
        elif _step_of(name) is not None and st.isdir(path) and \
                not st.exists(st.join(path, META_FILENAME)):
            st.rmtree(path)
            removed.append(path)
    if removed:
        logger.info("Removed %d leftover(s) of interrupted checkpoint saves from %s: %s.",
                    len(removed), model_dir, ", ".join(st.basename(p) for p in removed))
    return removed


def _write_error(e: OSError, what: str, path: str, model_dir: str) -> CheckpointError:
    """The error of a save of ``path`` that failed with ``e``, naming the checkpoint that
    stays the latest (looked up now, after the failed save removed what it wrote)."""
    reason = e.strerror or str(e)
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    try:
        previous = latest_checkpoint(model_dir)
    except OSError as listing:
        kept = f"the earlier checkpoints could not be listed either ({listing.strerror or listing})"
    else:
        kept = f"the previous checkpoint {previous} is intact" if previous else \
            "no earlier checkpoint exists"
    return CheckpointError(f"Cannot write {what} {path}: {reason}{where}; {kept}. Free space or "
                           "fix the permissions, or choose another model_dir.")


class _Job(NamedTuple):
    step: int
    weights: dict
    state: Any
    meta: dict
    trainers: tuple = ()  # serialized trainer-<rank>.pt contents


class PendingSave:
    """A checkpoint being written in the background by :meth:`CheckpointManager.save_async`."""

    def __init__(self, step: int, path: str) -> None:
        self.step = step
        self.path = path
        self._done = threading.Event()
        self._error: BaseException | None = None

    def done(self) -> bool:
        """True once the checkpoint is committed or its save failed."""
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> str:
        """Wait for the commit; return the checkpoint's path or raise the save's error."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"Checkpoint {self.path} was not committed within {timeout} s.")
        if self._error is not None:
            raise self._error
        return self.path


class CheckpointManager:
    """Write checkpoints into ``model_dir`` and apply retention (the writer only).

    ``keep_checkpoint_max`` newest checkpoints are kept (0 or None keeps all); of the older
    ones, one per ``keep_checkpoint_every_n_hours`` is kept forever, as TF's Saver does.
    Construction checks that ``model_dir`` is (or can be made) a writable directory, removes
    leftovers of interrupted saves and rewrites a missing or unreadable index.
    """

    def __init__(self, model_dir: str, keep_checkpoint_max: int | None = 5,
                 keep_checkpoint_every_n_hours: float | None = 10000,
                 clock: Clock | None = None) -> None:
        if model_dir is None or not str(model_dir):
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
        self.model_dir = str(model_dir)
        self.keep_checkpoint_max = keep_checkpoint_max
        self.keep_checkpoint_every_n_hours = keep_checkpoint_every_n_hours
        self._clock = get_clock(clock)
        self._st = storage_for(self.model_dir)
        self._stager = Stager()
        self._pending: PendingSave | None = None
        self._thread: threading.Thread | None = None
        prepare_model_dir(self.model_dir)
        self.cleanup_temporaries()
        index = _read_index(self._st, self.model_dir)
        preserved = index.get("last_preserved_timestamp") if index else None
        self._last_preserved = float(preserved) if isinstance(preserved, (int, float)) \
            and not isinstance(preserved, bool) else self._clock.time()
        if index is None and _committed_names(self._st, self.model_dir):
            self._write_index(_entries(self._st, self.model_dir, index), [])

    def cleanup_temporaries(self) -> list[str]:
        """Remove leftovers of interrupted saves (see :func:`cleanup_temporaries`)."""
        return cleanup_temporaries(self.model_dir)

    def latest_checkpoint(self) -> str | None:
        """Path of the latest committed checkpoint in this model directory, or None."""
        return latest_checkpoint(self.model_dir)

    # -- index -----------------------------------------------------------------------------------
    def _write_index(self, entries: list[tuple[str, float]], preserved: list[str]) -> None:
        names = [n for n, _ in entries]
        index = {
            "latest": names[-1] if names else None,
            "all": names,
            "timestamps": [t for _, t in entries],
            "preserved": [n for n in preserved if n in names],
            "last_preserved_timestamp": self._last_preserved,
            "format_version": FORMAT_VERSION,
        }
        self._st.put(self._st.join(self.model_dir, INDEX_FILENAME),
                     json.dumps(index, indent=1).encode("utf-8"))

    # -- saving ----------------------------------------------------------------------------------
    def _job(self, step: Any, weights: Mapping, state: Mapping, meta: Mapping | None,
             stage: bool, trainer_states: Any = None) -> _Job:
        given = step
        try:
            step = -1 if isinstance(step, bool) else operator.index(step)
        except TypeError:
            step = -1
        if step < 0:
            raise ValueError(f"Checkpoint step must be an int >= 0, got {given!r}.")
        if not isinstance(state, Mapping):
            raise CheckpointError(f"state must be a dict, got {type(state).__name__}.")
        meta = dict(meta or {})
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"meta must be a JSON-serialisable dict: {e}.") from e
        state = to_weights_only_safe(dict(state), "state")
        trainers = tuple(_torch_bytes(to_weights_only_safe(dict(t), f"trainer {i} state"))
                         for i, t in enumerate(trainer_states or ()))
        if trainers:
            meta["num_trainers"] = len(trainers)
        if stage:  # the stager's buffers are CPU, contiguous and unshared: what the files need
            check_weights(weights)
            weights, state = self._stager.stage((dict(weights), state))
        else:
            weights = _prepare_weights(weights)
        return _Job(step, weights, state, meta, trainers)

    def save(self, step: int, weights: Mapping, state: Mapping, meta: Mapping | None = None,
             trainer_states: Any = None) -> str:
        """Write and commit checkpoint ``step``, update the index, apply retention; return its path.

        ``weights``: name -> tensor (e.g. ``module.state_dict()``); ``state``: a dict of plain
        containers, numbers, strings, tensors and numpy arrays (optimizer, scheduler, RNG,
        hooks, input position); ``meta``: JSON-serialisable extras for ``meta.json`` (e.g.
        ``config_uid``); ``trainer_states``: one small dict per trainer of a synchronous
        cluster (input position, RNG), written as ``trainer-<rank>.pt`` before the commit
        marker. Waits for a save in flight first. On failure nothing of this save is
        left and a :class:`~learnrun.errors.CheckpointError` names the path.
        """
        self.wait()
        return self._commit(self._job(step, weights, state, meta, stage=False,
                                      trainer_states=trainer_states))

    def save_async(self, step: int, weights: Mapping, state: Mapping,
                   meta: Mapping | None = None,
                   on_commit: Callable[[PendingSave], None] | None = None,
                   trainer_states: Any = None) -> PendingSave:
        """Copy the state to CPU memory now; write and commit it in a background thread.

        Trace: wait for the save in flight (re-raising its error), copy ``weights`` and
        ``state`` into reused CPU buffers, start the writer thread, return. The writer runs
        :meth:`save`'s steps, then ``on_commit(pending)`` (in the writer thread; failures
        included: check ``pending.result()``). Training may change the tensors as soon as
        this returns.
        """
        self.wait()
        job = self._job(step, weights, state, meta, stage=True, trainer_states=trainer_states)
        pending = PendingSave(job.step, self._st.join(self.model_dir, f"ckpt-{job.step}"))

        def write() -> None:
            try:
                self._commit(job)
            except BaseException as e:  # handed to whoever waits
                pending._error = e
            finally:
                pending._done.set()
                if on_commit is not None:
                    on_commit(pending)

        self._pending = pending
        self._thread = threading.Thread(target=write, name=f"learnrun-save-{job.step}",
                                        daemon=True)
        self._thread.start()
        return pending

    @property
    def in_flight(self) -> PendingSave | None:
        """The asynchronous save not yet waited for, if any."""
        return self._pending

    def wait(self, timeout: float | None = None) -> str | None:
        """Wait for the save in flight; return its path (None if none) or raise its error."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        try:
            return pending.result(timeout)
        except TimeoutError:
            self._pending = pending
            raise

    def _commit(self, job: _Job) -> str:
        st, model_dir = self._st, self.model_dir
        now = self._clock.time()
        name = f"ckpt-{job.step}"
        final = st.join(model_dir, name)
        try:
            self.cleanup_temporaries()
            index = _read_index(st, model_dir)
            preserved = list((index or {}).get("preserved") or [])
            entries = _entries(st, model_dir, index)
            if st.exists(final):  # a committed checkpoint of this step: it stops existing first
                entries = [e for e in entries if e[0] != name]
                self._write_index(entries, preserved)
                self._delete(final)
            st.makedirs(final)
        except OSError as e:
            raise _write_error(e, "checkpoint", final, model_dir) from e
        try:
            files = {
                WEIGHTS_FILENAME: self._write_parts(
                    st.join(final, WEIGHTS_FILENAME),
                    safetensors_parts(job.weights, {"step": str(job.step)})),
                STATE_FILENAME: self._write_parts(st.join(final, STATE_FILENAME),
                                                  [_torch_bytes(job.state)]),
            }
            for rank, data in enumerate(job.trainers):
                name_r = TRAINER_FILENAME.format(rank=rank)
                files[name_r] = self._write_parts(st.join(final, name_r), [data])
            record = dict(job.meta)
            record.update(step=job.step, time=now, learnrun_version=__version__,
                          torch_version=_torch_version(), format_version=FORMAT_VERSION,
                          checksum=CHECKSUM, files=files)
            st.write_bytes(st.join(final, META_FILENAME),
                           json.dumps(record, indent=1, sort_keys=True).encode("utf-8"))
            st.sync_dir(final)
            st.sync_dir(model_dir)
        except BaseException as e:
            try:
                st.rmtree(final)
            except OSError:
                logger.warning("Could not remove the partial checkpoint %s; the next save "
                               "removes it.", final)
            if isinstance(e, OSError):
                raise _write_error(e, "checkpoint", final, model_dir) from e
            raise
        # committed: from here on a failure costs only the index, which heals itself
        entries = [e for e in entries if e[0] != name] + [(name, now)]
        entries.sort(key=lambda e: _step_of(e[0]))
        dropped = self._retain(entries, preserved)
        entries = [e for e in entries if e[0] not in dropped]
        try:
            self._write_index(entries, preserved)
            for d in sorted(dropped, key=_step_of):
                self._delete(st.join(model_dir, d))
        except OSError as e:
            logger.warning("Checkpoint %s is committed, but updating the index or deleting old "
                           "checkpoints failed: %s. The next save retries.", final, e)
        return final

    def _write_parts(self, path: str, parts: Iterable) -> dict:
        hasher = _new_hasher()
        size = 0
        with self._st.open_write(path) as f:
            for part in parts:
                view = memoryview(part).cast("B")
                for start in range(0, len(view), _CHUNK):
                    chunk = view[start:start + _CHUNK]
                    hasher.update(chunk)
                    f.write(chunk)
                size += len(view)
        return {"size": size, CHECKSUM: hasher.hexdigest()}

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
        """Uncommit checkpoint ``path`` (its ``meta.json`` first), then remove its files."""
        self._st.remove(self._st.join(path, META_FILENAME))
        self._st.rmtree(path)


def _torch_bytes(obj: Any) -> memoryview:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getbuffer()


def _torch_version() -> str:
    import torch

    return str(torch.__version__)
