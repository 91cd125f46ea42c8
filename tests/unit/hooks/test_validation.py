"""Unit tests of learnrun.hooks.validation: ValidationMonitor's gates and early stopping."""

from __future__ import annotations

import pytest

from learnrun.clock import FakeClock
from learnrun.hooks import RunContext, RunValues, ValidationMonitor
from tests.helpers.hooks import FakeEstimator, FakeSession


def test_validation_monitor_gate_interval_and_once_per_checkpoint(tmp_path):
    est = FakeEstimator(tmp_path)
    clock = FakeClock()
    monitor = ValidationMonitor(input_fn=lambda: [], every_n_steps=2, check_interval_secs=5,
                                clock=clock)
    session = FakeSession(estimator=est)
    for hook in (monitor,):
        hook.begin()
        hook.after_create_session(session, None)

    def step(n, advance=10):
        clock.advance(advance)
        ctx = RunContext(session)
        monitor.after_run(ctx, RunValues({}, n))
        return ctx.stop_requested

    step(1)
    step(2)  # gate open, no checkpoint yet: skipped
    assert est.evaluations == []
    est.checkpoint = "ckpt-2"
    step(3)  # gate closed (3 < 2 + 2)
    step(4)
    assert est.evaluations == ["ckpt-2"]
    step(6)  # same checkpoint: skipped
    est.checkpoint = "ckpt-6"
    step(8, advance=1)  # gate open, but the previous check was only 1 s ago
    assert est.evaluations == ["ckpt-2"]
    step(10)
    assert est.evaluations == ["ckpt-2", "ckpt-6"]
    assert monitor.eval_results == {"loss": 0.5, "global_step": 2}
    with pytest.raises(ValueError, match="eval_metrics"):
        ValidationMonitor(input_fn=lambda: [], metrics={"a": 1})


def test_validation_monitor_last_step_and_early_stopping(tmp_path):
    est = FakeEstimator(tmp_path)
    monitor = ValidationMonitor(input_fn=lambda: [], every_n_steps=100, check_interval_secs=None,
                                early_stopping_rounds=1, early_stopping_metric="loss",
                                early_stopping_metric_minimize=False, clock=FakeClock())
    session = FakeSession(estimator=est)
    session.last_step = 3
    est.checkpoint = "a"
    ctx = RunContext(session)
    monitor.after_run(ctx, RunValues({}, 3))  # step == last_step opens the gate
    assert est.evaluations == ["a"] and not ctx.stop_requested
    est.checkpoint = "b"
    monitor.after_run(ctx, RunValues({}, 103))  # loss dropped from 1.0 to 0.5, maximising
    assert ctx.stop_requested and monitor.early_stopped and monitor.best_step == 3
