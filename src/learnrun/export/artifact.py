"""Writing and loading one export: a ``torch.export`` program, its weights and signature.

:func:`write_export` writes ``<export_dir_base>/<10-digit unix time>/`` (locally as
``temp-<time>/``, then renamed; on an object store or any remote fsspec URL, which has no
rename, the files are written straight into the version directory with ``signature.json``
last: a version without it is incomplete, and loaders and the model server skip it) holding ``model.safetensors`` (the module's weights), ``program.pt2`` (a
``torch.export`` program of ``predictions_fn(module(features))`` in eval mode, with a dynamic
batch dimension when possible), ``signature.json`` (input/output names, dtypes, shapes with the
batch dimension as null) and ``assets.extra/``. :func:`load_export` gives a callable
:class:`Predictor`. Everything here is re-exported by ``learnrun.export``, whose export-directory
helpers name the directory.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from learnrun.clock import Clock, get_clock
from learnrun.errors import StorageError
from learnrun.model_dir.serialization import prepare_weights
from learnrun.model_dir.storage import is_remote, join, storage_for

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
    st = storage_for(base)
    st.refresh(base)
    for attempt in range(1, MAX_DIRECTORY_CREATION_ATTEMPTS + 1):
        result = join(base, str(int(clock.time())))
        if not st.exists(result) and not st.exists(get_temp_export_dir(result)):
            return result
        clock.sleep(1)
        logger.warning("Export directory %s already exists; retrying (attempt %d/%d)",
                       result, attempt, MAX_DIRECTORY_CREATION_ATTEMPTS)
    raise RuntimeError("Failed to obtain a unique export directory name after "
                       f"{MAX_DIRECTORY_CREATION_ATTEMPTS} attempts.")


def get_temp_export_dir(timestamped_export_dir: str) -> str:
    """Return the sibling ``temp-<basename>`` of a timestamped export dir (ignored by serving)."""
    path = os.fsdecode(timestamped_export_dir)
    st = storage_for(path)
    return join(st.dirname(path), f"temp-{st.basename(path)}")



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
                 as_text: bool = False, strip_default_attrs: bool = False,
                 label_vocabulary: Sequence[str] | None = None) -> str:
    """Export ``predictions_fn(module(features))`` into a new timestamped dir; return its path.

    ``example_features``: a tensor, a dict of tensors or a :class:`ServingInputReceiver`;
    or give ``serving_input_fn`` (called with no arguments) to produce them.
    ``weights`` (optional): a state dict loaded into a copy of ``module`` first.
    ``assets_extra``: ``{dest_relative_path: source_path}`` copied to ``assets.extra/``.
    ``checkpoint_path`` and ``global_step`` are recorded in ``signature.json``, and so is
    ``label_vocabulary`` (a classifier's class names, in class-id order; the canned
    classifiers' ``label_vocabulary``), which the model server's ``:classify`` answers with.
    ``as_text`` and ``strip_default_attrs`` are TF SavedModel options accepted for
    compatibility and ignored.
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
    remote = is_remote(export_dir)
    # a remote export is built in a local directory, then uploaded with signature.json last
    temp_dir = tempfile.mkdtemp(prefix="learnrun-export-") if remote \
        else get_temp_export_dir(export_dir)
    if not remote:
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
            **({} if label_vocabulary is None
               else {"label_vocabulary": [str(v) for v in label_vocabulary]}),
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
        if remote:
            _upload_export(temp_dir, export_dir)
        else:
            os.rename(temp_dir, export_dir)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    finally:
        module.train(was_training)
    if remote:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return export_dir


def _upload_export(local_dir: str, export_dir: str) -> None:
    """Copy the built export to remote ``export_dir``, ``signature.json`` last (its commit).

    On a failure the partial version directory (no ``signature.json``) is removed if it can
    be; a leftover one is skipped by loaders and the model server.
    """
    st = storage_for(export_dir)
    files = []
    for root, _, names in os.walk(local_dir):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), local_dir).replace(os.sep, "/")
            files.append(rel)
    files.sort(key=lambda rel: (rel == SIGNATURE_FILENAME, rel))
    try:
        for rel in files:
            st.put_file(os.path.join(local_dir, rel), join(export_dir, rel))
    except BaseException:
        try:
            st.rmtree(export_dir)
        except Exception:  # noqa: BLE001 - the version has no signature.json: it stays incomplete
            logger.warning("Could not remove the incomplete export %s.", export_dir)
        raise


class Predictor:
    """A loaded export: call it on features, get a dict of output tensors.

    Features are one value (an export of a single input) or a dict ``{input name: value}``;
    a value is a tensor, a numpy array, a nested list or a scalar. :meth:`convert` turns
    them into tensors of the signature's dtypes and checks names, dtypes and shapes first:
    numbers convert within their kind or widen (float64 -> float32, int -> float), while a
    float for an integer input, a string or a ragged list raises :class:`TypeError` or
    :class:`ValueError` naming the input, the value received and what the signature wants.
    Calls may run concurrently from several threads.

    ``signature`` is the parsed ``signature.json``; ``program`` the ``ExportedProgram``.
    """

    def __init__(self, path: str, program: Any, signature: dict, module: Any = None) -> None:
        self.path = path
        self.program = program
        self.signature = signature
        self._module = program.module() if module is None else module
        self._names = [i["name"] for i in signature["inputs"]]
        self._specs = {i["name"]: i for i in signature["inputs"]}

    @property
    def input_names(self) -> list[str]:
        """The input names in the signature's order."""
        return list(self._names)

    def convert(self, features: Any) -> dict:
        """Check ``features`` against the signature; return ``{input name: tensor}``.

        Raises :class:`KeyError` for missing or unknown names, :class:`TypeError` for a value
        of the wrong kind and :class:`ValueError` for a wrong shape or a ragged list.
        """
        single = self.signature.get("input_kind") == "tensor" or len(self._names) == 1
        if isinstance(features, Mapping):
            if single and len(features) == 1 and self._names[0] not in features \
                    and self.signature.get("input_kind") == "tensor":
                features = {self._names[0]: next(iter(features.values()))}
            missing = [n for n in self._names if n not in features]
            unknown = sorted(str(k) for k in features if k not in self._specs)
            if missing or unknown:
                raise KeyError(f"This export takes features {self._names}, got "
                               f"{sorted(map(str, features))} (missing {missing}, unknown "
                               f"{unknown}); pass a dict with exactly these keys.")
        elif single:
            features = {self._names[0]: features}
        else:
            raise TypeError(f"This export takes a dict with keys {self._names}, got one "
                            f"{type(features).__name__}. Pass {{name: value}} for each input.")
        return {n: _to_tensor(features[n], self._specs[n]) for n in self._names}

    def __call__(self, features: Any) -> dict:
        import torch

        converted = self.convert(features)
        args = tuple(converted[n] for n in self._names)
        with torch.no_grad():
            return dict(self._module(*args))


def _to_tensor(value: Any, spec: Mapping) -> Any:
    """``value`` as a tensor of ``spec``'s dtype and shape, or a clear TypeError/ValueError."""
    import numpy as np
    import torch

    name, want_dtype, want = spec["name"], spec["dtype"], spec["shape"]
    target = getattr(torch, want_dtype)
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        src_kind = _kind(tensor.dtype.is_floating_point, tensor.dtype.is_complex,
                         tensor.dtype == torch.bool)
        got_dtype = str(tensor.dtype).replace("torch.", "")
    else:
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"Input {name!r} is a ragged or malformed list ({exc}); every row "
                             f"must have shape {want[1:] if want else want}.") from None
        if array.dtype.kind not in "biuf":
            raise TypeError(f"Input {name!r} must hold numbers of dtype {want_dtype}; got "
                            f"values of numpy dtype {array.dtype} ({_preview(value)}).")
        got_dtype = str(array.dtype)
        src_kind = {"b": "bool", "f": "float"}.get(array.dtype.kind, "int")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    dst_kind = _kind(target.is_floating_point, target.is_complex, target == torch.bool)
    allowed = {"float": ("float", "int"), "int": ("int",), "bool": ("bool",),
               "complex": ("complex", "float", "int")}[dst_kind]
    if src_kind not in allowed:
        raise TypeError(f"Input {name!r} must be {want_dtype}; got {got_dtype} values "
                        f"({_preview(value)}), which do not convert without loss.")
    got = list(tensor.shape)
    if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got, strict=True)):
        raise ValueError(f"Input {name!r} must have shape {want} (None = any batch size), "
                         f"got {got}.")
    return tensor.to(target) if tensor.dtype != target else tensor


def _kind(is_float: bool, is_complex: bool, is_bool: bool) -> str:
    return "complex" if is_complex else "float" if is_float else "bool" if is_bool else "int"


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def load_export(path: Any) -> Predictor:
    """Load an export directory written by :func:`write_export` as a :class:`Predictor`.

    ``path`` is a local directory or an fsspec URL (``s3://bucket/.../1700000000``, which
    needs that file system's package). Loading never unpickles code: the weights come from
    ``model.safetensors`` and the program archive is checked first: an archive holding
    pickled tensors or objects, compiled code or the old zip layout, or sample inputs that
    ``torch.load(weights_only=True)`` refuses, is refused with a :class:`ValueError`.
    """
    import torch
    from safetensors.torch import load as load_safetensors

    path = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else path
    if not isinstance(path, str) or not path:
        raise TypeError(f"load_export takes a directory path or URL, got {path!r}.")
    try:
        st = storage_for(path)
    except StorageError as exc:
        raise ValueError(f"Cannot open {exc}") from None
    path = st.normpath(path)
    files = {}
    # signature.json first: it is written last, so without it the export is incomplete
    for name in (SIGNATURE_FILENAME, PROGRAM_FILENAME, WEIGHTS_FILENAME):
        try:
            files[name] = st.read_bytes(join(path, name))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            incomplete = " (an incomplete export: still being written, or its writer died)" \
                if name == SIGNATURE_FILENAME and st.exists(join(path, WEIGHTS_FILENAME)) else ""
            raise FileNotFoundError(
                f"{path!r} is not a learnrun export: {name} is missing{incomplete}. Pass a "
                "<export_dir_base>/<timestamp> directory (get_most_recent_export).") from None
    try:
        signature = json.loads(files[SIGNATURE_FILENAME])
        if not isinstance(signature, dict) or not isinstance(signature.get("inputs"), list):
            raise ValueError("no 'inputs' list")
    except ValueError as exc:
        raise ValueError(f"{path!r}: {SIGNATURE_FILENAME} is not a learnrun signature ({exc}); "
                         "re-export the model.") from None
    _check_program_archive(files[PROGRAM_FILENAME], path)
    program = torch.export.load(io.BytesIO(files[PROGRAM_FILENAME]))
    module = program.module()
    try:
        weights = load_safetensors(files[WEIGHTS_FILENAME])
    except Exception as exc:  # safetensors raises its own error type for a corrupt file
        raise ValueError(f"{path!r}: {WEIGHTS_FILENAME} is not a readable safetensors file "
                         f"({exc}).") from None
    params = module.state_dict()
    renamed = {f"module.{k}": v for k, v in weights.items()}
    unknown = sorted(k for k in renamed if k not in params)
    if unknown:
        raise ValueError(f"{path!r}: {WEIGHTS_FILENAME} holds weights the program does not have "
                         f"({unknown[:5]}); the export is inconsistent, re-export the model.")
    with torch.no_grad():
        for key, value in renamed.items():
            if params[key].shape != value.shape:
                raise ValueError(f"{path!r}: weight {key[7:]!r} has shape {list(value.shape)} in "
                                 f"{WEIGHTS_FILENAME} but {list(params[key].shape)} in the program.")
            params[key].copy_(value)
    return Predictor(path, program, signature, module)


def _check_program_archive(data: bytes, path: str) -> None:
    """Refuse a program archive that loading could only read by unpickling."""
    import torch

    def refuse(reason: str) -> ValueError:
        return ValueError(f"Refusing to load {path!r}: {PROGRAM_FILENAME} {reason}; only "
                          "programs saved by learnrun's write_export load without unpickling.")

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except zipfile.BadZipFile:
        raise refuse("is not a torch.export archive") from None
    top = {n.split("/", 1)[0] for n in names}
    if len(top) != 1 or "version" in names:
        raise refuse("has the old zip layout or several roots")
    prefix = top.pop() + "/"
    fmt = prefix + "archive_format"
    if fmt not in names or archive.read(fmt).strip() != b"pt2":
        raise refuse("has no pt2 archive_format record")
    for name in names:
        rel = name[len(prefix):]
        if rel.startswith("data/aotinductor/"):
            raise refuse("holds compiled code (AOTInductor)")
        if rel.endswith(".pt") and not rel.startswith("data/sample_inputs/"):
            raise refuse(f"holds a pickled file ({rel})")
    for config in ("data/weights/model_weights_config.json",
                   "data/constants/model_constants_config.json"):
        if prefix + config not in names:
            raise refuse(f"has no {config}")
        try:
            entries = json.loads(archive.read(prefix + config))["config"].values()
        except (ValueError, KeyError, AttributeError, TypeError):
            raise refuse(f"has an unreadable {config}") from None
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("use_pickle") is not False:
                raise refuse("holds pickled tensors or objects")
            if "constants" in config and not str(entry.get("path_name", "")).startswith("tensor_"):
                raise refuse("holds custom objects")
    for name in names:
        if name[len(prefix):].startswith("data/sample_inputs/"):
            try:
                torch.load(io.BytesIO(archive.read(name)), weights_only=True)
            except Exception:  # torch raises UnpicklingError and others for refused content
                raise refuse("has sample inputs that only unpickling can read") from None
