"""End-to-end tests of learnrun.Estimator on a small MLP (CPU, seconds)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from learnrun.clock import FakeClock
from learnrun.config.run_config import RunConfig
from learnrun.errors import CheckpointError, NanLossDuringTrainingError, NotFittedError
from learnrun.estimator.estimator import Estimator, WarmStartSettings
from learnrun.estimator.spec import EstimatorSpec
from learnrun.hooks import CheckpointSaverListener, SessionRunHook, stop_if_lower_hook
from learnrun.model_dir import checkpoints as ckpt
from tests.helpers.data import separable_tensors

X, Y = separable_tensors(96)


class ShuffledBatches:
    """A reshuffling, resumable iterable of (features, labels) with its own generator."""

    def __init__(self, batch_size=8, seed=3, epochs=100):
        self.batch_size, self.seed, self.epochs = batch_size, seed, epochs
        self.epoch, self.pos = 0, 0

    def state_dict(self):
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state):
        self.epoch, self.pos = state["epoch"], state["pos"]

    def __iter__(self):
        while self.epoch < self.epochs:
            order = torch.randperm(len(X), generator=torch.Generator().manual_seed(self.seed + self.epoch))
            while self.pos < len(X):
                idx = order[self.pos:self.pos + self.batch_size]
                self.pos += self.batch_size
                yield X[idx], Y[idx]
            self.epoch, self.pos = self.epoch + 1, 0


def make_model_fn(lr=0.05, dropout=0.2, nan_after=None, metrics=True):
    def model_fn(params, config, mode):
        module = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(),
                                     torch.nn.Dropout(dropout), torch.nn.Linear(16, 2))
        optimizer = torch.optim.Adam(module.parameters(), lr=params.get("lr", lr))
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.9)
        calls = {"n": 0}

        def loss_fn(outputs, labels):
            calls["n"] += 1
            loss = torch.nn.functional.cross_entropy(outputs, labels)
            if nan_after is not None and calls["n"] > nan_after:
                loss = loss * float("nan")
            return loss

        eval_ops = None
        if metrics:
            import torchmetrics

            acc = torchmetrics.classification.MulticlassAccuracy(num_classes=2, average="micro")
            acc.learnrun_inputs = "classes"
            eval_ops = {"accuracy": acc}
        return EstimatorSpec(module=module, loss_fn=loss_fn, optimizer=optimizer,
                             scheduler=scheduler, eval_metric_ops=eval_ops,
                             predictions_fn=lambda out: {"classes": out.argmax(-1),
                                                         "probabilities": out.softmax(-1)})
    return model_fn


def config(tmp_path, **kw):
    kw.setdefault("save_checkpoints_steps", 10)
    kw.setdefault("log_step_count_steps", 5)
    kw.setdefault("tf_random_seed", 7)
    return RunConfig(model_dir=str(tmp_path / "model"), **kw)


def eval_input_fn():
    return [(X[i:i + 32], Y[i:i + 32]) for i in range(0, 96, 32)]


def test_train_evaluate_predict(tmp_path):
    est = Estimator(make_model_fn(), config=config(tmp_path), params={"lr": 0.05})
    with pytest.raises(NotFittedError, match="Couldn't find trained model at"):
        est.evaluate(eval_input_fn)
    assert est.train(ShuffledBatches, steps=25) is est
    steps = [c.step for c in ckpt.list_checkpoints(est.model_dir)]
    assert steps == [0, 10, 20, 25]
    assert est.latest_checkpoint().endswith("ckpt-25")
    result = est.evaluate(eval_input_fn, name="val")
    assert set(result) == {"accuracy", "loss", "global_step"} and result["global_step"] == 25
    assert result["accuracy"] > 0.6
    with open(os.path.join(est.model_dir, "eval_val", "results.jsonl")) as f:
        lines = f.read().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["checkpoint_path"].endswith("ckpt-25")
    assert est.evaluate(eval_input_fn, steps=1)["global_step"] == 25
    preds = list(est.predict(lambda: [X[:5]]))
    assert len(preds) == 5 and set(preds[0]) == {"classes", "probabilities"}
    assert preds[0]["probabilities"].shape == (2,)
    batches = list(est.predict(eval_input_fn, predict_keys="classes", yield_single_examples=False))
    assert [b["classes"].shape for b in batches] == [(32,)] * 3 and set(batches[0]) == {"classes"}
    with pytest.raises(ValueError, match="Unknown predict_keys: \\['nope'\\]"):
        next(est.predict(eval_input_fn, predict_keys=["nope"]))
    assert "0.weight" in est.get_variable_names()
    assert isinstance(est.get_variable_value("0.weight"), np.ndarray)
    with pytest.raises(ValueError, match="not in the latest checkpoint"):
        est.get_variable_value("missing")


def test_steps_and_max_steps_semantics(tmp_path, caplog):
    est = Estimator(make_model_fn(), config=config(tmp_path, save_checkpoints_steps=None,
                                                   save_checkpoints_secs=600))
    with pytest.raises(ValueError, match="Can not provide both steps and max_steps."):
        est.train(ShuffledBatches, steps=1, max_steps=2)
    with pytest.raises(ValueError, match="Must specify steps > 0, given: 0"):
        est.train(ShuffledBatches, steps=0)
    with pytest.raises(ValueError, match="Must specify max_steps > 0, given: -1"):
        est.train(ShuffledBatches, max_steps=-1)
    est.train(ShuffledBatches, max_steps=7)
    est.train(ShuffledBatches, steps=3)
    assert ckpt.checkpoint_step(est.latest_checkpoint()) == 10
    with caplog.at_level("INFO", logger="learnrun"):
        est.train(ShuffledBatches, max_steps=8)
    assert "Skipping training since max_steps has already saved." in caplog.text
    est.train(lambda: [(X[:8], Y[:8])] * 4)  # input exhaustion ends training
    assert ckpt.checkpoint_step(est.latest_checkpoint()) == 14


def test_resume_is_bit_exact(tmp_path):
    one = Estimator(make_model_fn(), config=config(tmp_path / "a", save_checkpoints_steps=1000))
    one.train(ShuffledBatches, steps=23)
    two = Estimator(make_model_fn(), config=config(tmp_path / "b", save_checkpoints_steps=1000))
    two.train(ShuffledBatches, steps=9)
    two.train(ShuffledBatches, steps=14)
    assert one.get_variable_names() == two.get_variable_names()
    for name in one.get_variable_names():
        assert np.array_equal(one.get_variable_value(name), two.get_variable_value(name)), name
    a = ckpt.load_checkpoint(one.latest_checkpoint()).state
    b = ckpt.load_checkpoint(two.latest_checkpoint()).state
    assert a["scheduler"] == b["scheduler"] and a["input"] == b["input"]


def test_nan_loss_raises_and_keeps_last_checkpoint(tmp_path):
    # On CPU the loss is checked every step; on CUDA only every log_step_count_steps steps
    # (no per-step host sync), so the exact step is a CPU property.
    est = Estimator(make_model_fn(nan_after=12), config=config(tmp_path, device="cpu"))
    with pytest.raises(NanLossDuringTrainingError, match="at step 13"):
        est.train(ShuffledBatches, steps=30)
    assert ckpt.checkpoint_step(est.latest_checkpoint()) == 10


def test_warm_start_with_regex(tmp_path):
    src = Estimator(make_model_fn(), config=config(tmp_path / "src"))
    src.train(ShuffledBatches, steps=5)
    dst = Estimator(make_model_fn(), config=config(tmp_path / "dst", tf_random_seed=99),
                    warm_start_from=WarmStartSettings(src.model_dir, vars_to_warm_start="0\\..*"))
    dst.train(ShuffledBatches, steps=1)
    # the first layer started from src's weights; only one Adam step separates them
    diff0 = np.abs(dst.get_variable_value("0.weight") - src.get_variable_value("0.weight")).max()
    diff3 = np.abs(dst.get_variable_value("3.weight") - src.get_variable_value("3.weight")).max()
    assert diff0 <= 0.051 < diff3
    with pytest.raises(CheckpointError, match="no weight matched"):
        Estimator(make_model_fn(), config=config(tmp_path / "x"),
                  warm_start_from=WarmStartSettings(src.model_dir, "nothing")).train(
            ShuffledBatches, steps=1)


def test_constructor_checks(tmp_path, caplog):
    with pytest.raises(ValueError, match="model_dir are set both in constructor and RunConfig"):
        Estimator(make_model_fn(), model_dir=str(tmp_path / "a"),
                  config=RunConfig(model_dir=str(tmp_path / "b")))
    with pytest.raises(ValueError, match="does not take params argument"):
        Estimator(lambda config: None, params={"a": 1})
    with pytest.raises(ValueError, match="config must be an instance of `RunConfig`"):
        Estimator(make_model_fn(), config={"model_dir": "x"})
    est = Estimator(make_model_fn(), model_dir=str(tmp_path / "m"))
    assert est.config.model_dir == est.model_dir == str(tmp_path / "m")
    with caplog.at_level("WARNING", logger="learnrun"):
        temp = Estimator(make_model_fn())
    assert "Using temporary folder as model directory" in caplog.text
    os.rmdir(temp.model_dir)
    params = {"lr": 0.1}
    est = Estimator(make_model_fn(), model_dir=str(tmp_path / "p"), params=params)
    params["lr"] = 5
    assert est.params == {"lr": 0.1}


def test_spec_errors_in_train(tmp_path):
    def no_optimizer(params):
        return EstimatorSpec(module=torch.nn.Linear(4, 2), loss_fn=torch.nn.functional.cross_entropy)

    est = Estimator(no_optimizer, config=config(tmp_path))
    with pytest.raises(ValueError, match="without optimizer"):
        est.train(ShuffledBatches, steps=1)
    est = Estimator(lambda: "not a spec", config=config(tmp_path))
    with pytest.raises(TypeError, match="must return an EstimatorSpec"):
        est.train(ShuffledBatches, steps=1)
    est = Estimator(make_model_fn(), config=config(tmp_path, save_checkpoints_steps=None,
                                                   save_checkpoints_secs=None))
    with pytest.raises(ValueError, match="There should be a CheckpointSaverHook"):
        est.train(ShuffledBatches, steps=1, saving_listeners=[CheckpointSaverListener()])
    with pytest.raises(TypeError, match="All hooks must be `SessionRunHook` instances"):
        est.train(ShuffledBatches, steps=1, hooks=["nope"])
    with pytest.raises(ValueError, match="\\(features, labels\\) pair"):
        est.train(lambda: [X[:4]], steps=1)


def test_tensorboard_events_and_results(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    est = Estimator(make_model_fn(), config=config(tmp_path, save_summary_steps=4))
    est.train(ShuffledBatches, steps=12)
    est.evaluate(eval_input_fn)
    from learnrun.model_dir import summaries as summary

    summary.close_all()
    train = EventAccumulator(est.model_dir, size_guidance={"scalars": 0})
    train.Reload()
    tags = set(train.Tags()["scalars"])
    assert {"loss", "learning_rate", "global_step/sec"} <= tags
    assert [e.step for e in train.Scalars("loss")] == [1, 5, 9]
    evals = EventAccumulator(est.eval_dir(), size_guidance={"scalars": 0})
    evals.Reload()
    assert {"loss", "accuracy"} <= set(evals.Tags()["scalars"])
    assert evals.Scalars("loss")[0].step == 12


def test_bf16_mixed_precision_on_cpu(tmp_path):
    est = Estimator(make_model_fn(dropout=0.0), config=config(tmp_path, precision="bf16-mixed",
                                                              gradient_clip_norm=1.0))
    est.train(ShuffledBatches, steps=15)
    result = est.evaluate(eval_input_fn)
    assert np.isfinite(result["loss"]) and result["accuracy"] > 0.5


class StopAfter(SessionRunHook):
    def __init__(self, n):
        self.n, self.trace = n, []

    def begin(self):
        self.trace.append("begin")

    def after_create_session(self, session, coord=None):
        self.trace.append(("create", session.global_step))

    def after_run(self, run_context, run_values):
        if run_values.global_step >= self.n:
            run_context.request_stop()

    def end(self, session):
        self.trace.append(("end", session.global_step))


def test_hook_stop_and_early_stopping_state_saved(tmp_path):
    hook = StopAfter(4)
    est = Estimator(make_model_fn(), config=config(tmp_path))
    est.train(ShuffledBatches, hooks=[hook], steps=100)
    assert hook.trace == ["begin", ("create", 0), ("end", 4)]
    est.evaluate(eval_input_fn)
    early = stop_if_lower_hook(est, "loss", 100.0, run_every_secs=None, run_every_steps=1)
    est.train(ShuffledBatches, hooks=[early], steps=100)
    assert ckpt.checkpoint_step(est.latest_checkpoint()) == 5
    state = ckpt.load_checkpoint(est.latest_checkpoint()).state
    assert state["hooks"]["EarlyStoppingHook#0"] == {"stop_triggered": True}
    again = stop_if_lower_hook(est, "loss", -1.0, run_every_secs=None, run_every_steps=1)
    est.train(ShuffledBatches, hooks=[again], steps=100)  # restored state: stops at once
    assert ckpt.checkpoint_step(est.latest_checkpoint()) == 5


def test_evaluate_does_not_change_rng(tmp_path):
    est = Estimator(make_model_fn(), config=config(tmp_path))
    est.train(ShuffledBatches, steps=2)
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    est.evaluate(eval_input_fn)
    list(est.predict(eval_input_fn))
    assert torch.equal(torch.rand(3), expected)


def test_export_savedmodel_matches_predict(tmp_path):
    from learnrun import export

    est = Estimator(make_model_fn(), config=config(tmp_path))
    with pytest.raises(ValueError, match="serving_input_fn must be defined."):
        est.export_savedmodel(str(tmp_path / "exp"), None)
    with pytest.raises(NotFittedError):
        est.export_savedmodel(str(tmp_path / "exp"), lambda: X[:2])
    est.train(ShuffledBatches, steps=3)
    path = est.export_saved_model(str(tmp_path / "exp"), lambda: X[:2])
    assert os.path.basename(path).isdigit() and len(os.path.basename(path)) == 10
    loaded = export.load_export(path)(X[:6])
    expected = next(est.predict(lambda: [X[:6]], yield_single_examples=False))
    assert np.allclose(loaded["probabilities"].numpy(), expected["probabilities"], atol=1e-6)


class Boom(SessionRunHook):
    """Raises in ``where`` at global step 7; records whether ``end`` ran."""

    def __init__(self, where):
        self.where, self.ended = where, False

    def before_run(self, run_context):
        if self.where == "before_run" and run_context.session.global_step == 6:
            raise RuntimeError("boom before")

    def after_run(self, run_context, run_values):
        if self.where == "after_run" and run_values.global_step == 7:
            raise RuntimeError("boom after")

    def end(self, session):
        self.ended = True


@pytest.mark.parametrize("where", ["before_run", "after_run"])
def test_hook_exception_skips_end_and_keeps_last_checkpoint(tmp_path, where):
    """The documented trace: the exception propagates, no ``end``, no final save."""
    hook = Boom(where)
    est = Estimator(make_model_fn(), config=config(tmp_path, save_checkpoints_steps=5))
    with pytest.raises(RuntimeError, match="boom"):
        est.train(ShuffledBatches, hooks=[hook], steps=20)
    assert not hook.ended
    latest = est.latest_checkpoint()
    assert ckpt.checkpoint_step(latest) == 5
    assert ckpt.load_checkpoint(latest).state["global_step"] == 5
    est.train(ShuffledBatches, steps=2)  # resumes from it
    assert ckpt.checkpoint_step(est.latest_checkpoint()) == 7


class Tick(SessionRunHook):
    """Advances a FakeClock after every step, as real steps take time."""

    def __init__(self, clock, secs):
        self.clock, self.secs = clock, secs

    def after_run(self, run_context, run_values):
        self.clock.advance(self.secs)


def test_save_checkpoints_secs_timing_with_fake_clock(tmp_path):
    clock = FakeClock()
    est = Estimator(make_model_fn(), config=config(tmp_path, save_checkpoints_steps=None,
                                                   save_checkpoints_secs=5), clock=clock)
    est.train(ShuffledBatches, hooks=[Tick(clock, 2.0)], steps=12)  # 2 s per step
    assert [c.step for c in ckpt.list_checkpoints(est.model_dir)] == [0, 3, 6, 9, 12]


def test_both_save_settings_steps_win(tmp_path, caplog):
    clock = FakeClock()
    cfg = RunConfig(model_dir=str(tmp_path / "model"), save_checkpoints_steps=4,
                    save_checkpoints_secs=1)
    est = Estimator(make_model_fn(), config=cfg, clock=clock)
    with caplog.at_level("WARNING", logger="learnrun"):
        est.train(ShuffledBatches, hooks=[Tick(clock, 10.0)], steps=10)
    assert "save_checkpoints_steps wins" in caplog.text
    assert [c.step for c in ckpt.list_checkpoints(est.model_dir)] == [0, 4, 8, 10]


def test_keep_checkpoint_every_n_hours_uses_the_estimator_clock(tmp_path):
    clock = FakeClock(start=0.0)
    est = Estimator(make_model_fn(), clock=clock, config=config(
        tmp_path, save_checkpoints_steps=1, keep_checkpoint_max=2,
        keep_checkpoint_every_n_hours=1))
    est.train(ShuffledBatches, hooks=[Tick(clock, 2400.0)], steps=4)  # 40 minutes per step
    # ckpt-0 at t=0 and ckpt-1 at 40 min are dropped; ckpt-2 (80 min) is kept for good
    assert [c.step for c in ckpt.list_checkpoints(est.model_dir)] == [2, 3, 4]


class CountBatches(SessionRunHook):
    def __init__(self):
        self.n = 0

    def after_run(self, run_context, run_values):
        self.n += 1


def test_evaluate_steps_checkpoint_path_name_and_results(tmp_path):
    est = Estimator(make_model_fn(), config=config(tmp_path, save_checkpoints_steps=5))
    with pytest.raises(NotFittedError, match=f"Couldn't find trained model at {est.model_dir}"):
        est.evaluate(eval_input_fn)
    est.train(ShuffledBatches, steps=10)
    counter = CountBatches()
    many = lambda: [(X[i:i + 8], Y[i:i + 8]) for i in range(0, 96, 8)]  # noqa: E731
    est.evaluate(many, steps=3, hooks=[counter], name="val")
    assert counter.n == 3
    first = os.path.join(est.model_dir, "ckpt-5")
    assert est.evaluate(many, checkpoint_path=first, name="val")["global_step"] == 5
    assert os.path.isdir(os.path.join(est.model_dir, "eval_val"))
    assert not os.path.exists(os.path.join(est.model_dir, "eval"))
    with open(os.path.join(est.model_dir, "eval_val", "results.jsonl")) as f:
        records = [json.loads(line) for line in f.read().splitlines()]
    assert [(os.path.basename(r["checkpoint_path"]), r["global_step"]) for r in records] == [
        ("ckpt-10", 10), ("ckpt-5", 5)]
    with pytest.raises(ValueError, match="Must specify steps > 0, given: 0"):
        est.evaluate(many, steps=0)


def test_warm_start_from_checkpoint_path_and_shape_mismatch(tmp_path):
    src = Estimator(make_model_fn(), config=config(tmp_path / "src", save_checkpoints_steps=2))
    src.train(ShuffledBatches, steps=4)
    first = os.path.join(src.model_dir, "ckpt-2")
    dst = Estimator(make_model_fn(lr=1e-12), config=config(tmp_path / "dst", tf_random_seed=99),
                    warm_start_from=WarmStartSettings(first, ["0\\.bias", "3\\..*"]))
    dst.train(ShuffledBatches, steps=1)
    old = ckpt.load_checkpoint(first).weights
    assert np.allclose(dst.get_variable_value("3.weight"), old["3.weight"].numpy(), atol=1e-6)
    assert not np.allclose(dst.get_variable_value("0.weight"), old["0.weight"].numpy(), atol=1e-3)

    def wider(params):
        module = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(),
                                     torch.nn.Dropout(0.0), torch.nn.Linear(32, 2))
        return EstimatorSpec(module=module, loss_fn=torch.nn.functional.cross_entropy,
                             optimizer=torch.optim.SGD(module.parameters(), lr=0.1))

    with pytest.raises(CheckpointError, match=r"0.bias has shape \(16,\), the model's is \(32,\)\. "
                                              "Leave it out of WarmStartSettings.vars_to_warm"):
        Estimator(wider, config=config(tmp_path / "w"), warm_start_from=src.model_dir).train(
            ShuffledBatches, steps=1)


def test_bad_input_sweep(tmp_path):
    est = Estimator(make_model_fn(), config=config(tmp_path))
    with pytest.raises(RuntimeError, match=r"train step 1: .*received Tensor\(dtype=torch.float64, "
                                           r"shape=\(8, 4\)\)"):
        est.train(lambda: [(X[:8].double(), Y[:8])], steps=1)
    with pytest.raises(RuntimeError, match=r"train step 1: .*shape=\(8, 5\)"):
        est.train(lambda: [(torch.zeros(8, 5), Y[:8])], steps=1)
    with pytest.raises(ValueError, match="pair, got tuple of length 3"):
        est.train(lambda: [(X[:8], Y[:8], Y[:8])], steps=1)
    with pytest.raises(ValueError, match="Must specify steps > 0, given: -1"):
        est.train(ShuffledBatches, steps=-1)
    with pytest.raises(ValueError, match="Must specify max_steps > 0, given: 0"):
        est.train(ShuffledBatches, max_steps=0)
    with pytest.raises(TypeError, match="input_fn must return an iterable"):
        est.train(lambda: 3, steps=1)
    est.train(ShuffledBatches, steps=2)
    with pytest.raises(RuntimeError, match=r"evaluate \(checkpoint step 2\): .*shape=\(4, 3\)"):
        est.evaluate(lambda: [(torch.zeros(4, 3), Y[:4])])
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match="is an existing file, not a directory"):
        Estimator(make_model_fn(), model_dir=str(tmp_path / "a_file"))
