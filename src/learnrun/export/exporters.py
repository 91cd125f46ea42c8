"""Exporters of ``train_and_evaluate`` (TF's ``tf.estimator.Exporter`` family).

An exporter is called by the evaluation loop after every evaluation with the evaluated
checkpoint and its metrics; it writes ``<model_dir>/export/<exporter.name>/<timestamp>/`` through
``estimator.export_savedmodel`` (``learnrun.export.write_export``) or returns None:

* ``FinalExporter``: only the final evaluation (``is_the_final_export``).
* ``LatestExporter``: every evaluation, keeping the newest ``exports_to_keep`` exports.
* ``BestExporter``: when ``compare_fn`` says the model beats the best so far (loss by default),
  the best so far being recovered from ``results.jsonl`` after a restart.

``learnrun.training`` re-exports all public names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from learnrun.export.gc import garbage_collect_exports
from learnrun.model_dir import eval_results
from learnrun.model_dir.storage import join
from learnrun.signatures import parameter_names

__all__ = ["Exporter", "LatestExporter", "BestExporter", "FinalExporter"]


class Exporter:
    """Base class of exporters: ``name`` and ``export(...)`` (TF's ``tf.estimator.Exporter``)."""

    @property
    def name(self) -> str:
        raise NotImplementedError("Exporter.name must be implemented by a subclass.")

    def export(
        self,
        estimator: Any,
        export_path: str,
        checkpoint_path: str | None,
        eval_result: dict | None,
        is_the_final_export: bool,
    ) -> Any:
        """Export ``checkpoint_path`` under ``export_path``; returns the export path or None."""
        raise NotImplementedError("Exporter.export must be implemented by a subclass.")


def validate_exporters(exporters: Any) -> tuple[Any, ...]:
    if not exporters:
        return ()
    if isinstance(exporters, Exporter):
        exporters = [exporters]
    message = "`exporters` must be an Exporter, an iterable of Exporter, or `None`, found %s."
    try:
        exporters = tuple(exporters)
    except TypeError:
        raise TypeError(message % (exporters,)) from None
    names = []
    for exporter in exporters:
        if not isinstance(exporter, Exporter):
            raise TypeError(message % (exporter,))
        names.append(exporter.name)
    for name in names:
        if not name:
            raise ValueError(
                "An Exporter cannot have a name that is `None` or empty. All exporter names: "
                f"{names}"
            )
        if not isinstance(name, str):
            raise ValueError(f"An Exporter must have a string name. Given: {type(name)} ({name!r})")
    if len(set(names)) != len(names):
        raise ValueError(
            "`exporters` must have unique names. Such a name cannot be `None`. All exporter "
            f"names: {names}"
        )
    return exporters


def _check_exports_to_keep(exports_to_keep: int | None) -> None:
    if exports_to_keep is not None and exports_to_keep <= 0:
        raise ValueError(
            f"`exports_to_keep`, if provided, must be a positive number. Got {exports_to_keep}"
        )


class _SavedModelExporter(Exporter):
    def __init__(self, name, serving_input_receiver_fn, assets_extra=None, as_text=False):
        self._name = name
        self._serving_input_receiver_fn = serving_input_receiver_fn
        self._assets_extra = assets_extra
        self._as_text = as_text

    @property
    def name(self) -> str:
        return self._name

    def _export(self, estimator, export_path, checkpoint_path):
        return estimator.export_savedmodel(
            export_path,
            self._serving_input_receiver_fn,
            assets_extra=self._assets_extra,
            as_text=self._as_text,
            checkpoint_path=checkpoint_path,
        )


class FinalExporter(_SavedModelExporter):
    """Export only the final model (``is_the_final_export``); returns None otherwise."""

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        if not is_the_final_export:
            return None
        return self._export(estimator, export_path, checkpoint_path)


class LatestExporter(_SavedModelExporter):
    """Export every evaluated checkpoint and keep the newest ``exports_to_keep`` exports."""

    def __init__(
        self,
        name,
        serving_input_receiver_fn,
        assets_extra=None,
        as_text=False,
        exports_to_keep: int | None = 5,
    ):
        super().__init__(name, serving_input_receiver_fn, assets_extra, as_text)
        _check_exports_to_keep(exports_to_keep)
        self._exports_to_keep = exports_to_keep

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        path = self._export(estimator, export_path, checkpoint_path)
        garbage_collect_exports(export_path, self._exports_to_keep)
        return path


def _loss_smaller(best_eval_result: dict, current_eval_result: dict) -> bool:
    """True when ``current_eval_result['loss']`` is strictly below the best one."""
    if not best_eval_result or "loss" not in best_eval_result:
        raise ValueError("best_eval_result cannot be empty or no loss is found in it.")
    if not current_eval_result or "loss" not in current_eval_result:
        raise ValueError("current_eval_result cannot be empty or no loss is found in it.")
    return best_eval_result["loss"] > current_eval_result["loss"]


class BestExporter(_SavedModelExporter):
    """Export when ``compare_fn(best_eval_result=, current_eval_result=)`` says the model is better.

    The best result so far is recovered after a restart from the evaluation records matching
    ``event_file_pattern`` under ``model_dir`` (``results.jsonl`` written by
    ``Estimator.evaluate``; default the unnamed evaluation, ``eval/results.jsonl``), leaving out
    the record of the checkpoint being exported.
    """

    def __init__(
        self,
        name: str = "best_exporter",
        serving_input_receiver_fn=None,
        event_file_pattern: str | None = "eval/results.jsonl",
        compare_fn: Callable[..., bool] = _loss_smaller,
        assets_extra=None,
        as_text=False,
        exports_to_keep: int | None = 5,
    ):
        if not callable(compare_fn):
            raise ValueError(f"`compare_fn` must be callable, given: {compare_fn!r}")
        params = parameter_names(compare_fn)
        if "best_eval_result" not in params or "current_eval_result" not in params:
            raise ValueError(
                "compare_fn must include best_eval_result and current_eval_result in its "
                f"arguments; got {list(params)}."
            )
        _check_exports_to_keep(exports_to_keep)
        super().__init__(name, serving_input_receiver_fn, assets_extra, as_text)
        self._event_file_pattern = event_file_pattern
        self._compare_fn = compare_fn
        self._exports_to_keep = exports_to_keep
        self._model_dir: str | None = None
        self._best_eval_result: dict | None = None

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        if self._model_dir != estimator.model_dir and self._event_file_pattern:
            self._model_dir = estimator.model_dir
            pattern = join(self._model_dir, self._event_file_pattern)
            self._best_eval_result = self._best_recorded_result(pattern, checkpoint_path)
        if self._best_eval_result is None or self._compare_fn(
            best_eval_result=self._best_eval_result, current_eval_result=eval_result
        ):
            path = self._export(estimator, export_path, checkpoint_path)
            garbage_collect_exports(export_path, self._exports_to_keep)
            self._best_eval_result = eval_result
            return path
        return None

    def _best_recorded_result(self, pattern: str, current_checkpoint: str | None) -> dict | None:
        """The best record under ``pattern``, ignoring those of ``current_checkpoint``.

        The evaluation being exported has already appended its own record; counting it as the
        best so far would make the first export after a (re)start compare equal and skip.
        """
        best = None
        for record in eval_results.read_results_matching(pattern):
            if current_checkpoint and record.get("checkpoint_path") == current_checkpoint:
                continue
            if best is None or self._compare_fn(best_eval_result=best, current_eval_result=record):
                best = record
        return best
