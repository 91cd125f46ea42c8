"""TensorFlow Serving's REST API (``/v1``), answered with the JSON TF Serving gives.

* ``POST /v1/models/NAME[/versions/V|/labels/L]:predict`` with ``{"instances": [...]}`` (row
  form: a list of values for a one-input model, or a list of objects ``{input: value}``)
  answers ``{"predictions": [...]}`` (one entry per row; an object per row when there are
  several outputs, the bare value when there is one); ``{"inputs": ...}`` (columnar form: an
  object ``{input: batch}``, or the bare batch for a one-input model) answers
  ``{"outputs": ...}`` the same way. An optional ``"signature_name"`` must be
  ``serving_default``.
* ``:classify`` and ``:regress`` take ``{"examples": [{feature: value or list}], "context":
  {...}}`` and answer ``{"results": ...}``: ``[[label, score], ...]`` per example from the
  ``probabilities`` output (labels are the export's ``label_vocabulary``, recorded by canned
  classifiers trained with one, else the class ids as text) or one number per example from
  the ``predictions`` output (the canned classifiers' and regressors' keys).
* ``GET /v1/models/NAME[/versions/V]`` answers ``{"model_version_status": [{"version",
  "state", "status": {"error_code", "error_message"}}]}`` and ``GET .../metadata`` the
  signature as a ``signature_def`` map.

Errors answer ``{"error": message}``: 400 for bad JSON, fields, shapes or dtypes, 404 for an
unknown model, version or label. Paths are matched without regard to case, as TF does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from learnrun.serving.tensors import (
    TF_DTYPES,
    RequestError,
    convert_features,
    parse_json_object,
    preview,
)

PREDICT_PATH = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)")
STATUS_PATH = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?")
DEFAULT_SIGNATURE = "serving_default"

Infer = Callable[[Any, dict], Awaitable[Mapping[str, Any]]]


async def handle(manager: Any, infer: Infer, method: str, path: str, body: bytes) -> tuple[int, Any]:
    """Answer one ``/v1`` request: ``(HTTP status, JSON payload)``; raises RequestError."""
    if method == "POST":
        m = PREDICT_PATH.fullmatch(path)
        if m is None:
            raise RequestError(f"Malformed request: {method} {path}")
        name, version, label, verb = m.groups()
        state = manager.get(name, version, label)
        doc = parse_json_object(body)
        _check_signature_name(doc)
        if verb.lower() == "predict":
            features, row = parse_predict(doc, state.predictor.signature)
            outputs = await infer(state, convert_features(state.predictor, features))
            return 200, format_predict(outputs, state.predictor.signature, row)
        features = parse_examples(doc, state.predictor.signature, verb.lower())
        outputs = await infer(state, convert_features(state.predictor, features))
        if verb.lower() == "classify":
            return 200, format_classify(outputs, state.predictor.signature)
        return 200, format_regress(outputs)
    if method == "GET":
        m = STATUS_PATH.fullmatch(path)
        if m is None:
            raise RequestError(f"Malformed request: {method} {path}")
        name, version, label, sub = m.groups()
        if not name:
            raise RequestError("Missing model name in request.")
        if sub:
            state = manager.get(name, version, label)
            return 200, metadata(name, state.version, state.predictor.signature)
        model = manager.model(name)
        if label is not None:
            version = model.get(None, label).version
        states = model.statuses(None if version is None else int(version))
        return 200, {"model_version_status": [version_status(s) for s in states]}
    raise RequestError(f"Malformed request: {method} {path}")


def _check_signature_name(doc: Mapping) -> None:
    if "signature_name" not in doc:
        return
    sig = doc["signature_name"]
    if not isinstance(sig, str):
        raise RequestError(f"JSON Value: {preview(doc)} not formatted correctly. "
                           "'signature_name' key must be a string value.")
    if sig not in ("", DEFAULT_SIGNATURE):
        raise RequestError(f'Serving signature name: "{sig}" not found in signature def '
                           f"(this model has {DEFAULT_SIGNATURE!r} only)")


def parse_predict(doc: Mapping, signature: Mapping) -> tuple[Any, bool]:
    """The features of a predict request and whether it used the row form."""
    names = [spec["name"] for spec in signature["inputs"]]
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise RequestError(f"JSON Value: {preview(doc)} Not formatted correctly expecting only "
                           "one of 'inputs' or 'instances' keys to exist")
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise RequestError(f"JSON Value: {preview(doc)} Expecting 'instances' to be an list/array")
        if not instances:
            raise RequestError(f"JSON Value: {preview(doc)} No values in 'instances' array")
        objects = isinstance(instances[0], dict) and not _is_b64(instances[0])
        if not objects:
            if len(names) > 1:
                raise RequestError("instances is a plain list, but expecting list of objects as "
                                   f"multiple input tensors required ({', '.join(names)})")
            for i, item in enumerate(instances):
                if isinstance(item, dict):
                    raise RequestError(f"Expecting value/list but got object at item {i} of input list")
            return {names[0]: instances}, True
        columns: dict[str, list] = {n: [] for n in names}
        for i, item in enumerate(instances):
            if not isinstance(item, dict):
                raise RequestError(f"Expecting object but got list at item {i} of input list")
            if set(item) != set(names):
                raise RequestError(f"Failed to process element: {i} of 'instances' list. JSON "
                                   f"object: {preview(item)} keys must be equal to: "
                                   f"{','.join(sorted(names))}")
            for n in names:
                columns[n].append(item[n])
        return columns, True
    if has_inputs:
        inputs = doc["inputs"]
        if not isinstance(inputs, dict) or _is_b64(inputs):
            if len(names) > 1:
                raise RequestError("inputs is a plain value/list, but expecting an object as "
                                   f"multiple input tensors required ({', '.join(names)})")
            return {names[0]: inputs}, False
        for n in names:
            if n not in inputs:
                raise RequestError(f"Missing named input: {n} in 'inputs' object.")
        return {n: inputs[n] for n in names}, False
    raise RequestError("Missing 'inputs' or 'instances' key")


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def format_predict(outputs: Mapping[str, Any], signature: Mapping, row: bool) -> dict:
    """``{"predictions": ...}`` (row form) or ``{"outputs": ...}`` (columnar form)."""
    names = [spec["name"] for spec in signature["outputs"] if spec["name"] in outputs]
    names += [n for n in outputs if n not in names]
    values = {n: outputs[n].tolist() for n in names}
    if not row:
        return {"outputs": values[names[0]] if len(names) == 1 else values}
    batch = {len(v) if isinstance(v, list) else None for v in values.values()}
    if len(batch) != 1 or None in batch:
        raise RequestError("the model's outputs have no common batch dimension; use the "
                           "columnar form ({\"inputs\": ...})")
    n_rows = batch.pop()
    if len(names) == 1:
        return {"predictions": values[names[0]]}
    return {"predictions": [{n: values[n][i] for n in names} for i in range(n_rows)]}


def parse_examples(doc: Mapping, signature: Mapping, verb: str) -> dict:
    """The features of a classify/regress request: one row per example (context merged in)."""
    if "examples" not in doc:
        raise RequestError(f"JSON Value: {preview(doc)} When method is {verb}, key 'examples' "
                           "is expected and was not found")
    examples, context = doc["examples"], doc.get("context", {})
    if not isinstance(examples, list):
        raise RequestError(f"JSON Value: {preview(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise RequestError(f"JSON Value: {preview(doc)} 'examples' value is an empty array")
    if not isinstance(context, dict):
        raise RequestError(f"Example must be JSON object but got JSON {preview(context)}")
    features: dict[str, list] = {}
    for spec in signature["inputs"]:
        name, shape = spec["name"], spec["shape"]
        per_row = shape[1:] if shape else []
        size = math.prod(d for d in per_row if d is not None)
        column = []
        for i, example in enumerate(examples):
            if not isinstance(example, dict):
                raise RequestError(f"Example must be JSON object but got JSON {preview(example)}")
            value = example.get(name, context.get(name))
            if value is None:
                raise RequestError(f"example {i} has no feature {name!r}; the model takes "
                                   f"{[s['name'] for s in signature['inputs']]}")
            flat = value if isinstance(value, list) else [value]
            if any(isinstance(v, (list, dict)) for v in flat):
                raise RequestError(f"feature {name!r} of example {i} must be a value or a flat "
                                   f"list, got {preview(value)}")
            if len(flat) != size:
                raise RequestError(f"feature {name!r} of example {i} has {len(flat)} values; the "
                                   f"model wants {size} (shape {per_row})")
            column.append(_reshape(flat, per_row))
        features[name] = column
    return features


def _reshape(flat: list, shape: list) -> Any:
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [_reshape(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def format_classify(outputs: Mapping[str, Any], signature: Mapping | None = None) -> dict:
    """``{"results": [[[label, score], ...] per example]}`` from the ``probabilities`` output.

    The labels are the signature's ``label_vocabulary`` when it has one per class (as TF
    Serving answers with a canned classifier's ``classes``), else the class ids as text.
    """
    probs = outputs.get("probabilities")
    if probs is None or probs.ndim != 2:
        raise RequestError("this model has no 'probabilities' output of shape [batch, classes], "
                           f"so it cannot classify (outputs: {sorted(outputs)}); use :predict")
    labels = (signature or {}).get("label_vocabulary")
    if not isinstance(labels, list) or len(labels) != probs.shape[1]:
        labels = [str(i) for i in range(probs.shape[1])]
    return {"results": [[[label, p] for label, p in zip(labels, row, strict=True)]
                        for row in probs.tolist()]}


def format_regress(outputs: Mapping[str, Any]) -> dict:
    """``{"results": [value per example]}`` from the ``predictions`` output."""
    preds = outputs.get("predictions")
    if preds is None or preds.ndim == 0 or math.prod(preds.shape[1:]) != 1:
        raise RequestError("this model has no 'predictions' output with one value per example, "
                           f"so it cannot regress (outputs: {sorted(outputs)}); use :predict")
    return {"results": preds.reshape(-1).tolist()}


def version_status(state: Any) -> dict:
    """One ``model_version_status`` entry."""
    return {
        "version": str(state.version),
        "state": state.state,
        "status": {"error_code": "OK" if state.error is None else "UNKNOWN",
                   "error_message": state.error or ""},
    }


def _tensor_info(spec: Mapping) -> dict:
    return {
        "dtype": TF_DTYPES.get(spec["dtype"], "DT_INVALID"),
        "tensor_shape": {"dim": [{"size": str(-1 if d is None else d), "name": ""}
                                 for d in spec["shape"]], "unknown_rank": False},
        "name": spec["name"],
    }


def metadata(name: str, version: int, signature: Mapping) -> dict:
    """``GET .../metadata``: the model spec and its ``serving_default`` signature."""
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": {"signature_def": {DEFAULT_SIGNATURE: {
            "inputs": {s["name"]: _tensor_info(s) for s in signature["inputs"]},
            "outputs": {s["name"]: _tensor_info(s) for s in signature["outputs"]},
            "method_name": "tensorflow/serving/predict",
        }}}},
    }
