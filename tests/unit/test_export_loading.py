"""load_export: safe loading (no unpickling), fsspec URLs and input conversion of the Predictor."""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile

import numpy as np
import pytest
import torch

from learnrun.export import PROGRAM_FILENAME, load_export, write_export


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
    with pytest.raises(FileNotFoundError, match="program.pt2 is missing"):
        load_export("memory://nothing/here")
    import importlib.util

    if importlib.util.find_spec("s3fs") is None:  # with s3fs this would reach the network
        with pytest.raises(ValueError, match="s3fs"):
            load_export("s3://bucket/export/1")  # never read as a local path
