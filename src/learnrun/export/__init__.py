"""Exports for serving: write, load, choose and garbage-collect ``export/<name>/<version>/``.

An export is ``<export_dir_base>/<10-digit unix time>/`` holding ``model.safetensors`` (the
module's weights), ``program.pt2`` (a ``torch.export`` program of
``predictions_fn(module(features))`` in eval mode, with a dynamic batch dimension when
possible), ``signature.json`` (input/output names, dtypes and shapes, written last) and
``assets.extra/``. :func:`load_export` gives a callable :class:`Predictor`.

* :mod:`learnrun.export.artifact` writes and loads one export.
* :mod:`learnrun.export.strategies` decides when an Experiment exports (TF's export strategies).
* :mod:`learnrun.export.exporters` are ``train_and_evaluate``'s exporters (Latest, Best, Final).
* :mod:`learnrun.export.gc` lists export versions and deletes old ones.
"""

from __future__ import annotations

from learnrun.export.artifact import (
    ASSETS_EXTRA,
    MAX_DIRECTORY_CREATION_ATTEMPTS,
    PROGRAM_FILENAME,
    SIGNATURE_FILENAME,
    WEIGHTS_FILENAME,
    Predictor,
    ServingInputReceiver,
    get_temp_export_dir,
    get_timestamped_export_dir,
    load_export,
    write_export,
)
from learnrun.export.exporters import BestExporter, Exporter, FinalExporter, LatestExporter
from learnrun.export.gc import (
    Path,
    garbage_collect_exports,
    get_most_recent_export,
    get_paths,
    largest_export_versions,
    mod_export_version,
    negation,
    one_of_every_n_export_versions,
    union,
)
from learnrun.export.strategies import (
    BestModelSelector,
    ExportStrategy,
    extend_export_strategy,
    make_best_model_export_strategy,
    make_export_strategy,
)

__all__ = [
    "ASSETS_EXTRA",
    "MAX_DIRECTORY_CREATION_ATTEMPTS",
    "PROGRAM_FILENAME",
    "SIGNATURE_FILENAME",
    "WEIGHTS_FILENAME",
    "BestExporter",
    "BestModelSelector",
    "Exporter",
    "ExportStrategy",
    "FinalExporter",
    "LatestExporter",
    "Path",
    "Predictor",
    "ServingInputReceiver",
    "extend_export_strategy",
    "garbage_collect_exports",
    "get_most_recent_export",
    "get_paths",
    "get_temp_export_dir",
    "get_timestamped_export_dir",
    "largest_export_versions",
    "load_export",
    "make_best_model_export_strategy",
    "make_export_strategy",
    "mod_export_version",
    "negation",
    "one_of_every_n_export_versions",
    "union",
    "write_export",
]
