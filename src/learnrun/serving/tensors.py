"""What both protocols share: the request error, dtype names, JSON and input conversion.

JSON goes through orjson when it is installed (the serving extra has it; about 20x faster
than the standard library on these documents), with the standard library's ``json`` as
the reference: a body orjson refuses is read again by ``json`` (which also takes ``NaN``,
``Infinity``, a UTF-8 BOM and integers of any size, and words the error), and an answer
holding ``null`` is written again by ``json`` so that NaN and infinities come out as
``NaN``/``Infinity`` (orjson would write ``null``), as TF Serving writes them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

try:
    import orjson
except ImportError:  # the standard library alone: same answers, more CPU per request
    orjson = None

#: signature dtype -> TensorFlow's DataType name
TF_DTYPES = {
    "float32": "DT_FLOAT", "float64": "DT_DOUBLE", "float16": "DT_HALF", "bfloat16": "DT_BFLOAT16",
    "int64": "DT_INT64", "int32": "DT_INT32", "int16": "DT_INT16", "int8": "DT_INT8",
    "uint8": "DT_UINT8", "bool": "DT_BOOL", "complex64": "DT_COMPLEX64",
}
#: signature dtype -> KServe v2 datatype
V2_DTYPES = {
    "float32": "FP32", "float64": "FP64", "float16": "FP16", "bfloat16": "BF16",
    "int64": "INT64", "int32": "INT32", "int16": "INT16", "int8": "INT8", "uint8": "UINT8",
    "bool": "BOOL",
}


class RequestError(Exception):
    """A client's mistake: answered with ``status`` (4xx) and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class NotFoundError(RequestError):
    """An unknown model, version or label (HTTP 404)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 404)


def parse_json_object(body: bytes) -> dict:
    """``body`` as a JSON object, or a :class:`RequestError` saying why not."""
    if not body:
        raise RequestError("JSON Parse error: The document is empty")
    doc = None
    if orjson is not None:
        try:
            doc = orjson.loads(body)
        except (orjson.JSONDecodeError, RecursionError):
            doc = None  # json below takes what orjson refuses, or words the error
    try:
        if doc is None:
            doc = json.loads(body)
    except UnicodeDecodeError as exc:
        raise RequestError(f"JSON Parse error: the body is not UTF-8 ({exc})") from None
    except ValueError as exc:
        raise RequestError(f"JSON Parse error: {exc}") from None
    except RecursionError:
        raise RequestError("JSON Parse error: the document is nested too deeply") from None
    if not isinstance(doc, dict):
        raise RequestError(f"JSON Value: {preview(doc)} Is not object")
    return doc


_ENCODER = json.JSONEncoder(allow_nan=True, separators=(",", ":"))


def dumps(payload: Any) -> bytes:
    """JSON bytes of ``payload``; NaN and infinities are written as ``NaN``/``Infinity``."""
    if orjson is not None:
        try:
            data = orjson.dumps(payload)
        except TypeError:  # e.g. an integer over 64 bits: json writes it
            pass
        else:
            if b"null" not in data:  # orjson writes NaN and infinities as null
                return data
    return _ENCODER.encode(payload).encode()


def preview(value: Any, limit: int = 120) -> str:
    """A short ``repr``-like text of a JSON value for error messages."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(type(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: signature dtype -> the numpy kinds (``dtype.kind``) a request's values may have for it:
#: numbers convert within their kind or widen, as ``Predictor.convert`` allows
_FAST_KINDS = {"float32": "fiu", "float64": "fiu", "float16": "fiu", "int64": "iu",
               "int32": "iu", "int16": "iu", "int8": "iu", "uint8": "iu", "bool": "b"}


def convert_features(predictor: Any, features: Any) -> dict:
    """``predictor.convert(features)``, its KeyError/TypeError/ValueError as a RequestError.

    Lists and arrays of the signature's names, shapes and kinds take a shorter path with
    the same result (one ``numpy.asarray`` and one cast per input); anything else, and
    every mistake, goes through ``predictor.convert``, which words the error.
    """
    fast = _fast_convert(predictor.signature["inputs"], features)
    if fast is not None:
        return fast
    try:
        return predictor.convert(features)
    except (KeyError, TypeError, ValueError) as exc:
        message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
        raise RequestError(message) from None
    except RecursionError:
        raise RequestError("the input is nested too deeply") from None


_NUMPY_DTYPES: dict[str, Any] = {}


def _numpy_dtype(name: str) -> Any:
    dtype = _NUMPY_DTYPES.get(name)
    if dtype is None:
        import numpy as np

        dtype = _NUMPY_DTYPES[name] = np.dtype(name)
    return dtype


def _fast_convert(specs: list, features: Any) -> dict | None:
    import numpy as np
    import torch

    if not isinstance(features, dict) or len(features) != len(specs):
        return None
    out = {}
    for spec in specs:
        name, dtype, want = spec["name"], spec["dtype"], spec["shape"]
        value = features.get(name)
        kinds = _FAST_KINDS.get(dtype)
        if kinds is None or not isinstance(value, (list, np.ndarray)):
            return None
        try:
            array = np.asarray(value)
        except (ValueError, TypeError, RecursionError):
            return None
        if array.dtype.kind not in kinds or array.ndim != len(want) or any(
                w is not None and w != g for w, g in zip(want, array.shape, strict=True)):
            return None
        target = _numpy_dtype(dtype)
        if array.dtype != target:
            array = array.astype(target)
        out[name] = torch.from_numpy(np.ascontiguousarray(array))
    return out


def input_specs(signature: Mapping) -> list[dict]:
    """The signature's input specs (name, dtype, shape with None for the batch)."""
    return list(signature["inputs"])


def output_specs(signature: Mapping) -> list[dict]:
    """The signature's output specs (name, dtype, shape with None for the batch)."""
    return list(signature["outputs"])
