"""Unit tests of learnrun.hooks.saver: CheckpointSaverHook and its listeners, with a fake session."""

from __future__ import annotations

import pytest

from learnrun.clock import FakeClock
from learnrun.hooks import CheckpointSaverHook, CheckpointSaverListener, StopAtStepHook
from tests.helpers.hooks import FakeSession, run_steps


class RecordingListener(CheckpointSaverListener):
    def __init__(self, stop_at=None):
        self.events = []
        self.stop_at = stop_at

    def begin(self):
        self.events.append("begin")

    def before_save(self, session, step):
        self.events.append(("before", step))

    def after_save(self, session, step):
        self.events.append(("after", step))
        return step == self.stop_at

    def end(self, session, step):
        self.events.append(("end", step))


def test_checkpoint_saver_steps_and_listeners():
    with pytest.raises(ValueError, match="Exactly one of save_steps and save_secs"):
        CheckpointSaverHook("d")
    listener = RecordingListener()
    hook = CheckpointSaverHook("d", save_steps=3, listeners=[listener])
    session = FakeSession()
    run_steps([hook], session, 8)
    # TF 1.15: a save when the session is created, every 3 steps, then at the end
    assert session.saved == [0, 3, 6, 8]
    assert listener.events[0] == "begin" and listener.events[-1] == ("end", 8)
    assert [e[1] for e in listener.events if e[0] == "after"] == [0, 3, 6, 8]


def test_checkpoint_saver_rejects_listeners_of_the_wrong_type(tmp_path):
    with pytest.raises(TypeError, match="^listeners must be CheckpointSaverListener instances, got int: 3"):
        CheckpointSaverHook(str(tmp_path), save_steps=1, listeners=[CheckpointSaverListener(), 3])
    hook = CheckpointSaverHook(str(tmp_path), save_steps=1)
    with pytest.raises(TypeError, match="^saving_listeners must be CheckpointSaverListener .* str: 'x'"):
        hook.add_listeners(["x"])
    hook.add_listeners([CheckpointSaverListener()])
    hook.add_listeners(None)
    assert len(hook._listeners) == 1


def test_checkpoint_saver_listener_can_stop_and_secs_timer():
    listener = RecordingListener(stop_at=4)
    session = FakeSession()
    clock = FakeClock()

    class Tick(StopAtStepHook):
        def after_run(self, run_context, run_values):
            clock.advance(1)

    hook = CheckpointSaverHook("d", save_secs=2, listeners=[listener], clock=clock)
    run_steps([Tick(num_steps=100), hook], session, 100)
    assert session.saved == [0, 2, 4]
    assert session.global_step == 4
    with pytest.raises(TypeError, match="CheckpointSaverListener"):
        CheckpointSaverHook("d", save_steps=1, listeners=["nope"])


def test_checkpoint_saver_skips_existing_step_and_non_chief():
    session = FakeSession(global_step=5)
    session.saved = [5]
    listener = RecordingListener()
    run_steps([CheckpointSaverHook("d", save_steps=100, listeners=[listener])], session, 2)
    assert session.saved == [5, 7]  # the existing step-5 checkpoint is not rewritten
    assert ("after", 5) in listener.events
    worker = FakeSession(is_chief=False)
    run_steps([CheckpointSaverHook("d", save_steps=1)], worker, 3)
    assert worker.saved == []
