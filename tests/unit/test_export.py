"""Tests for learnrun.export: TF 8.6 cases (export utils, strategies, gc) and torch exports."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from learnrun import export as E
from learnrun.clock import FakeClock
from learnrun.model_dir import eval_results
from learnrun.model_dir import summaries as summary


class _FrozenClock(FakeClock):
    """A clock whose time never moves, so every timestamped dir name collides."""

    def sleep(self, secs):
        self.sleeps.append(secs)


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


def _make_exports(base, versions):
    for v in versions:
        os.makedirs(os.path.join(base, str(v)))


def test_garbage_collect_exports(tmp_path):  # 8.6.2
    versions = [1500000000, 1500000001, 1500000002, 1500000003]
    _make_exports(tmp_path, versions + ["temp-1500000004", "best", 123456789, 12345678901])
    E.garbage_collect_exports(str(tmp_path), 2)
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["1500000002", "1500000003", "temp-1500000004", "best", "123456789", "12345678901"])
    E.garbage_collect_exports(str(tmp_path), None)
    assert len(os.listdir(tmp_path)) == 6
    E.garbage_collect_exports(str(tmp_path), 0)
    assert sorted(os.listdir(tmp_path)) == sorted(["temp-1500000004", "best", "123456789", "12345678901"])
    E.garbage_collect_exports(str(tmp_path / "missing"), 1)  # no error


def test_get_most_recent_export(tmp_path):  # 8.6.3
    assert E.get_most_recent_export(str(tmp_path)) is None
    _make_exports(tmp_path, [1500000000, 1500000002, 1500000001, "temp-1600000000"])
    recent = E.get_most_recent_export(str(tmp_path))
    assert recent.export_version == 1500000002
    assert recent.path == os.path.join(str(tmp_path), str(recent.export_version))


def _paths(*versions):
    return [E.Path("/foo", v) for v in versions]  # as in TF gc_test


def _versions(paths):
    return [p.export_version for p in paths]


def test_gc_filters():  # 8.6.9
    assert _versions(E.largest_export_versions(2)(_paths(8, 9, 10))) == [9, 10]
    assert _versions(E.largest_export_versions(2)(_paths(0, 3))) == [0, 3]
    assert _versions(E.largest_export_versions(2)(_paths(None, 3))) == [3]
    assert _versions(E.mod_export_version(2)(_paths(4, 5, 6, 9))) == [4, 6]
    assert _versions(E.mod_export_version(3)(_paths(4, 5, 6, 9))) == [6, 9]
    assert _versions(E.one_of_every_n_export_versions(3)(_paths(0, 1, 3, 5, 6, 7, 8, 33))) == [3, 6, 8, 33]
    assert _versions(E.one_of_every_n_export_versions(3)(_paths(0, 4, 5))) == [0, 5]
    both = E.union(E.largest_export_versions(3), E.mod_export_version(3))
    assert _versions(both(_paths(*range(10)))) == [0, 3, 6, 7, 8, 9]
    assert _versions(E.negation(E.mod_export_version(2))(_paths(4, 5, 6, 9))) == [5, 9]
    assert _versions(E.negation(E.mod_export_version(3))(_paths(4, 5, 6, 9))) == [4, 5]


@pytest.mark.parametrize("as_bytes", [False, True])
def test_get_paths(tmp_path, as_bytes):
    for name in ("0", "1", "2", "ignore"):
        os.makedirs(tmp_path / name)

    def parser(path):
        name = os.path.basename(path.path)
        return path._replace(export_version=int(name)) if name.isdigit() else None

    base = os.fsencode(str(tmp_path)) if as_bytes else str(tmp_path)
    paths = E.get_paths(base, parser)
    assert paths == [E.Path(os.path.join(str(tmp_path), str(i)), i) for i in range(3)]


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
    with pytest.raises(FileNotFoundError, match="is not a learnrun export: program.pt2 is missing"):
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
