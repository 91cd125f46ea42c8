"""What both protocols share: the request error, dtype names and tensors as JSON values."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

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
    try:
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
    return _ENCODER.encode(payload).encode()


def preview(value: Any, limit: int = 120) -> str:
    """A short ``repr``-like text of a JSON value for error messages."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(type(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def convert_features(predictor: Any, features: Any) -> dict:
    """``predictor.convert(features)``, its KeyError/TypeError/ValueError as a RequestError."""
    try:
        return predictor.convert(features)
    except (KeyError, TypeError, ValueError) as exc:
        message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
        raise RequestError(message) from None
    except RecursionError:
        raise RequestError("the input is nested too deeply") from None


def input_specs(signature: Mapping) -> list[dict]:
    """The signature's input specs (name, dtype, shape with None for the batch)."""
    return list(signature["inputs"])


def output_specs(signature: Mapping) -> list[dict]:
    """The signature's output specs (name, dtype, shape with None for the batch)."""
    return list(signature["outputs"])
