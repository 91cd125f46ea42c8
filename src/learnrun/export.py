"""Exports for serving: timestamped export dirs, export strategies, GC and a loader.

An export is ``<export_dir_base>/<10-digit unix time>/`` (written as ``temp-<time>/``, then
renamed) holding ``model.safetensors`` (the module's weights), ``program.pt2`` (a
``torch.export`` program of ``predictions_fn(module(features))`` in eval mode, with a dynamic
batch dimension when possible), ``signature.json`` (input/output names, dtypes, shapes with
the batch dimension as null) and ``assets.extra/``. :func:`load_export` gives a callable
:class:`Predictor`. The strategies, GC helpers and error texts follow TF's
``saved_model_export_utils``, ``export_strategy`` and ``gc`` modules. The writer and loader of
one export (:func:`write_export`, :func:`load_export`, :class:`Predictor`) live in
``learnrun.export_program`` and are re-exported here.
"""

from __future__ import annotations

import collections
import glob
import heapq
import inspect
import logging
import math
import os
import re
import shutil
from collections.abc import Callable, Mapping
from typing import Any

from learnrun.clock import Clock, get_clock
from learnrun.export_program import (  # re-exported: the writer and loader of one export
    ASSETS_EXTRA,
    PROGRAM_FILENAME,
    SIGNATURE_FILENAME,
    WEIGHTS_FILENAME,
    Predictor,
    ServingInputReceiver,
    load_export,
    write_export,
)

logger = logging.getLogger(__name__)

__all__ = [
    "Path",
    "largest_export_versions",
    "one_of_every_n_export_versions",
    "mod_export_version",
    "union",
    "negation",
    "get_paths",
    "get_timestamped_export_dir",
    "get_temp_export_dir",
    "get_most_recent_export",
    "garbage_collect_exports",
    "MAX_DIRECTORY_CREATION_ATTEMPTS",
    "ExportStrategy",
    "make_export_strategy",
    "BestModelSelector",
    "make_best_model_export_strategy",
    "extend_export_strategy",
    # from learnrun.export_program
    "ServingInputReceiver",
    "write_export",
    "Predictor",
    "load_export",
    "WEIGHTS_FILENAME",
    "PROGRAM_FILENAME",
    "SIGNATURE_FILENAME",
    "ASSETS_EXTRA",
]

MAX_DIRECTORY_CREATION_ATTEMPTS = 10
_VERSION_RE = re.compile(r"^[0-9]{10}$")

# ---------------------------------------------------------------------------------- gc helpers

Path = collections.namedtuple("Path", "path export_version")


def largest_export_versions(n: int) -> Callable[[list[Path]], list[Path]]:
    """Filter keeping the ``n`` largest export versions (None versions ignored), sorted."""

    def keep(paths):
        heap = [(p.export_version, i) for i, p in enumerate(paths) if p.export_version is not None]
        return sorted(paths[i] for _, i in heapq.nlargest(n, heap))

    return keep


def one_of_every_n_export_versions(n: int) -> Callable[[list[Path]], list[Path]]:
    """Filter keeping the largest version of each interval [0, n], (n, 2n], (2n, 3n], ..."""

    def keep(paths):
        keepers: dict[int, Path] = {}
        for p in paths:
            if p.export_version is None:
                continue
            interval = math.floor((p.export_version - 1) / n) if p.export_version else 0
            if interval not in keepers or keepers[interval].export_version < p.export_version:
                keepers[interval] = p
        return sorted(keepers.values())

    return keep


def mod_export_version(n: int) -> Callable[[list[Path]], list[Path]]:
    """Filter keeping the versions divisible by ``n``."""

    def keep(paths):
        return sorted(p for p in paths if p.export_version is not None and p.export_version % n == 0)

    return keep


def union(lf: Callable, rf: Callable) -> Callable[[list[Path]], list[Path]]:
    """Filter keeping what either ``lf`` or ``rf`` keeps."""

    def keep(paths):
        return sorted(set(lf(paths)) | set(rf(paths)))

    return keep


def negation(f: Callable) -> Callable[[list[Path]], list[Path]]:
    """Filter keeping what ``f`` does not keep."""

    def keep(paths):
        return sorted(set(paths) - set(f(paths)))

    return keep


def get_paths(base_dir: str | bytes, parser: Callable[[Path], Path | None]) -> list[Path]:
    """List ``base_dir``, give each child as ``Path(path, None)`` to ``parser``, drop Nones, sort."""
    base = os.fsdecode(base_dir)
    paths = (parser(Path(os.path.join(base, name), None)) for name in os.listdir(base))
    return sorted(p for p in paths if p is not None)


def _export_version_parser(path: Path) -> Path | None:
    name = os.path.basename(path.path)
    return path._replace(export_version=int(name)) if _VERSION_RE.match(name) else None


# ------------------------------------------------------------------------- export directories


def get_timestamped_export_dir(export_dir_base: str, clock: Clock | None = None) -> str:
    """Return ``export_dir_base/<unix time>`` that does not exist yet (not created).

    When it exists, sleeps 1 s (on ``clock``) and retries, up to 10 attempts.
    """
    clock = get_clock(clock)
    base = os.fsdecode(export_dir_base)
    for attempt in range(1, MAX_DIRECTORY_CREATION_ATTEMPTS + 1):
        result = os.path.join(base, str(int(clock.time())))
        if not os.path.exists(result) and not os.path.exists(get_temp_export_dir(result)):
            return result
        clock.sleep(1)
        logger.warning("Export directory %s already exists; retrying (attempt %d/%d)",
                       result, attempt, MAX_DIRECTORY_CREATION_ATTEMPTS)
    raise RuntimeError("Failed to obtain a unique export directory name after "
                       f"{MAX_DIRECTORY_CREATION_ATTEMPTS} attempts.")


def get_temp_export_dir(timestamped_export_dir: str) -> str:
    """Return the sibling ``temp-<basename>`` of a timestamped export dir (ignored by serving)."""
    dirname, basename = os.path.split(os.fsdecode(timestamped_export_dir))
    return os.path.join(dirname, f"temp-{basename}")


def get_most_recent_export(export_dir_base: str) -> Path | None:
    """Return ``Path(path, export_version)`` of the newest 10-digit export, or None."""
    if not os.path.isdir(os.fsdecode(export_dir_base)):
        return None
    found = largest_export_versions(1)(get_paths(export_dir_base, _export_version_parser))
    return found[0] if found else None


def garbage_collect_exports(export_dir_base: str, exports_to_keep: int | None) -> None:
    """Delete all but the ``exports_to_keep`` newest exports in ``export_dir_base``.

    Only children named by exactly 10 digits are considered; None keeps everything, 0 deletes
    every export.
    """
    if exports_to_keep is None or not os.path.isdir(os.fsdecode(export_dir_base)):
        return
    delete = negation(largest_export_versions(exports_to_keep))
    for p in delete(get_paths(export_dir_base, _export_version_parser)):
        try:
            shutil.rmtree(p.path)
        except FileNotFoundError as e:
            logger.warning("Can not delete %s recursively: %s", p.path, e)


# ------------------------------------------------------------------------ export strategies


def _fn_args(fn: Callable) -> tuple[str, ...]:
    return tuple(inspect.signature(fn).parameters)


class ExportStrategy(collections.namedtuple("ExportStrategy", ["name", "export_fn", "strip_default_attrs"])):
    """A named export function run by Experiment / train_and_evaluate after evaluations.

    ``export_fn(estimator, export_path, [checkpoint_path], [eval_result], [strip_default_attrs])``
    gets only the optional arguments its signature declares.
    """

    def __new__(cls, name: str, export_fn: Callable, strip_default_attrs: bool | None = None):
        return super().__new__(cls, name, export_fn, strip_default_attrs)

    def export(self, estimator: Any, export_path: str, checkpoint_path: str | None = None,
               eval_result: dict | None = None) -> Any:
        """Call ``export_fn`` with the arguments it accepts; return its result."""
        args = _fn_args(self.export_fn)
        kwargs: dict[str, Any] = {}
        if "checkpoint_path" in args:
            kwargs["checkpoint_path"] = checkpoint_path
        if "eval_result" in args:
            if "checkpoint_path" not in args:
                raise ValueError("An export_fn accepting eval_result must also accept checkpoint_path.")
            kwargs["eval_result"] = eval_result
        if "strip_default_attrs" in args:
            kwargs["strip_default_attrs"] = self.strip_default_attrs
        return self.export_fn(estimator, export_path, **kwargs)


def make_export_strategy(serving_input_fn: Callable, default_output_alternative_key: str | None = None,
                         assets_extra: Mapping[str, str] | None = None, as_text: bool = False,
                         exports_to_keep: int | None = 5,
                         strip_default_attrs: bool | None = None) -> ExportStrategy:
    """Return ``ExportStrategy('Servo', ...)`` calling ``estimator.export_savedmodel`` then GC."""

    def export_fn(estimator, export_dir_base, checkpoint_path=None, strip_default_attrs=False):
        if default_output_alternative_key is not None:
            raise ValueError("default_output_alternative_key is not supported in core Estimator. "
                             f"Given: {default_output_alternative_key}")
        result = estimator.export_savedmodel(export_dir_base, serving_input_fn,
                                             assets_extra=assets_extra, as_text=as_text,
                                             checkpoint_path=checkpoint_path,
                                             strip_default_attrs=strip_default_attrs)
        garbage_collect_exports(export_dir_base, exports_to_keep)
        return result

    return ExportStrategy("Servo", export_fn, strip_default_attrs)


def _default_compare_fn(curr_best_eval_result: Mapping | None, cand_eval_result: Mapping | None) -> bool:
    if not curr_best_eval_result or "loss" not in curr_best_eval_result:
        raise ValueError("curr_best_eval_result cannot be empty or no loss is found in it.")
    if not cand_eval_result or "loss" not in cand_eval_result:
        raise ValueError("cand_eval_result cannot be empty or no loss is found in it.")
    return curr_best_eval_result["loss"] > cand_eval_result["loss"]


def _read_summary_results(pattern: str) -> list[dict]:
    """Return one ``{tag: value}`` dict per (file, step) of the event files matching ``pattern``.

    Uses tensorboard's EventAccumulator; without tensorboard, reads the ``results.jsonl`` of
    the matched files' directories instead.
    """
    files = sorted(glob.glob(pattern))
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        from learnrun.estimator.summary import read_eval_results

        dirs = dict.fromkeys(os.path.dirname(f) for f in files)
        return [r for d in dirs for r in read_eval_results(d)]
    results = []
    for file in files:
        if os.path.basename(file).endswith(".jsonl"):
            continue
        acc = EventAccumulator(file, size_guidance={"scalars": 0})
        acc.Reload()
        by_step: dict[int, dict] = {}
        for tag in acc.Tags()["scalars"]:
            for event in acc.Scalars(tag):
                by_step.setdefault(event.step, {})[tag] = event.value
        results.extend(by_step[s] for s in sorted(by_step))
    return results


class BestModelSelector:
    """Keeps the best evaluation result seen so far (initially the best found in event files)."""

    def __init__(self, event_file_pattern: str | None = None, compare_fn: Callable | None = None) -> None:
        self._compare_fn = compare_fn or _default_compare_fn
        self._best_eval_result = self._get_best_eval_result(event_file_pattern)

    def _get_best_eval_result(self, pattern: str | None) -> dict | None:
        if not pattern:
            return None
        best = None
        for result in _read_summary_results(pattern):
            if self._compare_fn is _default_compare_fn and "loss" not in result:
                continue  # a summary step without a loss (e.g. training throughput)
            if best is None or self._compare_fn(best, result):
                best = result
        return best

    def update(self, checkpoint_path: str, eval_result: dict | None) -> tuple[str, dict | None]:
        """Return ``(checkpoint_path, eval_result)`` when it is the new best, else ``('', None)``."""
        if not checkpoint_path:
            raise ValueError("Checkpoint path is empty.")
        if eval_result is None:
            raise ValueError(f"{checkpoint_path} has empty evaluation results.")
        if self._best_eval_result is None or self._compare_fn(self._best_eval_result, eval_result):
            self._best_eval_result = eval_result
            return checkpoint_path, eval_result
        return "", None


def make_best_model_export_strategy(serving_input_fn: Callable, exports_to_keep: int | None = 1,
                                    model_dir: str | None = None, event_file_pattern: str | None = None,
                                    compare_fn: Callable | None = None,
                                    default_output_alternative_key: str | None = None,
                                    strip_default_attrs: bool | None = None) -> ExportStrategy:
    """Return ``ExportStrategy('best_model', ...)`` exporting only checkpoints that beat the best.

    Each selected checkpoint is exported into ``export_dir_base/<checkpoint basename>/``. The
    best result survives a restart only when both ``model_dir`` and ``event_file_pattern``
    (relative to it, e.g. ``"eval/*.tfevents.*"``) are given.
    """
    strategy = make_export_strategy(serving_input_fn, exports_to_keep=exports_to_keep,
                                    default_output_alternative_key=default_output_alternative_key,
                                    strip_default_attrs=strip_default_attrs)
    pattern = os.path.join(model_dir, event_file_pattern) if model_dir and event_file_pattern else None
    selector = BestModelSelector(pattern, compare_fn)

    def export_fn(estimator, export_dir_base, checkpoint_path, eval_result=None):
        if not checkpoint_path:
            if hasattr(estimator, "latest_checkpoint"):
                checkpoint_path = estimator.latest_checkpoint()
            else:
                from learnrun.estimator.checkpoint import latest_checkpoint

                checkpoint_path = latest_checkpoint(estimator.model_dir)
        path, result = selector.update(checkpoint_path, eval_result)
        if path and result is not None:
            export_dir = os.path.join(export_dir_base, os.path.basename(os.path.normpath(path)))
            return strategy.export(estimator, export_dir, path, result)
        return ""

    return ExportStrategy("best_model", export_fn)


def extend_export_strategy(base_export_strategy: ExportStrategy,
                           post_export_fn: Callable[[str, str], str],
                           post_export_name: str | None = None,
                           clock: Clock | None = None) -> ExportStrategy:
    """Run ``base_export_strategy`` then ``post_export_fn(base_export_path, temp_dir)``.

    ``post_export_fn`` writes under ``temp_dir`` and returns a sub-directory of it, which is
    moved to ``export_dir_base/<its path relative to temp_dir>``; that path is returned.
    """
    clock = get_clock(clock)

    def export_fn(estimator, export_dir_base, checkpoint_path=None):
        tmp_base = os.path.join(export_dir_base, f"temp-base-export-{int(clock.time())}")
        if os.path.exists(tmp_base):
            raise RuntimeError("Failed to obtain base export directory")
        os.makedirs(tmp_base)
        tmp_post = None
        try:
            base_export = base_export_strategy.export(estimator, tmp_base, checkpoint_path)
            tmp_post = os.path.join(export_dir_base, f"temp-post-export-{int(clock.time())}")
            if os.path.exists(tmp_post):
                tmp_post = None
                raise RuntimeError("Failed to obtain temp export directory")
            os.makedirs(tmp_post)
            result = os.fsdecode(post_export_fn(base_export, tmp_post))
            rel = os.path.relpath(os.path.abspath(result), os.path.abspath(tmp_post))
            if rel == "." or rel.startswith(".."):
                raise ValueError(f"post_export_fn must return a sub-directory of {tmp_post}")
            final = os.path.join(export_dir_base, rel)
            if os.path.exists(final):
                raise RuntimeError("Failed to obtain final export directory")
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.rename(result, final)
            return final
        finally:
            shutil.rmtree(tmp_base, ignore_errors=True)
            if tmp_post:
                shutil.rmtree(tmp_post, ignore_errors=True)

    return ExportStrategy(post_export_name or base_export_strategy.name, export_fn)
