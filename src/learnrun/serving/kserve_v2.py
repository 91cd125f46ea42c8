"""KServe's v2 protocol (the Open Inference Protocol) under ``/v2``, JSON only.

* ``GET /v2``: server metadata; ``GET /v2/health/live`` and ``/v2/health/ready`` (200 when
  every model has a version serving, else 503);
* ``GET /v2/models/NAME[/versions/V]``: model metadata (inputs and outputs with ``datatype``
  and ``shape``, ``-1`` for the batch); ``GET /v2/models/NAME[/versions/V]/ready``;
* ``POST /v2/models/NAME[/versions/V]/infer`` with ``{"id", "inputs": [{"name", "shape",
  "datatype", "data"}], "outputs": [{"name"}]}``: ``data`` is the row-major flat (or nested)
  list of values, ``datatype`` must be the model's; the answer holds the requested outputs
  (default all) as ``{"name", "datatype", "shape", "data"}`` with flat data.

Binary tensor data is not supported: a request asking for it gets a 400 that says to use
``binary_data=False``. Errors answer ``{"error": message}`` (400, or 404 for an unknown model
or version).
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from learnrun.serving.tensors import (
    V2_DTYPES,
    RequestError,
    convert_features,
    parse_json_object,
    preview,
)

MODEL_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(?:/(ready|infer))?")

Infer = Callable[[Any, dict], Awaitable[Mapping[str, Any]]]


async def handle(manager: Any, infer: Infer, method: str, path: str, body: bytes,
                 headers: Mapping[str, str] | None = None,
                 server_version: str = "") -> tuple[int, Any]:
    """Answer one ``/v2`` request: ``(HTTP status, JSON payload)``; raises RequestError."""
    headers = headers or {}
    path = path.rstrip("/") or path
    if method == "GET" and path == "/v2":
        return 200, {"name": "learnrun", "version": server_version, "extensions": []}
    if method == "GET" and path == "/v2/health/live":
        return 200, {"live": True}
    if method == "GET" and path == "/v2/health/ready":
        ready = manager.ready()
        return (200 if ready else 503), {"ready": ready}
    m = MODEL_PATH.fullmatch(path)
    if m is None:
        raise RequestError(f"Not found: {method} {path}", 404)
    name, version, verb = m.groups()
    if verb == "ready" and method == "GET":
        manager.model(name)
        try:
            manager.get(name, version)
        except RequestError as exc:
            if exc.status == 404 and version is None:
                return 503, {"name": name, "ready": False}
            raise
        return 200, {"name": name, "ready": True}
    if verb is None and method == "GET":
        state = manager.get(name, version)
        model = manager.model(name)
        return 200, model_metadata(name, [s.version for s in model.statuses()
                                          if s.state == "AVAILABLE"], state.predictor.signature)
    if verb == "infer" and method == "POST":
        if "inference-header-content-length" in {k.lower() for k in headers}:
            raise RequestError("binary tensor data is not supported; send JSON only "
                               "(tritonclient: binary_data=False on inputs and outputs)")
        state = manager.get(name, version)
        doc = parse_json_object(body)
        features, wanted = parse_infer(doc, state.predictor.signature)
        outputs = await infer(state, convert_features(state.predictor, features))
        return 200, format_infer(name, state.version, doc.get("id"), outputs,
                                 state.predictor.signature, wanted)
    raise RequestError(f"Not found: {method} {path}", 404)


def model_metadata(name: str, versions: list[int], signature: Mapping) -> dict:
    """``GET /v2/models/NAME``: name, versions, platform, inputs and outputs."""
    def tensor(spec: Mapping) -> dict:
        return {"name": spec["name"], "datatype": V2_DTYPES.get(spec["dtype"], spec["dtype"]),
                "shape": [-1 if d is None else d for d in spec["shape"]]}

    return {"name": name, "versions": [str(v) for v in sorted(versions)],
            "platform": "learnrun_torch_export",
            "inputs": [tensor(s) for s in signature["inputs"]],
            "outputs": [tensor(s) for s in signature["outputs"]]}


def _binary_requested(parameters: Any) -> bool:
    return isinstance(parameters, Mapping) and any(
        parameters.get(k) for k in ("binary_data", "binary_data_size", "binary_data_output"))


def parse_infer(doc: Mapping, signature: Mapping) -> tuple[dict, list[str] | None]:
    """The features of an infer request and the requested output names (None: all)."""
    specs = {s["name"]: s for s in signature["inputs"]}
    if _binary_requested(doc.get("parameters")):
        raise RequestError("binary tensor data is not supported; use binary_data=False")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(f"'inputs' must be a non-empty list of {{name, shape, datatype, data}} "
                           f"objects, got {preview(inputs)}")
    features: dict[str, Any] = {}
    for i, item in enumerate(inputs):
        if not isinstance(item, dict):
            raise RequestError(f"inputs[{i}] must be an object, got {preview(item)}")
        name = item.get("name")
        if name not in specs:
            raise RequestError(f"inputs[{i}] has name {preview(name)}; the model's inputs are "
                               f"{sorted(specs)}")
        if name in features:
            raise RequestError(f"input {name!r} is given twice")
        if _binary_requested(item.get("parameters")):
            raise RequestError("binary tensor data is not supported; use binary_data=False")
        shape, datatype, data = item.get("shape"), item.get("datatype"), item.get("data")
        if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise RequestError(f"input {name!r}: 'shape' must be a list of non-negative integers, "
                               f"got {preview(shape)}")
        want = V2_DTYPES.get(specs[name]["dtype"], specs[name]["dtype"])
        if datatype != want:
            raise RequestError(f"input {name!r} has datatype {preview(datatype)}; the model "
                               f"wants {want}")
        if data is None:
            raise RequestError(f"input {name!r} has no 'data'")
        features[name] = _shaped(name, data, shape)
    missing = sorted(set(specs) - set(features))
    if missing:
        raise RequestError(f"missing inputs {missing}; the model's inputs are {sorted(specs)}")
    wanted = None
    outputs = doc.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise RequestError(f"'outputs' must be a list of {{name}} objects, got {preview(outputs)}")
        names = {s["name"] for s in signature["outputs"]}
        wanted = []
        for item in outputs:
            if not isinstance(item, dict) or item.get("name") not in names:
                raise RequestError(f"requested output {preview(item)} is not one of the model's "
                                   f"outputs {sorted(names)}")
            if _binary_requested(item.get("parameters")):
                raise RequestError("binary tensor data is not supported; use binary_data=False")
            wanted.append(item["name"])
    return features, wanted


def _shaped(name: str, data: Any, shape: list[int]) -> Any:
    import numpy as np

    try:
        array = np.asarray(data)
    except (ValueError, TypeError):
        raise RequestError(f"input {name!r}: 'data' is a ragged or malformed list") from None
    if array.dtype.kind not in "biuf":
        raise RequestError(f"input {name!r}: 'data' must hold numbers or booleans, got "
                           f"{preview(data)}")
    if array.size != math.prod(shape):
        raise RequestError(f"input {name!r} has {array.size} values but shape {shape} needs "
                           f"{math.prod(shape)}")
    return array.reshape(shape)


def format_infer(name: str, version: int, request_id: Any, outputs: Mapping[str, Any],
                 signature: Mapping, wanted: list[str] | None) -> dict:
    """The infer response: every requested output with datatype, shape and flat data."""
    names = wanted if wanted is not None else [s["name"] for s in signature["outputs"]
                                               if s["name"] in outputs]
    result = []
    for n in names:
        value = outputs[n]
        dtype = str(value.dtype).replace("torch.", "")
        result.append({"name": n, "datatype": V2_DTYPES.get(dtype, dtype),
                       "shape": list(value.shape), "data": value.reshape(-1).tolist()})
    out = {"model_name": name, "model_version": str(version), "outputs": result}
    if isinstance(request_id, str):
        out["id"] = request_id
    return out
