"""Unit tests of learnrun.hooks.basic (stop, NaN, logging, step counter, step waiter), with a fake session and a FakeClock (no sleeps)."""

from __future__ import annotations

import logging

import pytest
import torch

from learnrun.clock import FakeClock
from learnrun.errors import NanLossDuringTrainingError
from learnrun.hooks import (
    GlobalStepWaiterHook,
    LoggingTensorHook,
    NanTensorHook,
    RunContext,
    RunValues,
    StepCounterHook,
    StopAtStepHook,
)
from learnrun.model_dir import summaries as summary
from tests.helpers.hooks import FakeSession, run_steps


def test_stop_at_step_validation_and_semantics():
    with pytest.raises(ValueError, match="One of num_steps or last_step must be specified"):
        StopAtStepHook()
    with pytest.raises(ValueError, match="Only one of num_steps or last_step"):
        StopAtStepHook(num_steps=1, last_step=2)
    session = FakeSession(global_step=10)
    assert run_steps([StopAtStepHook(num_steps=3)], session, 100) == 3
    assert session.global_step == 13
    session = FakeSession(global_step=10)
    assert run_steps([StopAtStepHook(last_step=12)], session, 100) == 2
    session = FakeSession(global_step=20)
    assert run_steps([StopAtStepHook(last_step=12)], session, 100) == 0


def test_nan_hook_raises_by_default():
    session = FakeSession()
    with pytest.raises(NanLossDuringTrainingError, match="NaN loss during training"):
        run_steps([NanTensorHook()], session, 5, loss=float("nan"))
    assert session.global_step == 1


def test_nan_hook_can_request_stop_and_check_every_n(caplog):
    session = FakeSession()
    assert run_steps([NanTensorHook(fail_on_nan_loss=False)], session, 5, loss=float("inf")) == 1
    assert session.stop_requested
    session = FakeSession()
    with pytest.raises(NanLossDuringTrainingError, match="at step 1[)]"):  # checked at step 3
        run_steps([NanTensorHook(every_n_iter=3)], session, 5, loss=float("nan"))
    assert session.global_step == 3
    with pytest.raises(ValueError, match="every_n_iter must be > 0"):
        NanTensorHook(every_n_iter=0)


@pytest.mark.parametrize("losses, want", [
    ([1.0, 2.0, 3.0], None),
    ([1.0, float("inf"), float("nan")], 2),
    ([torch.tensor(1.0), torch.tensor(float("nan")), torch.tensor(2.0)], 2),
    ([torch.tensor(1.0), torch.tensor([1.0, float("-inf")])], 2),  # not scalar: one by one
    ([torch.tensor(float("nan"))], 1),
    ([torch.tensor(1.0), torch.tensor(complex(float("nan"), 0.0))], 2),  # complex: isfinite
    ([torch.tensor(1), torch.tensor(True), 2.5, float("-inf")], 4),  # ints, bools, floats
])
def test_nan_hook_reports_the_step_of_the_first_bad_loss_among_those_kept(losses, want):
    hook = NanTensorHook(every_n_iter=10, on_nan=lambda message: reported.append(message))
    reported: list[str] = []
    session = FakeSession()
    for step, loss in enumerate(losses, start=1):
        hook.after_run(RunContext(session), RunValues({"loss": loss}, step))
    assert reported == []  # nothing checked before the 10th step or a flush
    hook.flush(session)
    hook.flush(session)  # nothing kept any more: no second report
    assert reported == ([] if want is None else [
        f"NaN loss during training (loss was NaN or infinite at step {want})."])


def test_first_non_finite_reads_every_kept_loss():
    from learnrun.hooks.basic import first_non_finite, nan_loss_message

    kept = [(step, torch.tensor(float(step))) for step in range(1, 1025)]
    assert first_non_finite(kept) is None
    assert first_non_finite([]) is None
    kept[699] = (700, torch.tensor(float("inf")))
    kept[900] = (901, torch.tensor(float("nan")))
    assert first_non_finite(kept) == 700
    assert nan_loss_message("loss", 700) == "NaN loss during training (loss was NaN or infinite at step 700)."


def test_first_non_finite_of_float_values():
    """The loop keeps CPU losses as floats, checked through their sum: an infinity and a NaN
    are found, and so are an inf and a -inf that cancel into a NaN; finite values whose sum
    overflows are not reported; a tensor among them still counts."""
    from learnrun.hooks.basic import first_non_finite

    kept = [(step, float(step)) for step in range(1, 101)]
    assert first_non_finite(kept) is None
    assert first_non_finite(kept[:50] + [(51, float("nan"))] + kept[51:]) == 51
    assert first_non_finite([(1, 0.5), (2, float("inf")), (3, -float("inf"))]) == 2
    assert first_non_finite([(1, 1e308), (2, 1e308), (3, 1.0)]) is None
    assert first_non_finite([(1, 0.5), (2, torch.tensor(float("nan")))]) == 2
    assert first_non_finite([(1, 0.5), (2, torch.ones(3))]) is None


def test_global_step_waiter_polls_through_clock():
    session = FakeSession()

    def advance(_):
        session.shared += 100

    clock = FakeClock(on_sleep=advance)
    hook = GlobalStepWaiterHook(wait_until_step=250, clock=clock)
    run_steps([hook], session, 2)
    assert clock.sleeps == [0.5, 0.5, 0.5]
    stuck = GlobalStepWaiterHook(wait_until_step=10, clock=FakeClock(), timeout_secs=3)
    with pytest.raises(TimeoutError, match="global step 10"):
        run_steps([stuck], FakeSession(), 1)
    zero = FakeClock()
    run_steps([GlobalStepWaiterHook(0, clock=zero)], FakeSession(), 1)
    assert zero.sleeps == []


def test_step_counter_writes_rate(tmp_path):
    clock = FakeClock()
    session = FakeSession(model_dir=tmp_path)

    class Tick(StopAtStepHook):
        def after_run(self, run_context, run_values):
            clock.advance(0.5)

    hook = StepCounterHook(every_n_steps=4, clock=clock)
    run_steps([Tick(num_steps=100), hook], session, 9)
    assert hook.last_rate == pytest.approx(2.0)
    summary.close_all()
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())


def test_logging_tensor_hook_format(caplog):
    clock = FakeClock()
    hook = LoggingTensorHook(["loss", "global_step"], every_n_iter=2, clock=clock)
    with caplog.at_level(logging.INFO, logger="learnrun"):
        run_steps([hook], FakeSession(), 5, loss=0.5)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["loss = 0.5, global_step = 1", "loss = 0.5, global_step = 3 (0.000 sec)",
                     "loss = 0.5, global_step = 5 (0.000 sec)"]
    with pytest.raises(ValueError, match="every_n_iter"):
        LoggingTensorHook(["loss"])
