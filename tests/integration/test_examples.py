"""The built-in experiments: digits reaches 95% test accuracy, diabetes beats the mean."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

import learnrun
from learnrun.examples import EXAMPLES, get_example
from learnrun.examples.common import load_diabetes, load_digits, train_test_split


def test_registry_and_data():
    assert set(EXAMPLES) == {"digits", "diabetes"}
    with pytest.raises(ValueError, match="Unknown built-in experiment 'mnist'; choose one of"):
        get_example("mnist")
    x, y = load_digits()
    assert x.shape == (1797, 64) and set(np.unique(y)) == set(range(10))
    assert x.min() == 0 and x.max() == 16
    x, y = load_diabetes()
    assert x.shape == (442, 10) and y.shape == (442,)
    train, test = train_test_split(100, 0.2, seed=3)
    assert len(test) == 20 and not set(train) & set(test)
    assert (train_test_split(100, 0.2, seed=3)[1] == test).all()
    with pytest.raises(ValueError, match="test_fraction must be in"):
        train_test_split(10, 1.5, seed=0)


@pytest.mark.slow
def test_digits_cli_reaches_95_percent(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["OMP_NUM_THREADS"] = "1"
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "learnrun", "run", "digits", "--model-dir", "runs/digits"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    accuracy = float(next(line.split()[1] for line in out.splitlines()
                          if line.startswith("accuracy ")))
    assert accuracy >= 0.95, out[-2000:]
    assert elapsed < 60, f"digits took {elapsed:.0f} s (issue 4: under a minute on CPU)"
    assert "schedule:  train_and_evaluate" in out
    assert "tensorboard --logdir runs/digits" in out
    assert "learnrun checkpoints runs/digits" in out
    exports = os.listdir(tmp_path / "runs" / "digits" / "export" / "Servo")
    assert len(exports) == 1 and exports[0].isdigit()
    assert f"export:      runs/digits/export/Servo/{exports[0]}" in out
    predictor = learnrun.export.load_export(str(tmp_path / "runs/digits/export/Servo" / exports[0]))
    import torch

    x, y = load_digits()
    predictions = predictor({"pixels": torch.from_numpy(x[:50] / 16.0)})
    assert (predictions["class_ids"].reshape(-1).numpy() == y[:50]).mean() > 0.9


def test_diabetes_beats_predicting_the_mean(tmp_path):
    module = get_example("diabetes")
    hparams = module.default_hparams().parse("train_steps=400")
    config = learnrun.RunConfig(model_dir=str(tmp_path / "m"))
    metrics, exports = learnrun.run(module.experiment_fn, run_config=config, hparams=hparams)
    assert metrics["global_step"] == 400
    x, y = load_diabetes()
    train, test = train_test_split(len(y), module.TEST_FRACTION, seed=int(hparams.split_seed))
    mean_rmse = float(np.sqrt(np.mean((y[test] - y[train].mean()) ** 2)))  # the mean predictor
    assert mean_rmse > 70
    assert metrics["rmse"] < 0.85 * mean_rmse, (metrics["rmse"], mean_rmse)
    assert len(exports) == 1 and os.path.isdir(exports[0])


def test_diabetes_rejects_unknown_model(tmp_path):
    module = get_example("diabetes")
    with pytest.raises(ValueError, match="hparams.model must be 'dnn' or 'linear', got 'svm'"):
        module.experiment_fn(learnrun.RunConfig(model_dir=str(tmp_path)),
                             module.default_hparams().parse("model=svm"))


def test_example_data_is_declared_as_package_data():
    """Every shipped data file matches a ``[tool.setuptools.package-data]`` glob of pyproject."""
    import fnmatch
    import tomllib
    from pathlib import Path

    from learnrun.examples.common import DATA_DIR

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("not a source checkout")
    globs = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]["learnrun"]
    package_root = Path(learnrun.__file__).parent
    for name in ("digits.csv.gz", "diabetes_data_raw.csv.gz", "diabetes_target.csv.gz"):
        relative = (Path(DATA_DIR) / name).relative_to(package_root).as_posix()
        assert any(fnmatch.fnmatch(relative, g) for g in globs), (relative, globs)
