"""``learnrun model-server`` over real HTTP on 127.0.0.1: both protocols, versions, drain."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import torch

from learnrun.export import load_export
from learnrun.serving.server import ModelServer, ServingOptions, runner_factory
from learnrun.serving.versions import ModelConfig, ModelManager, ServedModel, VersionPolicy

COLUMN = None
VOCAB = ["ant", "bee", "cat"]


def _train_export(kind, model_dir, export_base):
    from learnrun import feature_column
    from learnrun.canned import DNNClassifier, DNNRegressor
    from learnrun.inputs import numpy_input_fn

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    col = [feature_column.numeric_column("x", shape=4)]
    if kind == "classifier":
        est = DNNClassifier([8], col, n_classes=3, model_dir=str(model_dir))
        y = np.arange(40) % 3
    elif kind == "vocab":
        est = DNNClassifier([8], col, n_classes=3, model_dir=str(model_dir),
                            label_vocabulary=VOCAB)
        y = np.array(VOCAB)[np.arange(40) % 3]
    else:
        est = DNNRegressor([8], col, model_dir=str(model_dir))
        y = x.sum(axis=1)
    est.train(numpy_input_fn({"x": x}, y, batch_size=10, shuffle=True), steps=2)
    return est.export_savedmodel(str(export_base), lambda: {"x": torch.zeros(2, 4)})


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return {kind: _train_export(kind, root / f"{kind}_model", root / kind)
            for kind in ("classifier", "regressor", "vocab")}


def _server(configs, **options):
    opts = ServingOptions(port=0, **options)
    make_runner = runner_factory(opts)
    manager = ModelManager([ServedModel(c, load_export, make_runner) for c in configs],
                           poll_wait_seconds=options.pop("poll", 0) if "poll" in options else 0)
    return ModelServer(manager, opts).start(timeout=60)


@pytest.fixture(scope="module")
def server(exports):
    configs = [ModelConfig(kind, os.path.dirname(path)) for kind, path in exports.items()]
    srv = _server(configs, max_request_bytes=100_000, enable_batching=True)
    yield srv
    srv.stop()


@pytest.fixture()
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


ROWS = [[0.1, 0.2, 0.3, 0.4], [1, 2, 3, 4]]


def test_predict_row_and_columnar(http, exports):
    version = os.path.basename(exports["classifier"])
    row = http.post("/v1/models/classifier:predict", json={"instances": ROWS})
    assert row.status_code == 200, row.text
    preds = row.json()["predictions"]
    assert len(preds) == 2 and set(preds[0]) >= {"logits", "probabilities", "class_ids"}
    col = http.post(f"/v1/models/classifier/versions/{version}:predict", json={"inputs": {"x": ROWS}})
    outputs = col.json()["outputs"]
    assert np.allclose(outputs["probabilities"], [p["probabilities"] for p in preds])
    expected = load_export(exports["classifier"])({"x": ROWS})["probabilities"].numpy()
    assert np.allclose(outputs["probabilities"], expected, atol=1e-6)
    assert http.post("/V1/MODELS/classifier:predict", json={"inputs": ROWS}).status_code == 200


def test_classify_and_regress(http):
    res = http.post("/v1/models/classifier:classify", json={"examples": [{"x": r} for r in ROWS]})
    assert res.status_code == 200, res.text
    results = res.json()["results"]
    assert [label for label, _ in results[0]] == ["0", "1", "2"]
    assert abs(sum(score for _, score in results[0]) - 1) < 1e-5
    reg = http.post("/v1/models/regressor:regress", json={"examples": [{"x": r} for r in ROWS]})
    assert reg.status_code == 200 and len(reg.json()["results"]) == 2
    single = http.post("/v1/models/regressor:predict", json={"instances": ROWS}).json()
    assert np.allclose(np.asarray(single["predictions"]).reshape(-1), reg.json()["results"])
    assert http.post("/v1/models/regressor:classify", json={"examples": [{"x": ROWS[0]}]}).status_code == 400


def test_classify_answers_with_the_label_vocabulary(http, exports):
    assert load_export(exports["vocab"]).signature["label_vocabulary"] == VOCAB
    assert "label_vocabulary" not in load_export(exports["classifier"]).signature
    res = http.post("/v1/models/vocab:classify", json={"examples": [{"x": r} for r in ROWS]})
    assert res.status_code == 200, res.text
    results = res.json()["results"]
    probs = http.post("/v1/models/vocab:predict", json={"instances": ROWS}).json()["predictions"]
    for result, pred in zip(results, probs, strict=True):
        assert [label for label, _ in result] == VOCAB
        assert np.allclose([score for _, score in result], pred["probabilities"], atol=1e-6)


def test_status_and_metadata(http, exports):
    version = os.path.basename(exports["classifier"])
    status = http.get("/v1/models/classifier").json()
    assert status == {"model_version_status": [{"version": version, "state": "AVAILABLE",
                                                "status": {"error_code": "OK", "error_message": ""}}]}
    assert http.get(f"/v1/models/classifier/versions/{version}").status_code == 200
    meta = http.get("/v1/models/classifier/metadata").json()
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["x"]["tensor_shape"]["dim"][1] == {"size": "4", "name": ""}
    assert meta["model_spec"]["version"] == version


@pytest.mark.parametrize("method,path,body,code", [
    ("POST", "/v1/models/classifier:predict", b"{", 400),
    ("POST", "/v1/models/classifier:predict", b'{"instances": [[1, 2]]}', 400),
    ("POST", "/v1/models/classifier:predict", b'{"instances": [["a", "b", "c", "d"]]}', 400),
    ("POST", "/v1/models/classifier:predict", b'{"instances": [[1,2,3,4]], "signature_name": "x"}', 400),
    ("POST", "/v1/models/nope:predict", b'{"instances": [[1]]}', 404),
    ("POST", "/v1/models/classifier/versions/1:predict", b'{"instances": [[1]]}', 404),
    ("POST", "/v1/models/classifier/labels/stable:predict", b'{"instances": [[1]]}', 404),
    ("GET", "/v1/models/nope", b"", 404),
    ("POST", "/v1/models/classifier:predict", b'{"instances": [' + b"[1,2,3,4]," * 20000 + b"[1,2,3,4]]}", 413),
    ("GET", "/nowhere", b"", 404),
    ("POST", "/v2/models/nope/infer", b"{}", 404),
])
def test_client_errors_are_json(http, method, path, body, code):
    res = http.request(method, path, content=body)
    assert res.status_code == code, res.text
    assert isinstance(res.json()["error"], str) and res.json()["error"]


def test_kserve_v2_with_tritonclient(server):
    import tritonclient.http as triton

    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("classifier")
    meta = client.get_model_metadata("classifier")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    data = np.asarray(ROWS, dtype=np.float32)
    inp = triton.InferInput("x", list(data.shape), "FP32")
    inp.set_data_from_numpy(data, binary_data=False)
    out = triton.InferRequestedOutput("probabilities", binary_data=False)
    result = client.infer("classifier", [inp], outputs=[out])
    probs = result.as_numpy("probabilities")
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert result.as_numpy("logits") is None
    client.close()


@pytest.mark.parametrize("batching", [False, True])
def test_model_calls_in_threads(exports, batching):
    srv = _server([ModelConfig("m", os.path.dirname(exports["classifier"]))],
                  enable_batching=batching, num_batch_threads=2)
    try:
        runner = srv.manager.get("m").runner
        assert runner is not None and runner.executor is not None
        expected = load_export(exports["classifier"])({"x": ROWS})["probabilities"].numpy()
        results = []

        def client():
            with httpx.Client(base_url=srv.url, timeout=30) as http:
                for _ in range(5):
                    res = http.post("/v1/models/m:predict", json={"inputs": {"x": ROWS}})
                    results.append((res.status_code, res.json()))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 20 and all(code == 200 for code, _ in results)
        for _, doc in results:
            assert np.allclose(doc["outputs"]["probabilities"], expected, atol=1e-6)
    finally:
        srv.stop()


@pytest.mark.slow
def test_fuzzed_bodies_get_4xx_never_5xx(server):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
            st.sampled_from(["instances", "inputs", "x", "examples", "name", "shape", "datatype",
                             "data", "signature_name", "outputs"]), inner, max_size=4),
        max_leaves=30)
    paths = st.sampled_from(["/v1/models/classifier:predict", "/v1/models/classifier:classify",
                             "/v1/models/regressor:regress", "/v2/models/classifier/infer"])
    bodies = json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=40)

    with httpx.Client(base_url=server.url, timeout=30) as client:
        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
        @given(path=paths, body=bodies)
        def check(path, body):
            res = client.post(path, content=body)
            assert res.status_code < 500, (path, body, res.text)
            if res.status_code >= 400:
                assert "error" in res.json()

        check()
        assert client.get("/v2/health/ready").status_code == 200


@pytest.mark.slow
def test_new_version_goes_live_without_failed_requests(tmp_path, exports):
    base = tmp_path / "base"
    first = base / "1"
    shutil.copytree(exports["classifier"], first)
    srv = _server([ModelConfig("m", str(base), VersionPolicy.parse("latest:1"))],
                  enable_batching=True)
    srv.manager.poll_wait_seconds = 0.1
    srv.manager._thread = threading.Thread(target=srv.manager._run, daemon=True)  # noqa: SLF001
    srv.manager._thread.start()  # noqa: SLF001 - poll fast for this test
    failures, versions, stop = [], set(), threading.Event()

    def client():
        with httpx.Client(base_url=srv.url, timeout=30) as http:
            while not stop.is_set():
                res = http.post("/v1/models/m:predict", json={"instances": ROWS})
                if res.status_code != 200:
                    failures.append(res.text)
                status = http.get("/v1/models/m").json()["model_version_status"]
                versions.update(s["version"] for s in status if s["state"] == "AVAILABLE")

    threads = [threading.Thread(target=client) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        shutil.copytree(exports["classifier"], base / "2")  # copied in while serving
        deadline = time.monotonic() + 30
        while "2" not in versions and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        srv.stop()
    assert "2" in versions and failures == []
    assert srv.manager.models["m"].statuses(1)[0].state == "END"


@pytest.mark.slow
def test_sigterm_drains_in_flight_request(tmp_path, exports):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "learnrun", "model-server", "--model_name", "m", "--model_base_path",
         os.path.dirname(exports["classifier"]), "--rest_api_port", "0", "--enable_batching",
         "--max_batch_size", "64", "--batch_timeout_micros", "1500000",
         "--file_system_poll_wait_seconds", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=env)
    try:
        port, deadline = None, time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            m = re.search(r"at http://127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else port
            assert line or port, "server exited before listening"
        result = {}

        def request():  # waits ~1.5 s in the batcher: in flight when SIGTERM arrives
            res = httpx.post(f"http://127.0.0.1:{port}/v1/models/m:predict",
                             json={"instances": ROWS}, timeout=30)
            result["status"] = res.status_code

        thread = threading.Thread(target=request)
        thread.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        thread.join(30)
        assert proc.wait(timeout=30) == 0
        assert result.get("status") == 200
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


@pytest.mark.parametrize("args,match", [
    ([], "--model_base_path"),
    (["--model_base_path", "x", "--model_version_policy", "newest"], "bad version policy 'newest'"),
    (["--model_base_path", "x", "--model_config_file", "c"], "not both"),
    (["--model_config_file", "missing.conf"], "cannot read --model_config_file"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, args, match, capsys, monkeypatch):
    from learnrun.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert main(["model-server", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("learnrun: error:") and match in err[0]
