"""Export strategies: when and how an Experiment exports, following TF's ``export_strategy``.

:func:`make_export_strategy` exports the latest checkpoint after each evaluation;
:func:`make_best_model_export_strategy` exports only when the evaluation beats the best one
recorded in the model directory (``BestModelSelector``); :func:`extend_export_strategy`
post-processes an export. Each export is written by :func:`learnrun.export.write_export` and
old ones are deleted by :func:`learnrun.export.garbage_collect_exports`.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from typing import Any

from learnrun.clock import Clock, get_clock
from learnrun.errors import StorageError
from learnrun.export.gc import garbage_collect_exports
from learnrun.model_dir import eval_results
from learnrun.model_dir.checkpoints import latest_checkpoint
from learnrun.model_dir.storage import is_remote, is_url, join, redact, storage_for
from learnrun.signatures import parameter_names

logger = logging.getLogger(__name__)

__all__ = [
    "ExportStrategy",
    "make_export_strategy",
    "BestModelSelector",
    "make_best_model_export_strategy",
    "extend_export_strategy",
]

# ------------------------------------------------------------------------ export strategies


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
        args = parameter_names(self.export_fn)
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
    st = storage_for(pattern)
    files = st.glob(pattern)
    try:
        if is_remote(pattern):  # event files stay local to the reader: use results.jsonl
            raise ImportError
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        dirs = dict.fromkeys(st.dirname(f) for f in files)
        return [r for d in dirs for r in eval_results.read_eval_results(d)]
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
    pattern = join(model_dir, event_file_pattern) if model_dir and event_file_pattern else None
    selector = BestModelSelector(pattern, compare_fn)

    def export_fn(estimator, export_dir_base, checkpoint_path, eval_result=None):
        if not checkpoint_path:
            if hasattr(estimator, "latest_checkpoint"):
                checkpoint_path = estimator.latest_checkpoint()
            else:
                checkpoint_path = latest_checkpoint(estimator.model_dir)
        path, result = selector.update(checkpoint_path, eval_result)
        if path and result is not None:
            export_dir = join(export_dir_base, storage_for(path).basename(path))
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
        if is_url(export_dir_base):
            raise StorageError(f"extend_export_strategy moves directories, which "
                               f"{redact(export_dir_base)} cannot do; give it a local export "
                               "directory.", bad_input=True)
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
