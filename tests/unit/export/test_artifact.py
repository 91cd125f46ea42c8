"""Tests for learnrun.export.artifact: timestamped export dirs, torch exports written and loaded.

The last section checks load_export: safe loading (no unpickling), fsspec URLs and input
conversion of the Predictor.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile

import numpy as np
import pytest
import torch

from learnrun import export as E
from learnrun.clock import FakeClock
from learnrun.export import PROGRAM_FILENAME, load_export, write_export


class _FrozenClock(FakeClock):
    """A clock whose time never moves, so every timestamped dir name collides."""

    def sleep(self, secs):
        self.sleeps.append(secs)


# ------------------------------------------------------------------ 8.6 export utils and gc


def test_get_timestamped_export_dir_increases(tmp_path):  # 8.6.1
    clock = FakeClock()
    names = []
    for _ in range(3):
        names.append(os.path.basename(E.get_timestamped_export_dir(str(tmp_path), clock)))
        clock.advance(2)
    assert all(len(n) == 10 for n in names)
    assert names == sorted(names) and len(set(names)) == 3
    assert not os.listdir(tmp_path)  # the directory is not created


def test_get_timestamped_export_dir_retries_then_fails(tmp_path, caplog):
    clock = FakeClock()
    os.makedirs(tmp_path / str(int(clock.time())))
    path = E.get_timestamped_export_dir(str(tmp_path), clock)
    assert clock.sleeps == [1] and path == str(tmp_path / str(int(clock.time())))
    assert "already exists; retrying (attempt 1/10)" in caplog.text
    frozen = _FrozenClock()
    os.makedirs(tmp_path / str(int(frozen.time())), exist_ok=True)
    with pytest.raises(RuntimeError, match=r"^Failed to obtain a unique export directory name after 10 attempts\.$"):
        E.get_timestamped_export_dir(str(tmp_path), frozen)
    assert frozen.sleeps == [1] * 10


def test_get_temp_export_dir():
    assert E.get_temp_export_dir("/a/b/1500000000") == "/a/b/temp-1500000000"


# -------------------------------------------------------------------- torch export round trip


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                               torch.nn.Linear(8, 2))


@pytest.mark.parametrize("example_batch", [1, 4])
def test_write_and_load_export_round_trip(tmp_path, example_batch):
    module = _mlp()
    module.train()
    source = tmp_path / "vocab.txt"
    source.write_text("a\nb\n")
    path = E.write_export(str(tmp_path / "export"), module,
                          lambda out: {"logits": out, "probs": out.softmax(-1)},
                          torch.randn(example_batch, 3), assets_extra={"sub/vocab.txt": str(source)},
                          clock=FakeClock())
    assert module.training  # mode restored
    assert os.path.basename(path) == "1500000000"
    assert sorted(os.listdir(path)) == ["assets.extra", "model.safetensors", "program.pt2",
                                        "signature.json"]
    assert (tmp_path / "export" / "1500000000" / "assets.extra" / "sub" / "vocab.txt").read_text() == "a\nb\n"
    predictor = E.load_export(path)
    assert predictor.signature["inputs"] == [{"name": "features", "dtype": "float32", "shape": [None, 3]}]
    assert [o["name"] for o in predictor.signature["outputs"]] == ["logits", "probs"]
    assert predictor.signature["outputs"][0]["shape"] == [None, 2]
    module.eval()
    for batch in (1, 3, 17):
        x = torch.randn(batch, 3)
        out = predictor(x)
        with torch.no_grad():
            assert torch.allclose(out["logits"], module(x), atol=1e-6)
        assert torch.allclose(predictor({"features": x})["probs"], module(x).softmax(-1), atol=1e-6)
    from safetensors.torch import load_file

    weights = load_file(os.path.join(path, "model.safetensors"))
    assert all(torch.equal(weights[k], v) for k, v in module.state_dict().items())


def test_dict_features_and_given_weights(tmp_path):
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 1)

        def forward(self, features):
            return self.linear(features["x"]) * features["scale"]

    module = Model()
    other = Model()
    path = E.write_export(str(tmp_path), module, None,
                          E.ServingInputReceiver({"x": torch.randn(2, 3), "scale": torch.ones(2, 1)}),
                          weights=other.state_dict(), clock=FakeClock())
    predictor = E.load_export(path)
    assert [i["name"] for i in predictor.signature["inputs"]] == ["scale", "x"]
    feats = {"x": torch.randn(5, 3), "scale": torch.full((5, 1), 2.0)}
    with torch.no_grad():
        assert torch.allclose(predictor(feats)["outputs"], other(feats))
    with pytest.raises(KeyError, match=r"takes features \['scale', 'x'\], got \['x'\]"):
        predictor({"x": torch.randn(5, 3)})
    with pytest.raises(TypeError, match="takes a dict with keys"):
        predictor(torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"Input 'x' must have shape \[None, 3\].*got \[5, 4\]"):
        predictor({"x": torch.randn(5, 4), "scale": torch.ones(5, 1)})


def test_static_fallback_warns(tmp_path):
    class Reshape(torch.nn.Module):
        def forward(self, x):
            return x.reshape(2, -1)

    with pytest.warns(UserWarning, match="could not make the batch dimension dynamic"):
        path = E.write_export(str(tmp_path), Reshape(), None, torch.randn(2, 3), clock=FakeClock())
    predictor = E.load_export(path)
    assert predictor.signature["dynamic_batch"] is False
    assert predictor.signature["inputs"][0]["shape"] == [2, 3]
    assert predictor(torch.ones(2, 3))["outputs"].shape == (2, 3)
    with pytest.raises(ValueError, match=r"must have shape \[2, 3\]"):
        predictor(torch.ones(3, 3))


def test_write_export_errors_leave_nothing(tmp_path):
    with pytest.raises(TypeError, match="serving_input_fn must return a tensor"):
        E.write_export(str(tmp_path), _mlp(), None, [1, 2], clock=FakeClock())
    with pytest.raises(ValueError, match="same first \\(batch\\) dimension"):
        E.write_export(str(tmp_path), _mlp(), None, {"a": torch.ones(2, 3), "b": torch.ones(3, 3)},
                       clock=FakeClock())
    with pytest.raises(TypeError, match="predictions_fn must return a tensor or a dict"):
        E.write_export(str(tmp_path), _mlp(), lambda out: [out], torch.ones(2, 3), clock=FakeClock())
    with pytest.raises(ValueError, match="assets_extra keys must be relative"):
        E.write_export(str(tmp_path), _mlp(), None, torch.ones(2, 3), assets_extra={"../x": "y"},
                       clock=FakeClock())
    assert os.listdir(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="is not a learnrun export: signature.json is missing"):
        E.load_export(str(tmp_path))


def test_write_export_as_called_by_the_estimator(tmp_path):
    module = _mlp()
    path = E.write_export(export_dir_base=str(tmp_path), module=module, predictions_fn=None,
                          serving_input_fn=lambda: E.ServingInputReceiver(torch.ones(3, 3)),
                          checkpoint_path="/m/ckpt-7", global_step=7, assets_extra=None,
                          as_text=False, strip_default_attrs=False, clock=FakeClock())
    predictor = E.load_export(path)
    assert predictor.signature["checkpoint_path"] == "/m/ckpt-7"
    assert predictor.signature["global_step"] == 7
    module.eval()
    x = torch.randn(5, 3)
    with torch.no_grad():
        assert torch.allclose(predictor(x)["outputs"], module(x), atol=1e-6)
    with pytest.raises(ValueError, match="^serving_input_fn must be defined.$"):
        E.write_export(str(tmp_path), module)


def test_non_tensor_predictions_are_left_out_with_a_warning(tmp_path, caplog):
    module = _mlp().eval()
    names = ["neg", "pos"]

    def predictions_fn(out):
        preds = {"probs": out.softmax(-1)}
        if not torch.compiler.is_exporting():  # eager call: strings, as a vocabulary head gives
            preds["classes"] = [names[i] for i in out.argmax(-1).tolist()]
        return preds

    with caplog.at_level("WARNING"):
        path = E.write_export(str(tmp_path / "export"), module, predictions_fn, torch.randn(4, 3))
    assert "not tensors: classes" in caplog.text
    predictor = E.load_export(path)
    assert [o["name"] for o in predictor.signature["outputs"]] == ["probs"]
    x = torch.randn(5, 3)
    with torch.no_grad():
        assert torch.allclose(predictor(x)["probs"], module(x).softmax(-1), atol=1e-6)


def test_predictions_without_any_tensor_are_refused(tmp_path):
    with pytest.raises(TypeError, match="no tensor to export"):
        E.write_export(str(tmp_path / "export"), _mlp(), lambda out: {"c": ["x"]}, torch.randn(4, 3))
    assert not os.listdir(tmp_path / "export")


# ------------------------------------------------- load_export: safe loading, URLs, inputs


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 2)

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = module

        def forward(self, features):
            return {"y": self.lin(features["x"]), "n": features["k"] * 2}

    return write_export(str(tmp_path_factory.mktemp("exp")), Wrap(),
                        example_features={"x": torch.zeros(2, 3), "k": torch.zeros(2, dtype=torch.int64)})


def test_numpy_lists_and_tensors_convert(export_dir):
    predictor = load_export(export_dir)
    out = predictor({"x": np.ones((2, 3)), "k": [1, 2]})
    assert out["y"].dtype == torch.float32 and out["n"].tolist() == [2, 4]
    assert torch.equal(predictor({"x": torch.ones(2, 3), "k": torch.tensor([1, 2])})["y"], out["y"])
    assert load_export("file://" + export_dir).signature == predictor.signature


@pytest.mark.parametrize("features,error,match", [
    ({"x": np.ones((2, 3)), "k": [1.5, 2]}, TypeError, "'k' must be int64; got float64"),
    ({"x": np.ones((2, 4)), "k": [1, 2]}, ValueError, r"'x' must have shape \[None, 3\]"),
    ({"x": [[1, 2, 3], [1]], "k": [1, 2]}, ValueError, "ragged"),
    ({"x": np.ones((2, 3))}, KeyError, "missing \\['k'\\]"),
    (np.ones((2, 3)), TypeError, "takes a dict"),
])
def test_bad_inputs_say_what_is_wrong(export_dir, features, error, match):
    with pytest.raises(error, match=match):
        load_export(export_dir)(features)


def _rewrite_program(src, dst, edit):
    shutil.copytree(src, dst)
    path = os.path.join(dst, PROGRAM_FILENAME)
    with zipfile.ZipFile(path) as zin:
        items = {name: zin.read(name) for name in zin.namelist()}
    edit(items)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zout:
        for name, data in items.items():
            zout.writestr(name, data)
    with open(path, "wb") as f:
        f.write(buffer.getvalue())
    return dst


def test_pickled_payloads_are_refused(export_dir, tmp_path):
    def pickle_weights(items):
        name = next(n for n in items if n.endswith("model_weights_config.json"))
        config = json.loads(items[name])
        for entry in config["config"].values():
            entry["use_pickle"] = True
        items[name] = json.dumps(config).encode()

    bad = _rewrite_program(export_dir, str(tmp_path / "pickled"), pickle_weights)
    with pytest.raises(ValueError, match="Refusing to load .*pickled tensors"):
        load_export(bad)

    def legacy(items):
        items["version"] = b"8.0"

    with pytest.raises(ValueError, match="old zip layout"):
        load_export(_rewrite_program(export_dir, str(tmp_path / "legacy"), legacy))


def test_not_an_archive_and_urls(export_dir, tmp_path):
    bad = str(tmp_path / "garbage")
    shutil.copytree(export_dir, bad)
    with open(os.path.join(bad, PROGRAM_FILENAME), "wb") as f:
        f.write(b"not a zip")
    with pytest.raises(ValueError, match="not a torch.export archive"):
        load_export(bad)
    with pytest.raises(FileNotFoundError, match="signature.json is missing"):
        load_export("memory://nothing/here")
    import importlib.util

    if importlib.util.find_spec("s3fs") is None:  # with s3fs this would reach the network
        with pytest.raises(ValueError, match="s3fs"):
            load_export("s3://bucket/export/1")  # never read as a local path
