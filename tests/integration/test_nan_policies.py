"""RunConfig(on_nan_loss=...): raise, stop and rollback on a loss that goes NaN at a chosen batch."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from learnrun.config.run_config import RunConfig
from learnrun.errors import NanLossDuringTrainingError
from learnrun.estimator.estimator import Estimator
from learnrun.estimator.spec import EstimatorSpec
from learnrun.model_dir import checkpoints as ckpt

NUM_BATCHES = 64


class Batches:
    """Batch ``i`` of a fixed sequence; batches in ``bad`` hold a NaN feature (NaN loss)."""

    def __init__(self, bad=(), drop=()):
        self.bad, self.drop, self.pos = set(bad), set(drop), 0

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, state):
        self.pos = state["pos"]

    def __iter__(self):
        while self.pos < NUM_BATCHES:
            i, self.pos = self.pos, self.pos + 1
            if i in self.drop:
                continue
            g = torch.Generator().manual_seed(i)
            x = torch.randn(8, 4, generator=g)
            y = (x.sum(1) > 0).long()
            if i in self.bad:
                x[0, 0] = float("nan")
            yield x, y


def model_fn(params, config):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    return EstimatorSpec(module=module, optimizer=optimizer,
                         loss_fn=lambda out, y: torch.nn.functional.cross_entropy(out, y))


def estimator(path, **kw):
    kw.setdefault("save_checkpoints_steps", 5)
    return Estimator(model_fn, config=RunConfig(model_dir=str(path), device="cpu",
                                                log_step_count_steps=None, **kw))


def weights(est):
    return {n: est.get_variable_value(n) for n in est.get_variable_names()}


def test_raise_is_the_default(tmp_path):
    est = estimator(tmp_path / "m")
    with pytest.raises(NanLossDuringTrainingError, match="at step 13"):
        est.train(lambda: Batches(bad={12}), max_steps=20)
    assert ckpt.checkpoint_step(est.latest_checkpoint()) == 10


def test_stop_keeps_the_last_good_checkpoint(tmp_path, caplog):
    est = estimator(tmp_path / "m", on_nan_loss="stop")
    with caplog.at_level(logging.WARNING):
        est.train(lambda: Batches(bad={12}), max_steps=20)
    assert [ckpt.checkpoint_step(c.path) for c in ckpt.list_checkpoints(est.model_dir)] == [0, 5, 10]
    assert "on_nan_loss='stop'" in caplog.text
    assert all(np.isfinite(v).all() for v in weights(est).values())


@pytest.mark.parametrize("bad", [12, 18])
def test_rollback_skips_exactly_the_batches_since_the_checkpoint(tmp_path, caplog, bad):
    """The losses are checked before each save (every 5 steps here): the NaN of batch ``bad``
    is found at the next save, which is skipped; training rolls back to the checkpoint before
    it and skips every batch consumed since (5), the NaN one included. With bad=18 the NaN is
    found at the last step's save, after max_steps asked to stop: training still goes on to
    step 20 from the rolled-back checkpoint."""
    est = estimator(tmp_path / "m", on_nan_loss="rollback")
    with caplog.at_level(logging.WARNING):
        est.train(lambda: Batches(bad={bad}), max_steps=20)
    assert ckpt.checkpoint_step(est.latest_checkpoint()) == 20
    start = bad // 5 * 5
    assert f"at step {bad + 1})" in caplog.text
    assert f"ckpt-{start} (step {start}), skipping the 5 batch(es)" in caplog.text
    # the same as a run that never saw the 5 batches from the checkpoint on
    ref = estimator(tmp_path / "ref")
    ref.train(lambda: Batches(drop=set(range(start, start + 5))), max_steps=20)
    got, want = weights(est), weights(ref)
    for name in want:
        assert np.isfinite(got[name]).all()
        assert np.array_equal(got[name], want[name]), name
    assert ckpt.load_checkpoint(est.latest_checkpoint()).state["nan_rollbacks"] == 1
    events = list((tmp_path / "m").glob("events.out.tfevents.*"))
    assert events and any(b"nan_rollbacks" in p.read_bytes() for p in events)


def test_a_nan_in_the_last_unchecked_steps_is_found_before_the_final_save(tmp_path):
    est = estimator(tmp_path / "m", save_checkpoints_steps=100)
    with pytest.raises(NanLossDuringTrainingError, match="at step 19"):
        est.train(lambda: Batches(bad={18}), max_steps=20)
    assert ckpt.checkpoint_step(est.latest_checkpoint()) == 0


def test_rollback_gives_up_after_max_nan_rollbacks(tmp_path):
    est = estimator(tmp_path / "m", on_nan_loss="rollback", max_nan_rollbacks=1)
    with pytest.raises(NanLossDuringTrainingError, match="rolled back 1 time"):
        est.train(lambda: Batches(bad={12, 17}), max_steps=30)


def test_rollback_without_a_checkpoint_raises(tmp_path):
    est = estimator(tmp_path / "m", on_nan_loss="rollback", save_checkpoints_steps=None,
                    save_checkpoints_secs=None)
    with pytest.raises(NanLossDuringTrainingError, match="no checkpoint"):
        est.train(lambda: Batches(bad={3}), max_steps=10)


def test_config_validation():
    with pytest.raises(ValueError, match="on_nan_loss should be one of"):
        RunConfig(on_nan_loss="skip")
    with pytest.raises(ValueError, match="max_nan_rollbacks"):
        RunConfig(max_nan_rollbacks=-1)
    with pytest.raises(TypeError):
        RunConfig(None, 0, False, 1, None, 100, 600, None, 5, 10000, 100, None, "", None, None,
                  7200, "rollback")
