"""What the command line prints: the role, final metrics, checkpoints and where outputs are."""

from __future__ import annotations

import datetime
import os
import shlex
from typing import TYPE_CHECKING

from learnrun.errors import CLIError, StorageError
from learnrun.model_dir.checkpoints import (
    latest_checkpoint,
    list_checkpoints,
    verify_checkpoints,
)
from learnrun.model_dir.eval_results import read_all_eval_results
from learnrun.model_dir.storage import check_access, redact, storage_for
from learnrun.runner import default_schedule
from learnrun.tables import format_table, format_value

if TYPE_CHECKING:
    from learnrun.config.run_config import RunConfig

# --------------------------------------------------------------------------- roles


def default_schedule_for(config: RunConfig) -> str:
    """Name the schedule :func:`learnrun.run` will pick for ``config`` (for display)."""
    try:
        return default_schedule(config)
    except (ValueError, TypeError) as exc:
        return f"(none: {exc})"


def describe_role(config: RunConfig) -> str:
    """One phrase for the process's role: ``chief 0 of 4 tasks (TF_CONFIG)`` or ``local``."""
    source = config.cluster_source
    task_type = config.task_type
    task_id = config.task_id
    if not source:
        return "local (not distributed)"
    world = config.world_size
    if task_type == "evaluator":
        extra = f", outside the {world} training task(s)" if world else ""
    else:
        extra = f", world size {world}" if world else ""
    return f"{task_type} {task_id} ({source}{extra})"


def _human_size(num: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num < 1024 or unit == "GiB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1024
    return f"{num:.1f} GiB"


def _dir_size(path: str) -> int:
    return storage_for(path).du(path)


def format_checkpoints(model_dir: str, verify: bool = False) -> str:
    """Table of the checkpoints of ``model_dir`` with step, time, size and eval metrics.

    ``verify``: check every checkpoint's files against its ``meta.json`` (sizes and
    checksums; reads everything) and add a ``verified`` column; damaged ones are listed too.
    """
    return checkpoint_report(model_dir, verify)[0]


def checkpoint_report(model_dir: str, verify: bool = False) -> tuple[str, int]:
    """``(table, number of damaged checkpoints)``: see :func:`format_checkpoints`."""
    try:
        st = storage_for(model_dir)
        check_access(model_dir)
        exists = st.exists(model_dir)
    except StorageError as exc:
        if exc.bad_input:
            raise CLIError(str(exc)) from exc
        raise
    shown = redact(model_dir)
    if not exists:
        raise CLIError(f"no such directory: {shown!r}; give a model_dir that training wrote")
    if not st.isdir(model_dir):
        raise CLIError(f"{shown!r} is a file, not a directory; give a model_dir that "
                       "training wrote")
    index = st.join(model_dir, "checkpoint")
    entries = st.listdir(model_dir)
    looks_like_model_dir = st.exists(index) or any(
        e.startswith(("ckpt-", "eval", "events.out.tfevents", "export")) for e in entries)
    if not looks_like_model_dir:
        raise CLIError(
            f"{shown!r} is not a model directory: it has no checkpoint index "
            f"({index}), ckpt-*, eval or events files; give the --model-dir that training wrote")
    if verify:
        checked = verify_checkpoints(model_dir)
    else:
        checked = [(info, None) for info in list_checkpoints(model_dir)]
    if not checked:
        return f"no checkpoints in {shown} yet (no ckpt-*/ holds a meta.json)", 0
    evals = read_all_eval_results(model_dir)
    latest = latest_checkpoint(model_dir)
    rows = []
    damaged = 0
    for info, problem in checked:
        base = os.path.basename(os.path.normpath(info.path))
        parts = []
        for name, record in evals:
            rec_path = record.get("checkpoint_path")
            same = (
                os.path.basename(os.path.normpath(rec_path)) == base
                if rec_path
                else record.get("global_step") == info.step
            )
            if same:
                metrics = " ".join(
                    f"{k}={format_value(v)}" for k, v in sorted(record.items())
                    if k not in ("checkpoint_path", "global_step", "time", "timestamp")
                    and isinstance(v, (int, float))
                )
                parts.append(f"[{name}] {metrics}")
        when = datetime.datetime.fromtimestamp(info.time).strftime("%Y-%m-%d %H:%M:%S")
        mark = " *" if latest and os.path.normpath(latest) == os.path.normpath(info.path) else ""
        row = [f"{info.step}{mark}", when, _human_size(_dir_size(info.path))]
        if verify:
            damaged += problem is not None
            row.append("ok" if problem is None else f"DAMAGED: {problem}")
        rows.append([*row, "; ".join(parts) or "-"])
    headers = ["step", "time", "size", *(["verified"] if verify else []), "eval metrics"]
    table = format_table(headers, rows)
    summary = f"{shown}: {len(checked)} checkpoint(s), * = latest"
    if verify:
        summary += f"; {damaged} damaged" if damaged else "; all verified"
    return f"{summary}\n{table}", damaged


def latest_export(model_dir: str) -> str | None:
    """The newest ``model_dir/export/<strategy>/<timestamp>`` directory, if any."""
    st = storage_for(model_dir)
    dirs = [d for d in st.glob(st.join(model_dir, "export", "*", "*"))
            if st.basename(d).isdigit() and st.isdir(d)]
    return max(dirs, key=lambda d: int(st.basename(d))) if dirs else None


def output_locations(model_dir: str) -> str:
    """Where a run left its checkpoints, TensorBoard logs and exports, and how to look."""
    model_dir = redact(model_dir)
    q = shlex.quote(model_dir)
    lines = [
        "outputs:",
        f"  checkpoints: {model_dir}   (learnrun checkpoints {q})",
        f"  TensorBoard: {model_dir}   (tensorboard --logdir {q})",
    ]
    export = latest_export(model_dir)
    if export:
        lines.append(f"  export:      {export}")
        lines.append(
            "               (python -c \"import learnrun; "
            f"p = learnrun.export.load_export({export!r}); print(p)\")"
        )
    return "\n".join(lines)
