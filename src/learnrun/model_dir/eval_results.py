"""Evaluation results: ``eval_<name>/results.jsonl``, one JSON line per evaluated checkpoint.

This module is the only reader and writer of those files. :func:`append_eval_result` appends
a record (flushed and fsynced, so a reader never sees half a record except after a crash; on
an object store, which cannot append, the file is read, extended and written whole);
:func:`read_eval_results` reads one evaluation's records and skips a line torn by a crash;
:func:`read_all_eval_results` reads every evaluation of a model directory.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from collections.abc import Mapping
from typing import Any

from learnrun.model_dir.storage import join, storage_for

logger = logging.getLogger(__name__)

RESULTS_FILENAME = "results.jsonl"


def eval_dir(model_dir: str, name: str | None = None) -> str:
    """Return ``model_dir/eval`` (``name`` None) or ``model_dir/eval_<name>``."""
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"Evaluation name must be a non-empty string or None, got {name!r}.")
    return join(os.fspath(model_dir), "eval" if name is None else f"eval_{name}")


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
    eval_dir = os.fspath(eval_dir)
    st = storage_for(eval_dir)
    st.makedirs(eval_dir)
    path = st.join(eval_dir, RESULTS_FILENAME)
    st.append(path, (line + "\n").encode("utf-8"))
    return path


def read_eval_results(eval_dir: str) -> list[dict]:
    """Return the records of ``eval_dir/results.jsonl`` in order ([] when there is none).

    Unparseable lines (a record torn by a crash) are skipped with a warning.
    """
    eval_dir = os.fspath(eval_dir)
    st = storage_for(eval_dir)
    path = st.join(eval_dir, RESULTS_FILENAME)
    try:
        lines = st.read_bytes(path).decode("utf-8", errors="replace").splitlines()
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


def results_path(eval_dir: str) -> str:
    """The ``results.jsonl`` file of an evaluation directory."""
    return join(os.fspath(eval_dir), RESULTS_FILENAME)


def eval_name_of(eval_dir: str) -> str | None:
    """The evaluation name of an ``eval``/``eval_<name>`` directory (None for plain ``eval``)."""
    base = storage_for(os.fspath(eval_dir)).basename(os.fspath(eval_dir))
    return None if base == "eval" else base[len("eval_"):]


def eval_dirs(model_dir: str) -> list[str]:
    """Every ``eval``/``eval_<name>`` directory of ``model_dir`` that has results, sorted."""
    st = storage_for(os.fspath(model_dir))
    st.refresh(os.fspath(model_dir))
    pattern = st.join(os.fspath(model_dir), "eval*", RESULTS_FILENAME)
    return [st.dirname(p) for p in st.glob(pattern)]


def read_all_eval_results(model_dir: str) -> list[tuple[str, dict[str, Any]]]:
    """Every record of ``model_dir/eval*/results.jsonl`` as ``(eval name, record)`` pairs.

    The name is ``"eval"`` for the unnamed evaluation and ``<name>`` for ``eval_<name>``.
    """
    return [(eval_name_of(d) or "eval", record)
            for d in eval_dirs(model_dir) for record in read_eval_results(d)]


def read_results_matching(pattern: str) -> list[dict]:
    """The records of every ``results.jsonl`` that the glob ``pattern`` matches, file by file."""
    st = storage_for(os.fspath(pattern))
    return [record for path in st.glob(os.fspath(pattern))
            for record in read_eval_results(st.dirname(path))
            if st.basename(path) == RESULTS_FILENAME]
