"""Tests for learnrun.export.strategies: TF 8.6 export strategies, best-model selection, extension."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from learnrun import export as E
from learnrun.clock import FakeClock
from learnrun.model_dir import eval_results
from learnrun.model_dir import summaries as summary


class FakeEstimator:
    """Records export_savedmodel calls and writes a timestamped dir like the real one."""

    def __init__(self, model_dir, clock=None):
        self.model_dir = model_dir
        self.clock = clock or FakeClock()
        self.calls = []

    def latest_checkpoint(self):
        return None

    def export_savedmodel(self, export_dir_base, serving_input_fn, assets_extra=None, as_text=False,
                          checkpoint_path=None, strip_default_attrs=False):
        self.calls.append(dict(base=export_dir_base, fn=serving_input_fn, assets_extra=assets_extra,
                               as_text=as_text, checkpoint_path=checkpoint_path,
                               strip_default_attrs=strip_default_attrs))
        path = E.get_timestamped_export_dir(export_dir_base, self.clock)
        os.makedirs(path)
        self.clock.advance(1)
        return path


def _serving_input_fn():
    return torch.zeros(1, 3)


# -------------------------------------------------------------------------- 8.6 strategies


def test_export_strategy_argument_inspection():  # 8.6.8
    assert E.ExportStrategy("foo", len, None) == ("foo", len, None)
    assert E.ExportStrategy("foo", len).strip_default_attrs is None
    seen = []

    def two(estimator, export_path):
        seen.append((estimator, export_path))
        return "two"

    def with_ckpt(estimator, export_path, checkpoint_path):
        seen.append(checkpoint_path)

    def with_eval(estimator, export_path, checkpoint_path, eval_result):
        seen.append((checkpoint_path, eval_result))

    def eval_only(estimator, export_path, eval_result):
        raise AssertionError("must not be called")

    def strip(estimator, export_path, strip_default_attrs):
        seen.append(strip_default_attrs)

    assert E.ExportStrategy("a", two).export("est", "/p", "ckpt", {"loss": 1}) == "two"
    E.ExportStrategy("b", with_ckpt).export("est", "/p", "ckpt")
    E.ExportStrategy("c", with_eval).export("est", "/p", "ckpt", {"loss": 1})
    with pytest.raises(ValueError, match="An export_fn accepting eval_result must also accept checkpoint_path"):
        E.ExportStrategy("d", eval_only).export("est", "/p")
    E.ExportStrategy("e", strip, True).export("est", "/p")
    assert seen == [("est", "/p"), "ckpt", ("ckpt", {"loss": 1}), True]


def test_make_export_strategy_exports_and_collects(tmp_path):  # 8.6.4
    strategy = E.make_export_strategy(_serving_input_fn, assets_extra={"a": "/b"}, exports_to_keep=2,
                                      strip_default_attrs=True)
    assert isinstance(strategy, E.ExportStrategy) and strategy.name == "Servo"
    estimator = FakeEstimator(str(tmp_path))
    base = str(tmp_path / "export" / "Servo")
    paths = [strategy.export(estimator, base, checkpoint_path=f"ckpt-{i}") for i in range(3)]
    assert sorted(os.listdir(base)) == [os.path.basename(p) for p in paths[1:]]
    call = estimator.calls[-1]
    assert call == dict(base=base, fn=_serving_input_fn, assets_extra={"a": "/b"}, as_text=False,
                        checkpoint_path="ckpt-2", strip_default_attrs=True)


def test_make_export_strategy_rejects_output_alternative_key_at_export_time(tmp_path):
    strategy = E.make_export_strategy(_serving_input_fn, default_output_alternative_key="head")
    with pytest.raises(ValueError, match=r"^default_output_alternative_key is not supported in core "
                                         r"Estimator\. Given: head$"):
        strategy.export(FakeEstimator(str(tmp_path)), str(tmp_path))


def test_best_model_export_strategy(tmp_path):  # 8.6.5
    strategy = E.make_best_model_export_strategy(_serving_input_fn)
    assert strategy.name == "best_model"
    estimator = FakeEstimator(str(tmp_path))
    base = str(tmp_path / "export" / "best_model")
    first = strategy.export(estimator, base, "fake_ckpt_0", {"loss": 100})
    assert first and os.path.dirname(first) == os.path.join(base, "fake_ckpt_0")
    assert strategy.export(estimator, base, "fake_ckpt_1", {"loss": 101}) == ""
    assert sorted(os.listdir(base)) == ["fake_ckpt_0"]
    third = strategy.export(estimator, base, "fake_ckpt_2", {"loss": 10})
    assert os.path.dirname(third) == os.path.join(base, "fake_ckpt_2")
    assert strategy.export(estimator, base, "fake_ckpt_3", {"loss": 20}) == ""
    assert sorted(os.listdir(base)) == ["fake_ckpt_0", "fake_ckpt_2"]
    assert estimator.calls[-1]["checkpoint_path"] == "fake_ckpt_2"


def test_best_model_export_strategy_errors(tmp_path):  # 8.6.6
    strategy = E.make_best_model_export_strategy(_serving_input_fn)
    estimator = FakeEstimator(str(tmp_path))
    with pytest.raises(ValueError, match="Checkpoint path is empty"):
        strategy.export(estimator, str(tmp_path), "", {"loss": 1})
    with pytest.raises(ValueError, match="fake_ckpt_0 has empty evaluation results"):
        strategy.export(estimator, str(tmp_path), "fake_ckpt_0", None)


def test_default_compare_fn_requires_loss():
    selector = E.BestModelSelector()
    selector.update("a", {"loss": 1.0})
    with pytest.raises(ValueError, match="cand_eval_result cannot be empty or no loss is found in it."):
        selector.update("b", {"accuracy": 1.0})
    with pytest.raises(ValueError, match="curr_best_eval_result cannot be empty"):
        E.strategies._default_compare_fn({}, {"loss": 1.0})


def test_best_model_selector_reads_event_files(tmp_path):
    eval_dir = eval_results.eval_dir(str(tmp_path))
    for step, loss in [(10, 0.5), (20, 0.2), (30, 0.4)]:
        summary.write_scalars(eval_dir, step, {"loss": loss, "accuracy": 1 - loss})
    summary.close_all()
    pytest.importorskip("tensorboard")
    strategy = E.make_best_model_export_strategy(_serving_input_fn, model_dir=str(tmp_path),
                                                 event_file_pattern="eval/*.tfevents.*")
    estimator = FakeEstimator(str(tmp_path))
    assert strategy.export(estimator, str(tmp_path / "x"), "ckpt-40", {"loss": 0.3}) == ""
    assert strategy.export(estimator, str(tmp_path / "x"), "ckpt-50", {"loss": 0.1})
    custom = E.BestModelSelector(os.path.join(eval_dir, "*.tfevents.*"),
                                 compare_fn=lambda best, cand: best["accuracy"] < cand["accuracy"])
    assert custom.update("c", {"accuracy": 0.7}) == ("", None)


def test_best_model_selector_without_tensorboard_uses_results_jsonl(tmp_path, monkeypatch):
    eval_dir = eval_results.eval_dir(str(tmp_path))
    eval_results.append_eval_result(eval_dir, {"global_step": 10, "loss": 0.2})
    eval_results.append_eval_result(eval_dir, {"global_step": 20, "loss": 0.5})
    (tmp_path / "eval" / "events.out.tfevents.1.host").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "tensorboard.backend.event_processing.event_accumulator", None)
    selector = E.BestModelSelector(os.path.join(eval_dir, "*.tfevents.*"))
    assert selector.update("ckpt-30", {"loss": 0.3}) == ("", None)
    assert selector.update("ckpt-40", {"loss": 0.1}) == ("ckpt-40", {"loss": 0.1})


def _base_strategy():
    def export_fn(estimator, export_dir_base, checkpoint_path=None):
        path = os.path.join(export_dir_base, "e1")
        os.makedirs(path)
        return path

    return E.ExportStrategy("Servo", export_fn)


@pytest.mark.parametrize("name,expected", [("Servo2", "Servo2"), (None, "Servo")])
def test_extend_export_strategy(tmp_path, name, expected):  # 8.6.7
    seen = []

    def post(base_export_path, new_dir):
        seen.append(os.path.basename(base_export_path))
        out = os.path.join(new_dir, "rewrite")
        os.makedirs(out)
        return out

    strategy = E.extend_export_strategy(_base_strategy(), post, name, clock=FakeClock())
    assert strategy.name == expected
    final = strategy.export(FakeEstimator(str(tmp_path)), str(tmp_path), None)
    assert final == os.path.join(str(tmp_path), "rewrite") and os.path.isdir(final)
    assert seen == ["e1"]
    assert os.listdir(tmp_path) == ["rewrite"]  # temp dirs removed


def test_extend_export_strategy_errors(tmp_path):
    outside = str(tmp_path / "outside")
    strategy = E.extend_export_strategy(_base_strategy(), lambda b, d: outside, clock=FakeClock())
    with pytest.raises(ValueError, match="post_export_fn must return a sub-directory"):
        strategy.export(FakeEstimator(str(tmp_path)), str(tmp_path))
    os.makedirs(tmp_path / "temp-base-export-1500000000")
    with pytest.raises(RuntimeError, match="^Failed to obtain base export directory$"):
        strategy.export(FakeEstimator(str(tmp_path)), str(tmp_path))
    assert os.path.isdir(tmp_path / "temp-base-export-1500000000")  # not ours: kept

    def post(b, d):
        os.makedirs(os.path.join(d, "rewrite"))
        return os.path.join(d, "rewrite")

    os.makedirs(tmp_path / "sub" / "rewrite")
    strategy = E.extend_export_strategy(_base_strategy(), post, clock=FakeClock())
    with pytest.raises(RuntimeError, match="^Failed to obtain final export directory$"):
        strategy.export(FakeEstimator(str(tmp_path)), str(tmp_path / "sub"))
