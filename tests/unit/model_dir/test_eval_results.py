"""Tests for learnrun.model_dir.eval_results: eval directories and results.jsonl."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch

from learnrun.model_dir import eval_results


def test_eval_dir(tmp_path):
    assert eval_results.eval_dir(str(tmp_path)) == os.path.join(str(tmp_path), "eval")
    assert eval_results.eval_dir(str(tmp_path), "foo") == os.path.join(str(tmp_path), "eval_foo")
    with pytest.raises(ValueError, match="non-empty string or None, got 123"):
        eval_results.eval_dir(str(tmp_path), 123)


def test_eval_results_round_trip_with_conversion(tmp_path):
    d = eval_results.eval_dir(str(tmp_path), "val")
    path = eval_results.append_eval_result(d, {
        "checkpoint_path": "/m/ckpt-10", "global_step": torch.tensor(10), "loss": torch.tensor(0.5),
        "accuracy": np.float32(0.75), "per_class": torch.tensor([0.25, 0.5]), "ok": True})
    eval_results.append_eval_result(d, {"global_step": np.int64(20), "loss": float("nan")})
    assert path == os.path.join(d, "results.jsonl")
    with open(path) as f:
        assert len(f.readlines()) == 2
    first, second = eval_results.read_eval_results(d)
    assert first == {"checkpoint_path": "/m/ckpt-10", "global_step": 10, "loss": 0.5,
                     "accuracy": 0.75, "per_class": [0.25, 0.5], "ok": True}
    assert isinstance(first["global_step"], int)
    assert second["global_step"] == 20 and second["loss"] != second["loss"]  # NaN survives


def test_read_eval_results_missing_and_torn(tmp_path, caplog):
    assert eval_results.read_eval_results(str(tmp_path / "none")) == []
    eval_results.append_eval_result(str(tmp_path), {"global_step": 1})
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"global_step": 2, "lo')  # torn by a crash
    with caplog.at_level(logging.WARNING):
        assert eval_results.read_eval_results(str(tmp_path)) == [{"global_step": 1}]
    assert "line 2" in caplog.text


def test_append_eval_result_rejects_bad_values(tmp_path):
    with pytest.raises(TypeError, match=r"record\['m'\].*object"):
        eval_results.append_eval_result(str(tmp_path), {"m": object()})
    with pytest.raises(TypeError, match="must be a dict"):
        eval_results.append_eval_result(str(tmp_path), [1])
    assert not os.path.exists(tmp_path / "results.jsonl")
    eval_results.append_eval_result(str(tmp_path), {"nested": {"a": np.arange(2)}})
    assert json.loads((tmp_path / "results.jsonl").read_text()) == {"nested": {"a": [0, 1]}}
