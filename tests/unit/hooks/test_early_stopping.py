"""Unit tests of learnrun.hooks.early_stopping: the stop_if_* hooks over results.jsonl, EarlyStoppingHook."""

from __future__ import annotations

import pytest

from learnrun.clock import FakeClock
from learnrun.hooks import (
    EarlyStoppingHook,
    StopAtStepHook,
    read_eval_metrics,
    stop_if_higher_hook,
    stop_if_lower_hook,
    stop_if_no_decrease_hook,
    stop_if_no_increase_hook,
)
from learnrun.model_dir import eval_results
from tests.helpers.hooks import FakeEstimator, FakeSession, run_steps


def _write_evals(eval_dir, values):
    for step, value in values:
        eval_results.append_eval_result(str(eval_dir), {"global_step": step, "loss": value, "acc": -value})


def test_read_eval_metrics_sorted_by_step(tmp_path):
    _write_evals(tmp_path, [(20, 1.0), (10, 2.0), (20, 0.5)])
    assert list(read_eval_metrics(str(tmp_path))) == [10, 20]
    assert read_eval_metrics(str(tmp_path))[20]["loss"] == 0.5


def test_stop_if_no_decrease(tmp_path):
    est = FakeEstimator(tmp_path)
    _write_evals(est.eval_dir(), [(10, 1.0), (20, 0.8), (30, 0.9), (40, 0.85)])
    hook = stop_if_no_decrease_hook(est, "loss", 30, run_every_secs=None, run_every_steps=1)
    session = FakeSession()
    run_steps([hook], session, 3)
    assert not session.stop_requested  # 40 - 20 = 20 < 30
    _write_evals(est.eval_dir(), [(50, 0.81)])
    session = FakeSession()
    assert run_steps([hook], session, 3) == 1
    assert hook.state_dict() == {"stop_triggered": True}
    inc = stop_if_no_increase_hook(est, "acc", 30, run_every_secs=None, run_every_steps=1)
    assert run_steps([inc], FakeSession(), 3) == 1
    later = stop_if_no_decrease_hook(est, "loss", 30, min_steps=30, run_every_secs=None,
                                     run_every_steps=1)
    assert run_steps([later], FakeSession(), 3) == 3


def test_threshold_hooks_and_errors(tmp_path):
    est = FakeEstimator(tmp_path)
    _write_evals(est.eval_dir(), [(10, 1.0), (20, 0.4)])
    assert run_steps([stop_if_lower_hook(est, "loss", 0.5, run_every_secs=None,
                                         run_every_steps=1)], FakeSession(), 3) == 1
    assert run_steps([stop_if_higher_hook(est, "loss", 2.0, run_every_secs=None,
                                          run_every_steps=1)], FakeSession(), 3) == 3
    with pytest.raises(ValueError, match="Can not provide both every_steps and every_secs"):
        stop_if_lower_hook(est, "loss", 0.5, run_every_steps=1)
    missing = stop_if_higher_hook(est, "auc", 0.5, run_every_secs=None, run_every_steps=1)
    with pytest.raises(ValueError, match="'auc' is not in the evaluation"):
        run_steps([missing], FakeSession(), 1)


def test_early_stopping_secs_and_restored_state():
    clock = FakeClock()
    calls = []
    hook = EarlyStoppingHook(lambda: calls.append(1) or len(calls) >= 2, run_every_secs=60,
                             clock=clock)

    class Tick(StopAtStepHook):
        def after_run(self, run_context, run_values):
            clock.advance(25)

    assert run_steps([Tick(num_steps=100), hook], FakeSession(), 100) == 6  # checks at 75 s, 150 s
    restored = EarlyStoppingHook(lambda: False, run_every_secs=None, run_every_steps=1)
    restored.load_state_dict(hook.state_dict())
    assert run_steps([restored], FakeSession(), 5) == 0
