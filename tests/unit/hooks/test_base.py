"""Unit tests of learnrun.hooks.base: SecondOrStepTimer on a FakeClock."""

from __future__ import annotations

import pytest

from learnrun.clock import FakeClock
from learnrun.hooks import SecondOrStepTimer


def test_second_or_step_timer():
    with pytest.raises(ValueError, match="Either every_steps or every_secs"):
        SecondOrStepTimer()
    with pytest.raises(ValueError, match="Can not provide both"):
        SecondOrStepTimer(every_secs=1, every_steps=1)
    clock = FakeClock()
    timer = SecondOrStepTimer(every_secs=10, clock=clock)
    assert timer.should_trigger_for_step(1)
    assert timer.update_last_triggered_step(1) == (None, None)
    clock.advance(9)
    assert not timer.should_trigger_for_step(2)
    clock.advance(1)
    assert timer.should_trigger_for_step(3)
    assert timer.update_last_triggered_step(3) == (10.0, 2)
    assert not timer.should_trigger_for_step(3)


def test_next_step_is_the_first_step_that_can_trigger():
    steps = SecondOrStepTimer(every_steps=100)
    assert steps.next_step == 0  # never triggered: any step triggers
    steps.update_last_triggered_step(1)
    assert steps.next_step == 101
    assert not any(steps.should_trigger_for_step(s) for s in range(1, 101))
    assert steps.should_trigger_for_step(101)
    assert not steps.should_trigger_for_step(50)  # after a rollback to 50: still not due
    clock = FakeClock()
    secs = SecondOrStepTimer(every_secs=5, clock=clock)
    secs.update_last_triggered_step(7)
    assert secs.next_step == 0  # time decides, at any other step, also an earlier one
    clock.advance(5)
    assert not secs.should_trigger_for_step(7)
    assert secs.should_trigger_for_step(8) and secs.should_trigger_for_step(3)
    secs.reset()
    assert secs.next_step == 0


def test_skips_idle_steps_refuses_what_is_not_a_method():
    from learnrun.hooks import skips_idle_steps

    with pytest.raises(TypeError, match=r"skips_idle_steps decorates a hook's after_run method, got int: 5"):
        skips_idle_steps(5)


def test_idle_until_due_follows_the_timer_and_refuses_anything_else():
    import math

    from learnrun.hooks import SessionRunHook

    clock = FakeClock()
    hook, timer = SessionRunHook(), SecondOrStepTimer(every_secs=5, clock=clock)
    hook.idle_until_due(timer)
    assert (hook.idle_until_step, hook.idle_until_time, hook.idle_clock) == (0, -math.inf, clock)
    timer.update_last_triggered_step(3)
    hook.idle_until_due(timer)
    assert (hook.idle_until_step, hook.idle_until_time) == (0, clock.monotonic() + 5)
    with pytest.raises(TypeError, match=r"idle_until_due takes the hook's SecondOrStepTimer, got int: 7\. "
                                        r"Set idle_until_step"):
        hook.idle_until_due(7)
