"""Unit tests of the training hooks, with a fake session and a FakeClock (no sleeps)."""

from __future__ import annotations

import io
import logging
import signal

import pytest
import torch

from learnrun.clock import FakeClock
from learnrun.errors import NanLossDuringTrainingError
from learnrun.estimator.preemption import (
    PreemptionGuard,
    ProtectedWorkerInit,
    protect_dataloader,
    worker_init_fn,
)
from learnrun.hooks import (
    CheckpointSaverHook,
    CheckpointSaverListener,
    EarlyStoppingHook,
    GlobalStepWaiterHook,
    LoggingTensorHook,
    NanTensorHook,
    RunContext,
    RunValues,
    SecondOrStepTimer,
    SessionRunHook,
    StepCounterHook,
    StopAtStepHook,
    ValidationMonitor,
    read_eval_metrics,
    stop_if_higher_hook,
    stop_if_lower_hook,
    stop_if_no_decrease_hook,
    stop_if_no_increase_hook,
)
from learnrun.hooks.progress import ProgressHook
from learnrun.model_dir import eval_results
from learnrun.model_dir import summaries as summary


class FakeSession:
    def __init__(self, model_dir="unused", global_step=0, is_chief=True, estimator=None):
        self.model_dir = str(model_dir)
        self.global_step = global_step
        self.is_chief = is_chief
        self.estimator = estimator
        self.last_step = None
        self.optimizer = None
        self.stop_requested = False
        self.saved: list[int] = []
        self.shared = global_step
        self.last_checkpoint_path = None

    def request_stop(self):
        self.stop_requested = True

    def shared_global_step(self):
        return self.shared

    def checkpoint_step(self, directory):
        return self.saved[-1] if self.saved else None

    def write_checkpoint(self, directory):
        self.saved.append(self.global_step)
        self.last_checkpoint_path = f"{directory}/ckpt-{self.global_step}"
        return self.last_checkpoint_path


def run_steps(hooks, session, n, loss=1.0):
    """Drive hooks through the documented trace for ``n`` steps; return steps actually run."""
    for hook in hooks:
        hook.begin()
    for hook in hooks:
        hook.after_create_session(session, None)
    ran = 0
    while ran < n and not session.stop_requested:
        ctx = RunContext(session)
        for hook in hooks:
            hook.before_run(ctx)
        session.global_step += 1
        ran += 1
        values = RunValues({"loss": torch.tensor(loss)}, session.global_step)
        for hook in hooks:
            hook.after_run(ctx, values)
    for hook in hooks:
        hook.end(session)
    return ran


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
    with pytest.raises(NanLossDuringTrainingError, match="between steps 1 and 3"):
        run_steps([NanTensorHook(every_n_iter=3)], session, 5, loss=float("nan"))
    with pytest.raises(ValueError, match="every_n_iter must be > 0"):
        NanTensorHook(every_n_iter=0)


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


def test_hooks_module_reexports_every_hook_name():
    import learnrun.hooks as facade
    import learnrun.hooks.base as base
    import learnrun.hooks.basic as basic
    import learnrun.hooks.early_stopping as early_stopping
    import learnrun.hooks.saver as saver
    import learnrun.hooks.validation as validation

    modules = (base, basic, early_stopping, saver, validation)
    for module in modules:
        for name in module.__all__:
            assert getattr(facade, name) is getattr(module, name), name
    assert set(facade.__all__) == set().union(*(m.__all__ for m in modules))
    assert facade.ValidationMonitor is ValidationMonitor


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


def test_progress_hook_plain_log_lines(caplog):
    hook = ProgressHook(every_n_iter=2, use_bar=False, clock=FakeClock())
    with caplog.at_level(logging.INFO, logger="learnrun"):
        run_steps([hook], FakeSession(), 4, loss=0.25)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["loss = 0.25, step = 1", "loss = 0.25, step = 3 (0.000 sec)"]


def _write_evals(eval_dir, values):
    for step, value in values:
        eval_results.append_eval_result(str(eval_dir), {"global_step": step, "loss": value, "acc": -value})


class FakeEstimator:
    def __init__(self, model_dir):
        self.model_dir = str(model_dir)
        self.checkpoint = None
        self.evaluations = []

    def eval_dir(self, name=None):
        return eval_results.eval_dir(self.model_dir, name)

    def latest_checkpoint(self):
        return self.checkpoint

    def evaluate(self, input_fn, steps=None, hooks=None, checkpoint_path=None, name=None):
        self.evaluations.append(self.checkpoint)
        return {"loss": 1.0 / len(self.evaluations), "global_step": len(self.evaluations)}


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


def test_preemption_guard_sets_flag_and_restores_handlers():
    before_term = signal.getsignal(signal.SIGTERM)
    before_int = signal.getsignal(signal.SIGINT)
    with PreemptionGuard() as guard:
        signal.raise_signal(signal.SIGTERM)
        assert guard.triggered and guard.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before_term
    with PreemptionGuard() as guard:
        signal.raise_signal(signal.SIGINT)
        assert guard.triggered
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before_int


def test_worker_init_fn_ignores_sigterm():
    old = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        worker_init_fn(0)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGINT, old[1])


def test_progress_hook_bar_on_a_terminal_stream():
    import io

    stream = io.StringIO()
    hook = ProgressHook(every_n_iter=2, stream=stream, use_bar=True, clock=FakeClock())
    session = FakeSession()
    session.last_step = 4
    run_steps([hook], session, 4, loss=0.25)
    assert "4/4" in stream.getvalue() and "loss=0.25" in stream.getvalue()
    assert hook.lines == 2


class _Terminal(io.StringIO):
    def isatty(self):
        return True


class _TickingHook(SessionRunHook):
    """Advances the fake clock by 0.5 s per step, as a real step would take time."""

    def __init__(self, clock):
        self.clock = clock

    def after_run(self, run_context, run_values):
        self.clock.advance(0.5)


def test_progress_hook_chooses_bar_or_lines_from_isatty(caplog):
    terminal = _Terminal()
    session = FakeSession()
    session.last_step = 4
    with caplog.at_level(logging.INFO, logger="learnrun"):
        run_steps([ProgressHook(every_n_iter=2, stream=terminal, clock=FakeClock())], session, 4,
                  loss=0.5)
    assert "4/4" in terminal.getvalue() and "loss=0.5" in terminal.getvalue()
    assert not [r for r in caplog.records if r.getMessage().startswith("loss =")]

    caplog.clear()
    plain, clock = io.StringIO(), FakeClock()
    with caplog.at_level(logging.INFO, logger="learnrun"):
        run_steps([_TickingHook(clock), ProgressHook(every_n_iter=2, stream=plain, clock=clock)],
                  FakeSession(), 5, loss=0.5)
    assert plain.getvalue() == ""  # no bar on a log file
    assert [r.getMessage() for r in caplog.records] == [
        "loss = 0.5, step = 1", "loss = 0.5, step = 3 (1.000 sec)", "loss = 0.5, step = 5 (1.000 sec)"]


def _mark(worker_id):
    _mark.calls.append(worker_id)


_mark.calls = []


def test_protect_dataloader_wraps_only_multiprocess_loaders():
    data = [(torch.zeros(1), torch.zeros(1))] * 4
    assert not protect_dataloader(data)  # not a DataLoader
    single = torch.utils.data.DataLoader(data, num_workers=0)
    assert not protect_dataloader(single) and single.worker_init_fn is None
    loader = torch.utils.data.DataLoader(data, num_workers=2)
    assert protect_dataloader(loader) and isinstance(loader.worker_init_fn, ProtectedWorkerInit)
    assert not protect_dataloader(loader)  # idempotent: no double wrapping
    assert not protect_dataloader(torch.utils.data.DataLoader(data, num_workers=2,
                                                              worker_init_fn=worker_init_fn))
    custom = torch.utils.data.DataLoader(data, num_workers=2, worker_init_fn=_mark)
    assert protect_dataloader(custom)
    old = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        custom.worker_init_fn(1)  # what a worker runs first
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN and _mark.calls == [1]
    finally:
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGINT, old[1])
