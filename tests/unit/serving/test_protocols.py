"""TF Serving REST and KServe v2 request parsing and response formatting (no HTTP)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from learnrun.serving import kserve_v2, tf_rest
from learnrun.serving.tensors import RequestError, convert_features, dumps, parse_json_object

ONE = {"inputs": [{"name": "x", "dtype": "float32", "shape": [None, 2]}],
       "outputs": [{"name": "y", "dtype": "float32", "shape": [None, 1]}]}
TWO = {"inputs": [{"name": "a", "dtype": "float32", "shape": [None, 2]},
                  {"name": "b", "dtype": "int64", "shape": [None]}],
       "outputs": [{"name": "p", "dtype": "float32", "shape": [None, 2]},
                   {"name": "c", "dtype": "int64", "shape": [None, 1]}]}


def test_row_and_columnar_forms():
    assert tf_rest.parse_predict({"instances": [[1, 2], [3, 4]]}, ONE) == ({"x": [[1, 2], [3, 4]]}, True)
    assert tf_rest.parse_predict({"inputs": [[1, 2]]}, ONE) == ({"x": [[1, 2]]}, False)
    features, row = tf_rest.parse_predict({"instances": [{"a": [1, 2], "b": 3}, {"a": [0, 0], "b": 4}]}, TWO)
    assert row and features == {"a": [[1, 2], [0, 0]], "b": [3, 4]}
    assert tf_rest.parse_predict({"inputs": {"a": [[1, 2]], "b": [1]}}, TWO)[0] == {"a": [[1, 2]], "b": [1]}


@pytest.mark.parametrize("doc,sig,match", [
    ({"instances": [1], "inputs": [1]}, ONE, "only one of"),
    ({"instances": {}}, ONE, "list/array"),
    ({"instances": []}, ONE, "No values"),
    ({"instances": [[1, 2]]}, TWO, "list of objects"),
    ({"instances": [{"a": [1, 2]}]}, TWO, "keys must be equal to: a,b"),
    ({"instances": [{"a": [1, 2], "b": 1}, [1]]}, TWO, "Expecting object"),
    ({"inputs": [[1, 2]]}, TWO, "expecting an object"),
    ({"inputs": {"a": [[1, 2]]}}, TWO, "Missing named input: b"),
    ({}, ONE, "Missing 'inputs' or 'instances' key"),
])
def test_predict_request_errors(doc, sig, match):
    with pytest.raises(RequestError, match=match) as info:
        tf_rest.parse_predict(doc, sig)
    assert info.value.status == 400


def test_single_output_loses_its_name():
    out = {"y": torch.tensor([[1.0], [2.0]])}
    assert tf_rest.format_predict(out, ONE, row=True) == {"predictions": [[1.0], [2.0]]}
    assert tf_rest.format_predict(out, ONE, row=False) == {"outputs": [[1.0], [2.0]]}
    two = {"p": torch.tensor([[0.5, 0.5]]), "c": torch.tensor([[1]])}
    assert tf_rest.format_predict(two, TWO, row=True) == {"predictions": [{"p": [0.5, 0.5], "c": [1]}]}
    assert tf_rest.format_predict(two, TWO, row=False) == {"outputs": {"p": [[0.5, 0.5]], "c": [[1]]}}


def test_examples_classify_and_regress():
    features = tf_rest.parse_examples({"examples": [{"a": [1, 2]}, {"a": [3, 4], "b": 7}],
                                       "context": {"b": 5}}, TWO, "classify")
    assert features == {"a": [[1, 2], [3, 4]], "b": [5, 7]}
    with pytest.raises(RequestError, match="has 3 values; the model wants 2"):
        tf_rest.parse_examples({"examples": [{"a": [1, 2, 3], "b": 1}]}, TWO, "classify")
    with pytest.raises(RequestError, match="When method is regress, key 'examples'"):
        tf_rest.parse_examples({}, TWO, "regress")
    assert tf_rest.format_classify({"probabilities": torch.tensor([[0.25, 0.75]])}) == \
        {"results": [[["0", 0.25], ["1", 0.75]]]}
    assert tf_rest.format_regress({"predictions": torch.tensor([[1.5], [2.0]])}) == {"results": [1.5, 2.0]}
    with pytest.raises(RequestError, match="cannot classify"):
        tf_rest.format_classify({"y": torch.zeros(1, 1)})
    probs = {"probabilities": np.array([[0.25, 0.75]], dtype=np.float32)}
    assert tf_rest.format_classify(probs, {"label_vocabulary": ["no", "yes"]}) == \
        {"results": [[["no", 0.25], ["yes", 0.75]]]}
    assert tf_rest.format_classify(probs, {"label_vocabulary": ["one"]}) == \
        {"results": [[["0", 0.25], ["1", 0.75]]]}  # not one label per class: the ids


def test_metadata_and_status_shapes():
    meta = tf_rest.metadata("m", 7, ONE)
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert meta["model_spec"] == {"name": "m", "signature_name": "", "version": "7"}
    assert sig["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert sig["inputs"]["x"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}, {"size": "2", "name": ""}]

    class State:
        version, state, error = 3, "END", "ValueError: bad"

    assert tf_rest.version_status(State) == {"version": "3", "state": "END", "status": {
        "error_code": "UNKNOWN", "error_message": "ValueError: bad"}}


def test_json_errors():
    for body, match in ((b"", "empty"), (b"{x", "Parse error"), (b"[1]", "Is not object"),
                        (b"\xff", "UTF-8"), (b"[" * 100000, "Parse error|nested")):
        with pytest.raises(RequestError, match=match):
            parse_json_object(body)


def test_v2_infer_parsing_and_format():
    doc = {"id": "r1", "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}],
           "outputs": [{"name": "y", "parameters": {"binary_data": False}}]}
    features, wanted = kserve_v2.parse_infer(doc, ONE)
    assert features["x"].shape == (2, 2) and wanted == ["y"]
    out = kserve_v2.format_infer("m", 3, "r1", {"y": torch.tensor([[1.0], [2.0]])}, ONE, wanted)
    assert out == {"model_name": "m", "model_version": "3", "id": "r1",
                   "outputs": [{"name": "y", "datatype": "FP32", "shape": [2, 1], "data": [1.0, 2.0]}]}
    json.dumps(out)


@pytest.mark.parametrize("change,match", [
    ({"datatype": "FP64"}, "wants FP32"),
    ({"shape": [3, 2]}, "has 4 values"),
    ({"shape": [-1, 2]}, "non-negative"),
    ({"name": "z"}, "model's inputs"),
    ({"data": ["a", "b", "c", "d"]}, "numbers"),
    ({"parameters": {"binary_data_size": 16}}, "binary_data=False"),
])
def test_v2_infer_errors(change, match):
    item = {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4], **change}
    with pytest.raises(RequestError, match=match):
        kserve_v2.parse_infer({"inputs": [item]}, ONE)


SIG = {"inputs": [{"name": "f", "dtype": "float32", "shape": [None, 2]},
                  {"name": "i", "dtype": "int64", "shape": [None]},
                  {"name": "h", "dtype": "float16", "shape": [None, 2]},
                  {"name": "b", "dtype": "bool", "shape": [None, 1]}],
       "outputs": [], "input_kind": "dict"}


def _predictor(signature=SIG):
    from learnrun.export import Predictor

    return Predictor("mem", None, signature, module=torch.nn.Identity())


@pytest.mark.parametrize("features", [
    {"f": [[0.1, 2], [3, 1e30]], "i": [1, -2], "h": [[0.1, 65519.0], [1, 2]], "b": [[True], [False]]},
    {"f": np.array([[1, 2]], dtype=np.int32), "i": np.array([3], dtype=np.uint8),
     "h": np.array([[0.5, 1.5]]), "b": np.array([[True]])},
])
def test_fast_conversion_matches_predictor_convert(features):
    predictor = _predictor()
    fast = convert_features(predictor, features)
    slow = predictor.convert(features)
    assert fast.keys() == slow.keys()
    for name in slow:
        assert fast[name].dtype == slow[name].dtype and torch.equal(fast[name], slow[name]), name


@pytest.mark.parametrize("change,match", [
    ({"i": [1.5, 2]}, "must be int64"),  # a float for an integer input
    ({"f": [[1, 2], [3]]}, "ragged"),
    ({"f": [["a", "b"]]}, "must hold numbers"),
    ({"f": [[1, 2, 3]]}, "must have shape"),
    ({"b": [[1], [0]]}, "must be bool"),
    ({"f": None}, "must hold numbers"),
])
def test_conversion_mistakes_are_worded_by_the_predictor(change, match):
    features = {"f": [[1, 2], [3, 4]], "i": [1, 2], "h": [[1, 2], [3, 4]], "b": [[True], [False]],
                **change}
    with pytest.raises(RequestError, match=match) as info:
        convert_features(_predictor(), features)
    assert info.value.status == 400
    with pytest.raises(RequestError, match="missing"):
        convert_features(_predictor(), {"f": [[1, 2]]})


def test_json_reads_and_writes_like_the_standard_library():
    assert parse_json_object(b'{"x": [NaN, Infinity, 1e400]}')["x"][2] == float("inf")
    assert parse_json_object(b'\xef\xbb\xbf{"a": 18446744073709551616}') == {"a": 2 ** 64}
    payload = {"p": [0.1, -0.0, 1e-5, 3, True, "s\u00e9"], "n": {"k": [[1.5]]}}
    assert json.loads(dumps(payload)) == payload
    assert dumps({"x": [float("nan"), float("inf"), -float("inf")]}) == b'{"x":[NaN,Infinity,-Infinity]}'
    assert dumps({"x": None, "big": 2 ** 70}) == b'{"x":null,"big":1180591620717411303424}'
    value = torch.tensor([0.1, 1 / 3], dtype=torch.float32).tolist()
    assert json.loads(dumps({"v": value}))["v"] == value  # float32 values round-trip exactly
