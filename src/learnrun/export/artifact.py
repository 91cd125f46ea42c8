"""Writing and loading one export: a ``torch.export`` program, its weights and signature.

:func:`write_export` writes ``<export_dir_base>/<10-digit unix time>/`` (as ``temp-<time>/``,
then renamed) holding ``model.safetensors`` (the module's weights), ``program.pt2`` (a
``torch.export`` program of ``predictions_fn(module(features))`` in eval mode, with a dynamic
batch dimension when possible), ``signature.json`` (input/output names, dtypes, shapes with the
batch dimension as null) and ``assets.extra/``. :func:`load_export` gives a callable
:class:`Predictor`. Everything here is re-exported by ``learnrun.export``, whose export-directory
helpers name the directory.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from learnrun.clock import Clock, get_clock
from learnrun.model_dir.serialization import prepare_weights

logger = logging.getLogger(__name__)

__all__ = [
    "get_timestamped_export_dir",
    "get_temp_export_dir",
    "MAX_DIRECTORY_CREATION_ATTEMPTS",
    "ServingInputReceiver",
    "write_export",
    "Predictor",
    "load_export",
    "WEIGHTS_FILENAME",
    "PROGRAM_FILENAME",
    "SIGNATURE_FILENAME",
    "ASSETS_EXTRA",
]

WEIGHTS_FILENAME = "model.safetensors"
PROGRAM_FILENAME = "program.pt2"
SIGNATURE_FILENAME = "signature.json"
MAX_DIRECTORY_CREATION_ATTEMPTS = 10
ASSETS_EXTRA = "assets.extra"


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



class ServingInputReceiver(NamedTuple):
    """What a ``serving_input_fn`` may return: example ``features`` (a tensor or a dict of
    tensors, first dimension = batch) and whether the batch dimension is dynamic."""

    features: Any
    dynamic_batch: bool = True


def _as_receiver(example: Any) -> ServingInputReceiver:
    import torch

    receiver = example if isinstance(example, ServingInputReceiver) else ServingInputReceiver(example)
    feats = receiver.features
    ok = isinstance(feats, torch.Tensor) or (
        isinstance(feats, Mapping) and feats
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in feats.items()))
    if not ok:
        raise TypeError("serving_input_fn must return a tensor, a non-empty dict of str -> tensor "
                        f"or a ServingInputReceiver; got features of type {type(feats).__name__}.")
    tensors = [feats] if isinstance(feats, torch.Tensor) else list(feats.values())
    if receiver.dynamic_batch:
        sizes = {t.shape[0] if t.dim() else None for t in tensors}
        if None in sizes or len(sizes) != 1:
            raise ValueError("With dynamic_batch=True every serving feature needs the same first "
                             f"(batch) dimension; got shapes {[tuple(t.shape) for t in tensors]}. "
                             "Fix the example features or pass dynamic_batch=False.")
    return receiver


def _tensor_spec(name: str, t: Any, batch: int | None) -> dict:
    shape = list(t.shape)
    if batch is not None and shape and shape[0] == batch:
        shape[0] = None
    return {"name": name, "dtype": str(t.dtype).replace("torch.", ""), "shape": shape}


class _ServingModule:
    """Builds the nn.Module that torch.export traces: positional tensors -> dict of outputs."""

    @staticmethod
    def make(module, predictions_fn, names: list[str] | None):
        import torch

        class Serving(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.module = module

            def forward(self, *inputs):
                features = inputs[0] if names is None else dict(zip(names, inputs, strict=True))
                outputs = self.module(features)
                preds = predictions_fn(outputs) if predictions_fn is not None else outputs
                if isinstance(preds, torch.Tensor):
                    preds = {"outputs": preds}
                if not isinstance(preds, Mapping):
                    raise TypeError("predictions_fn must return a tensor or a dict of str -> tensor, "
                                    f"got {type(preds).__name__}.")
                kept = {}
                for key, value in preds.items():
                    if isinstance(value, torch.Tensor):
                        kept[key] = value
                    else:  # e.g. class names as strings: a program can only return tensors
                        self.dropped.add(str(key))
                if not kept:
                    raise TypeError("predictions_fn returned no tensor to export (keys "
                                    f"{sorted(map(str, preds))}); return at least one tensor.")
                return kept

        serving = Serving()
        serving.dropped = set()
        return serving


def _export_program(serving, args: tuple, dynamic: bool):
    """torch.export ``serving`` on ``args``; batch dim dynamic when possible, else static."""
    import torch
    from torch.export import Dim, export

    if dynamic:
        traced = args
        if args[0].shape[0] == 1:  # torch specialises size-1 dims: trace on a batch of 2
            traced = tuple(torch.cat([a, a]) for a in args)
        batch = Dim("batch")
        try:  # forward(*inputs): the spec of the one varargs parameter is a tuple
            program = export(serving, traced, dynamic_shapes={"inputs": tuple({0: batch} for _ in traced)})
            return program, True
        except Exception as e:  # torch raises UserError / constraint violations of many kinds
            warnings.warn(f"torch.export could not make the batch dimension dynamic ({str(e)[:300]}); "
                          "exporting with the example's static batch size instead.", stacklevel=3)
    return export(serving, args), False


def write_export(export_dir_base: str, module: Any, predictions_fn: Callable | None = None,
                 example_features: Any = None, weights: Mapping | None = None,
                 assets_extra: Mapping[str, str] | None = None, clock: Clock | None = None, *,
                 serving_input_fn: Callable[[], Any] | None = None,
                 checkpoint_path: str | None = None, global_step: int | None = None,
                 as_text: bool = False, strip_default_attrs: bool = False) -> str:
    """Export ``predictions_fn(module(features))`` into a new timestamped dir; return its path.

    ``example_features``: a tensor, a dict of tensors or a :class:`ServingInputReceiver`;
    or give ``serving_input_fn`` (called with no arguments) to produce them.
    ``weights`` (optional): a state dict loaded into a copy of ``module`` first.
    ``assets_extra``: ``{dest_relative_path: source_path}`` copied to ``assets.extra/``.
    ``checkpoint_path`` and ``global_step`` are recorded in ``signature.json``; ``as_text`` and
    ``strip_default_attrs`` are TF SavedModel options accepted for compatibility and ignored.
    """
    import torch

    del as_text, strip_default_attrs  # no meaning for torch.export programs
    if example_features is None:
        if serving_input_fn is None:
            raise ValueError("serving_input_fn must be defined.")
        example_features = serving_input_fn()
    receiver = _as_receiver(example_features)
    if weights is not None:
        module = copy.deepcopy(module)
        module.load_state_dict(weights)
    feats = receiver.features
    names = None if isinstance(feats, torch.Tensor) else sorted(feats)
    args = (feats,) if names is None else tuple(feats[n] for n in names)
    # Looked up in learnrun.export at call time: it owns the export-directory conventions.

    export_dir = get_timestamped_export_dir(export_dir_base, clock)
    temp_dir = get_temp_export_dir(export_dir)
    os.makedirs(temp_dir)
    was_training = module.training
    try:
        module.eval()
        serving = _ServingModule.make(module, predictions_fn, names)
        with torch.no_grad():
            outputs = serving(*args)
        if serving.dropped:
            logger.warning("Export leaves out predictions that are not tensors: %s (an exported "
                           "program returns tensors only; map ids to names after loading).",
                           ", ".join(sorted(serving.dropped)))
        program, dynamic = _export_program(serving, args, receiver.dynamic_batch)
        torch.export.save(program, os.path.join(temp_dir, PROGRAM_FILENAME))
        from safetensors.torch import save_file

        save_file(prepare_weights(module.state_dict()), os.path.join(temp_dir, WEIGHTS_FILENAME))
        batch = args[0].shape[0] if dynamic else None
        signature = {
            "input_kind": "tensor" if names is None else "dict",
            "inputs": [_tensor_spec(n, a, batch) for n, a in zip(names or ["features"], args, strict=True)],
            "outputs": [_tensor_spec(k, v, batch) for k, v in outputs.items()],
            "dynamic_batch": dynamic,
            "checkpoint_path": None if checkpoint_path is None else os.fspath(checkpoint_path),
            "global_step": None if global_step is None else int(global_step),
            "torch_version": torch.__version__,
            "format_version": 1,
        }
        with open(os.path.join(temp_dir, SIGNATURE_FILENAME), "w", encoding="utf-8") as f:
            json.dump(signature, f, indent=1)
        for dest, source in (assets_extra or {}).items():
            if os.path.isabs(dest) or os.path.normpath(dest).startswith(".."):
                raise ValueError(f"assets_extra keys must be relative paths inside assets.extra/, "
                                 f"got {dest!r}.")
            target = os.path.join(temp_dir, ASSETS_EXTRA, dest)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(source, target)
        os.rename(temp_dir, export_dir)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    finally:
        module.train(was_training)
    return export_dir


class Predictor:
    """A loaded export: call it on a tensor or a dict of tensors, get a dict of tensors.

    ``signature`` is the parsed ``signature.json``; ``program`` the ``ExportedProgram``.
    """

    def __init__(self, path: str, program: Any, signature: dict) -> None:
        self.path = path
        self.program = program
        self.signature = signature
        self._module = program.module()
        self._names = [i["name"] for i in signature["inputs"]]

    def __call__(self, features: Any) -> dict:
        import torch

        single = self.signature.get("input_kind") == "tensor"
        if isinstance(features, torch.Tensor):
            if not single:
                raise TypeError(f"This export takes a dict with keys {self._names}, got one tensor.")
            features = {self._names[0]: features}
        elif isinstance(features, Mapping):
            if single and len(features) == 1:
                features = {self._names[0]: next(iter(features.values()))}
            if sorted(features) != sorted(self._names):
                raise KeyError(f"This export takes features {self._names}, got {sorted(features)}.")
        else:
            raise TypeError(f"Predictor takes a tensor or a dict of tensors, got {type(features).__name__}.")
        args = tuple(features[n] for n in self._names)
        for spec, arg in zip(self.signature["inputs"], args, strict=True):
            want = spec["shape"]
            got = list(arg.shape)
            if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got, strict=True)):
                raise ValueError(f"Input {spec['name']!r} must have shape {want} (None = any batch), "
                                 f"got {got}.")
        with torch.no_grad():
            return dict(self._module(*args))


def load_export(path: str) -> Predictor:
    """Load an export directory written by :func:`write_export` as a :class:`Predictor`."""
    import torch

    path = os.fsdecode(path)
    for name in (PROGRAM_FILENAME, SIGNATURE_FILENAME):
        if not os.path.isfile(os.path.join(path, name)):
            raise FileNotFoundError(f"{path!r} is not a learnrun export: {name} is missing. Pass a "
                                    "<export_dir_base>/<timestamp> directory (get_most_recent_export).")
    with open(os.path.join(path, SIGNATURE_FILENAME), encoding="utf-8") as f:
        signature = json.load(f)
    return Predictor(path, torch.export.load(os.path.join(path, PROGRAM_FILENAME)), signature)
