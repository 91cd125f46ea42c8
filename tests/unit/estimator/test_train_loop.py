"""The training loop's per-step path: hooks marked ``skips_idle_steps`` are not called below
their ``idle_until_step`` while the standard hooks still act at exactly their steps (the
checkpoint saver among them), the loop's own check of the kept losses runs every
``log_step_count_steps``, and a forward error names the step
and the features."""

from __future__ import annotations

import torch

from learnrun.config.run_config import RunConfig
from learnrun.estimator.estimator import Estimator
from learnrun.estimator.spec import EstimatorSpec
from learnrun.estimator.train_loop import skips_idle
from learnrun.hooks import (
    CheckpointSaverHook,
    SessionRunHook,
    StepCounterHook,
    StopAtStepHook,
    skips_idle_steps,
)
from learnrun.hooks.progress import ProgressHook
from tests.helpers.data import linear_regression_model_fn, sum_batches


class EveryFifth(SessionRunHook):
    def __init__(self) -> None:
        self.calls: list[int] = []

    @skips_idle_steps
    def after_run(self, run_context, run_values):
        self.calls.append(run_values.global_step)
        self.idle_until_step = run_values.global_step + 5 - run_values.global_step % 5


class EveryStepSubclass(EveryFifth):
    def after_run(self, run_context, run_values):  # not marked: called at every step
        super().after_run(run_context, run_values)


def _train(tmp_path, hooks, steps=12, **config):
    est = Estimator(linear_regression_model_fn,
                    config=RunConfig(model_dir=str(tmp_path), device="cpu", **config))
    est.train(lambda: sum_batches(50), steps=steps, hooks=hooks)


def test_marked_hooks_are_skipped_until_their_step_unmarked_overrides_are_not(tmp_path):
    fifth, every = EveryFifth(), EveryStepSubclass()
    _train(tmp_path, [fifth, every])
    assert fifth.calls == [1, 5, 10]
    assert every.calls == list(range(1, 13))


def test_which_hooks_may_be_skipped():
    assert skips_idle(EveryFifth()) and skips_idle(StopAtStepHook(num_steps=3))
    assert skips_idle(StepCounterHook()) and skips_idle(ProgressHook())
    assert not skips_idle(EveryStepSubclass())
    patched = EveryFifth()
    patched.after_run = lambda ctx, values: None  # an instance override is called every step
    assert not skips_idle(patched)


def test_standard_hooks_still_act_at_their_steps_and_stop_exactly(tmp_path):
    import pytest

    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    from learnrun.model_dir import summaries

    class Counter(StepCounterHook):
        pass  # inherits the marked after_run

    _train(tmp_path, [Counter(every_n_steps=4)], steps=13, log_step_count_steps=None,
           save_summary_steps=0)
    summaries.close_all()
    events = accumulator.EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    events.Reload()
    # triggered at 1 (no rate yet), then every 4 steps: a rate at 5, 9 and 13
    assert [e.step for e in events.Scalars("global_step/sec")] == [5, 9, 13]
    assert Estimator(lambda: None, model_dir=str(tmp_path)).latest_checkpoint().endswith("ckpt-13")


def test_a_forward_error_names_the_step_and_the_features(tmp_path):
    import pytest

    def model_fn():
        module = torch.nn.Linear(3, 1)  # the batches have 2 features
        return EstimatorSpec(module=module, loss_fn=torch.nn.functional.mse_loss,
                             optimizer=torch.optim.SGD(module.parameters(), lr=0.1))

    batches = [(torch.ones(4, 2), torch.zeros(4, 1))] * 3
    est = Estimator(model_fn, config=RunConfig(model_dir=str(tmp_path), device="cpu"))
    with pytest.raises(RuntimeError, match=r"train step 1: the model failed on the features of "
                                           r"this batch, received Tensor\(dtype=torch.float32, "
                                           r"shape=\(4, 2\)\)") as info:
        est.train(lambda: batches, steps=3)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_hooks_on_seconds_idle_by_time_hooks_on_steps_by_step(tmp_path):
    import math

    from learnrun.clock import FakeClock

    clock = FakeClock()
    on_seconds = StepCounterHook(every_n_steps=None, every_n_secs=3600, clock=clock)
    on_steps = StepCounterHook(every_n_steps=5, clock=clock)
    _train(tmp_path, [Tick(clock, 1000), on_seconds, on_steps], steps=7)
    # triggered at step 1 (3600 s after is 4600 s), then at step 5 (5000 s)
    assert on_seconds.idle_until_step == 0 and on_seconds.idle_until_time == clock.monotonic() - 2000 + 3600
    assert on_steps.idle_until_step == 11 and on_steps.idle_until_time == -math.inf  # 1 and 6


class CountingSaver(CheckpointSaverHook):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[int] = []

    @skips_idle_steps
    def after_run(self, run_context, run_values):
        self.calls.append(run_values.global_step)
        super().after_run(run_context, run_values)


def test_a_saver_on_steps_is_called_at_its_steps_only(tmp_path):
    assert skips_idle(CheckpointSaverHook(str(tmp_path), save_steps=5))
    saver = CountingSaver(str(tmp_path), save_steps=5)
    _train(tmp_path, [saver], steps=12)
    assert saver.calls == [5, 10]
    assert saver.idle_until_step == 15
    assert Estimator(lambda: None, model_dir=str(tmp_path)).latest_checkpoint().endswith("ckpt-12")


class Tick(SessionRunHook):
    """Each step takes ``secs`` of ``clock``'s time."""

    def __init__(self, clock, secs) -> None:
        self.clock, self.secs = clock, secs

    def after_run(self, run_context, run_values):
        self.clock.advance(self.secs)


def test_a_saver_on_seconds_is_called_when_its_time_has_come(tmp_path):
    from learnrun.clock import FakeClock

    clock = FakeClock()
    saver = CountingSaver(str(tmp_path), save_secs=3600, clock=clock)
    _train(tmp_path, [Tick(clock, 1000), saver], steps=9)
    assert saver.calls == [4, 8]  # 4000 s and 8000 s: saved there, idle in between
    assert saver.idle_until_step == 0 and saver.idle_until_time == clock.monotonic() - 1000 + 3600
    assert saver.idle_clock is clock
    saved = sorted(int(p.name.split("-")[1]) for p in tmp_path.glob("ckpt-*"))
    assert saved == [0, 4, 8, 9]


def test_an_asynchronous_save_is_looked_for_at_the_next_step(tmp_path):
    saver = CountingSaver(str(tmp_path), save_steps=5)
    _train(tmp_path, [saver], steps=12, async_checkpoint=True)
    # saved (in the background) at 0, 5 and 10: the step after each save looks for its commit
    assert {1, 5, 6, 10, 11} <= set(saver.calls)
    assert Estimator(lambda: None, model_dir=str(tmp_path)).latest_checkpoint().endswith("ckpt-12")


def test_the_loop_checks_the_kept_losses_every_log_step_count_steps(tmp_path, caplog):
    import logging

    class Seen(SessionRunHook):
        def __init__(self) -> None:
            self.steps: list[int] = []

        def after_run(self, run_context, run_values):
            self.steps.append(run_values.global_step)

    def batches():
        for i in range(50):
            x = torch.ones(8, 4)
            if i == 2:  # the loss of step 3 is NaN
                x[0, 0] = float("nan")
            yield x, x.sum(1, keepdim=True)

    seen = Seen()
    est = Estimator(linear_regression_model_fn,
                    config=RunConfig(model_dir=str(tmp_path), device="cpu", log_step_count_steps=4,
                                     on_nan_loss="stop"))
    with caplog.at_level(logging.ERROR, logger="learnrun"):
        est.train(batches, steps=20, hooks=[seen])
    assert seen.steps == [1, 2, 3, 4]  # checked together at step 4, then stopped
    assert "NaN loss during training (loss was NaN or infinite at step 3)." in caplog.text
    assert est.latest_checkpoint().endswith("ckpt-0")  # no weights of a NaN loss were saved


class CountedReads(EveryFifth):
    """EveryFifth whose idle_until_step counts how often it is read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    @property
    def idle_until_step(self) -> int:
        self.reads += 1
        return SessionRunHook.idle_until_step.__get__(self)

    @idle_until_step.setter
    def idle_until_step(self, step: int) -> None:
        SessionRunHook.idle_until_step.__set__(self, step)


def test_the_loop_reads_an_idle_hooks_state_only_after_a_change(tmp_path):
    counted = CountedReads()
    _train(tmp_path, [counted], steps=40, log_step_count_steps=None, save_summary_steps=0)
    assert counted.calls == [1, 5, 10, 15, 20, 25, 30, 35, 40]
    # read after each of its 9 calls changed it (and at its due steps), not at each of 40 steps
    assert counted.reads <= 2 * len(counted.calls), counted.reads


def test_a_busy_hook_that_wakes_an_idle_one_has_it_called_at_the_same_step(tmp_path):
    fifth = EveryFifth()

    class Wake(SessionRunHook):  # busy: called at every step, before fifth
        def after_run(self, run_context, run_values):
            if run_values.global_step == 7:
                fifth.idle_until_step = 0

    _train(tmp_path, [Wake(), fifth], steps=12)
    assert fifth.calls == [1, 5, 7, 10]


def test_idle_hooks_on_different_clocks_are_each_called_when_due(tmp_path):
    from learnrun.clock import FakeClock

    first, second = FakeClock(), FakeClock()
    on_first = CountingSaver(str(tmp_path / "a"), save_secs=2500, clock=first)
    on_second = CountingSaver(str(tmp_path / "b"), save_secs=2500, clock=second)
    _train(tmp_path, [Tick(first, 1000), Tick(second, 600), on_first, on_second], steps=9)
    assert on_first.calls == [3, 6, 9]  # every 3000 s of the first clock
    assert on_second.calls == [5]  # 3000 s of the second clock at step 5, 5400 s at step 9: no
