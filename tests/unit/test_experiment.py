"""Experiment: spec 8.2 (experiment_test) against a fake estimator and a FakeClock."""

from __future__ import annotations

import logging
import math

import pytest

import learnrun.hooks as hooks_module
import learnrun.hooks as public_hooks
from learnrun import experiment as experiment_module
from learnrun.experiment import Experiment
from tests.helpers.fakes import (
    ContribStyleEstimator,
    FakeEstimator,
    FakeExportStrategy,
    FakeHook,
    FakeRunConfig,
    fake_input_fn,
)


class RecordingHook:
    """Stands in for ValidationMonitor / CheckpointSaverHook: records its kwargs."""

    instances: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        type(self).instances.append(self)


@pytest.fixture
def validation_monitor(monkeypatch):
    class FakeValidationMonitor(RecordingHook):
        instances = []

    monkeypatch.setattr(experiment_module, "ValidationMonitor", FakeValidationMonitor)
    return FakeValidationMonitor


def make(estimator=None, clock=None, **kwargs):
    estimator = estimator or FakeEstimator()
    return Experiment(estimator, fake_input_fn, fake_input_fn, clock=clock, **kwargs)


# -- construction (8.2 #1, #18, #22, #28, #29) ------------------------------------------------
def test_eval_metrics_must_be_none_with_learnrun_estimator(monkeypatch):
    monkeypatch.setattr(experiment_module, "_is_learnrun_estimator", lambda est: True)
    with pytest.raises(ValueError, match="`eval_metrics` must be `None` with `learnrun.Estimator`"):
        make(eval_metrics={"a": "b"})


def test_eval_metrics_must_be_none_when_evaluate_takes_no_metrics():
    with pytest.raises(ValueError, match="`eval_metrics` must be `None`.*eval_metric_ops"):
        make(eval_metrics={"a": "b"})


def test_eval_metrics_passed_to_estimator_that_takes_them():
    est = ContribStyleEstimator()
    ex = make(est, eval_metrics={"a": "b"}, eval_delay_secs=0)
    assert ex.eval_metrics == {"a": "b"}
    ex.evaluate()
    assert est.eval_calls[0]["metrics"] == {"a": "b"}


def test_estimator_must_implement_protocol():
    class NoEvaluate:
        def train(self, input_fn):
            pass

    class NoTrain:
        def evaluate(self, input_fn):
            pass

    with pytest.raises(ValueError, match="`estimator` must implement `evaluate`.*NoEvaluate"):
        make(NoEvaluate())
    with pytest.raises(ValueError, match="`estimator` must implement `train`.*NoTrain"):
        make(NoTrain())


def test_saving_listeners_need_an_estimator_that_takes_them():
    class Old(FakeEstimator):
        def train(self, input_fn, hooks=None, steps=None, max_steps=None):  # type: ignore[override]
            return super().train(input_fn, hooks, steps, max_steps)

    with pytest.raises(ValueError, match="`saving_listeners` must be `None`"):
        make(Old(), saving_listeners=[object()])
    ex = make(Old(), train_steps=3)
    ex.train(delay_secs=0)  # no saving_listeners keyword is sent to it


@pytest.mark.parametrize("value", ["not_an_export_strategy", ["not_an_export_srategy"], 3])
def test_invalid_export_strategies(value):
    with pytest.raises(ValueError, match="`export_strategies` must be an ExportStrategy"):
        make(export_strategies=value)


def test_export_strategies_forms():
    s1, s2 = FakeExportStrategy("a"), FakeExportStrategy("b")
    assert make(export_strategies=s1).export_strategies == (s1,)
    assert make(export_strategies=[s1, s2]).export_strategies == (s1, s2)
    assert make(export_strategies=None).export_strategies == ()


def test_min_eval_frequency_defaults():
    assert make()._min_eval_frequency == 1
    assert make(min_eval_frequency=123).min_eval_frequency == 123
    assert make(min_eval_frequency=0).min_eval_frequency == 0


def test_invalid_predicate_fn():
    ex = make()
    with pytest.raises(ValueError, match="`continuous_eval_predicate_fn` must be a callable"):
        ex.continuous_eval(continuous_eval_predicate_fn="fn")
    with pytest.raises(ValueError, match="`continuous_eval_predicate_fn` must be a callable"):
        ex.continuous_train_and_eval(continuous_eval_predicate_fn="fn")


def test_invalid_train_steps_per_iteration():
    with pytest.raises(ValueError, match="`train_steps_per_iteration` must be an integer."):
        make(train_steps_per_iteration="123")


def test_invalid_clock():
    with pytest.raises(TypeError, match="`clock` must implement learnrun.clock.Clock"):
        make(clock="now")


def test_properties():
    est = FakeEstimator()
    ex = make(est, eval_steps=7, train_steps=9)
    assert (ex.estimator, ex.eval_metrics, ex.train_steps, ex.eval_steps) == (est, None, 9, 7)


# -- train (8.2 #3-#9) ------------------------------------------------------------------------
def test_train(clock):
    est = FakeEstimator()
    listener = object()
    # TF passes the strings 'train_steps'/'steps' through; learnrun checks for ints first.
    ex = make(est, clock, train_steps=4242, saving_listeners=[listener])
    ex.train(delay_secs=0)
    assert est.fit_count == 1 and est.eval_count == 0
    call = est.train_calls[0]
    assert call["max_steps"] == 4242 and call["steps"] is None
    assert call["saving_listeners"] == [listener]
    assert clock.sleeps == []


@pytest.mark.parametrize("delay", [0, 1, 3])
def test_train_delay(clock, delay):
    ex = make(clock=clock)
    start = clock.time()
    ex.train(delay_secs=delay)
    assert clock.time() - start == delay


@pytest.mark.parametrize("task_id, expected", [(0, 0), (1, 5), (3, 15), (20, 60)])
def test_train_default_delay(clock, task_id, expected):
    est = FakeEstimator(FakeRunConfig(model_dir="m", task_id=task_id))
    start = clock.time()
    make(est, clock).train()
    assert clock.time() - start == expected


@pytest.mark.parametrize("task_id", [0, 1, 2, 3])
def test_train_delay_by_global_step(clock, task_id):
    est = FakeEstimator(FakeRunConfig(model_dir="m", task_id=task_id))
    h = FakeHook()
    make(est, clock, train_monitors=[h], delay_workers_by_global_step=True).train()
    assert clock.sleeps == []
    hooks = est.train_calls[0]["hooks"]
    assert hooks[0] is h
    waiter = hooks[1]
    assert isinstance(waiter, hooks_module.GlobalStepWaiterHook)
    assert waiter._wait_until_step == int(8000.0 * math.log(task_id + 1))


CLOUD_CLUSTER = {"ps": ["host1:1", "host2:2"], "worker": ["host3:3", "host4:4", "host5:5"]}


def test_train_with_cloud_cluster_checks_config_and_trains(clock):
    config = FakeRunConfig(
        model_dir="m",
        cluster_spec=CLOUD_CLUSTER,
        environment="cloud",
        task_type="worker",
        task_id=1,
        master="host4:2222",
    )
    est = FakeEstimator(config)
    make(est, clock).train(delay_secs=1)
    assert est.fit_count == 1 and clock.sleeps == [1]


def test_train_raises_if_job_name_is_missing(clock):
    config = FakeRunConfig(
        model_dir="m",
        cluster_spec=CLOUD_CLUSTER,
        environment="cloud",
        task_id=1,
        master="host3:2222",
    )
    with pytest.raises(ValueError, match="Could not start server; be sure to specify cluster_spec"):
        make(FakeEstimator(config), clock).train()


@pytest.mark.parametrize(
    "config",
    [
        FakeRunConfig(model_dir="m", master="host4:2222", environment="cloud"),
        FakeRunConfig(model_dir="m", cluster_spec=CLOUD_CLUSTER, master="", environment="cloud"),
    ],
)
def test_train_without_cluster_or_master_needs_no_server(clock, config):
    est = FakeEstimator(config)
    make(est, clock).train(delay_secs=0)
    assert est.fit_count == 1


def test_train_warns_for_local_environment_with_cluster(clock, caplog):
    config = FakeRunConfig(model_dir="m", cluster_spec=CLOUD_CLUSTER, master="host4:2222")
    with caplog.at_level(logging.WARNING):
        make(FakeEstimator(config), clock).train(delay_secs=0)
    assert "environment is set to 'local'" in caplog.text


def test_train_rejects_foreign_config_for_distributed_runtime(clock):
    class Foreign:
        model_dir = "m"
        cluster_spec = CLOUD_CLUSTER
        master = "host4:2222"

    with pytest.raises(ValueError, match="only works with learnrun.RunConfig"):
        make(FakeEstimator(Foreign()), clock).train()


# -- evaluate (8.2 #10, #11) ------------------------------------------------------------------
def test_evaluate(clock):
    est = FakeEstimator()
    h = FakeHook()
    ex = make(est, clock, eval_hooks=[h], eval_steps=4343, eval_delay_secs=0)
    ex.evaluate()
    assert est.eval_count == 1 and est.fit_count == 0
    call = est.eval_calls[0]
    assert call["hooks"] == [h] and call["steps"] == 4343 and call["name"] == "one_pass"
    assert call["checkpoint_path"] is None and est.export_count == 0
    ex.evaluate(name="other")
    assert est.eval_calls[1]["name"] == "other"


@pytest.mark.parametrize("delay", [0, 1, 3])
def test_evaluate_delay(clock, delay):
    est = FakeEstimator()
    h = FakeHook()
    start = clock.time()
    make(est, clock, eval_hooks=[h]).evaluate(delay_secs=delay)
    assert clock.time() - start == delay
    assert est.eval_calls[0]["hooks"] == [h]


def test_evaluate_default_delay(clock):
    make(clock=clock, eval_delay_secs=42).evaluate()
    assert clock.sleeps == [42]


# -- continuous_eval (8.2 #12-#15, #33) -------------------------------------------------------
def checkpointed(**kwargs):
    est = FakeEstimator(**kwargs)
    est.fake_checkpoint()
    return est


def test_continuous_eval(clock):
    est = checkpointed(eval_dict={"global_step": 100})
    h = FakeHook()
    ex = make(est, clock, eval_hooks=[h], eval_delay_secs=0, continuous_eval_throttle_secs=0)
    with pytest.raises(StopIteration):
        ex.continuous_eval(evaluate_checkpoint_only_once=False)
    assert est.eval_count == 6 and est.fit_count == 0
    assert all(c["hooks"] == [h] and c["name"] == "continuous" for c in est.eval_calls)
    assert est.eval_calls[0]["checkpoint_path"] == est.checkpoint


def test_continuous_eval_ends_after_train_step(clock):
    est = checkpointed(eval_dict={"global_step": 100})
    ex = make(est, clock, train_steps=100, eval_delay_secs=0, continuous_eval_throttle_secs=0)
    assert ex.continuous_eval() is None
    assert est.eval_count == 1


@pytest.mark.parametrize("delay", [0, 1, 2])
def test_continuous_eval_throttle_delay(clock, delay):
    est = checkpointed(eval_dict={"global_step": 100})
    ex = make(est, clock, eval_delay_secs=0, continuous_eval_throttle_secs=delay)
    start = clock.time()
    with pytest.raises(StopIteration):
        ex.continuous_eval(evaluate_checkpoint_only_once=False)
    assert clock.time() - start == 5 * delay


def test_continuous_eval_throttle_subtracts_work_time(clock):
    est = checkpointed(eval_dict={"global_step": 100}, clock=clock, eval_work_secs=12)
    ex = make(est, clock, eval_delay_secs=0, continuous_eval_throttle_secs=60, train_steps=100)
    ex.continuous_eval()
    assert clock.sleeps == [48]


def test_continuous_eval_predicate_fn(clock):
    est = checkpointed(eval_dict={"global_step": 100})
    ex = make(est, clock, eval_delay_secs=0, continuous_eval_throttle_secs=0)
    ex.continuous_eval(
        evaluate_checkpoint_only_once=False,
        continuous_eval_predicate_fn=lambda r: est.eval_count < 3,
    )
    assert est.eval_count == 3


def test_continuous_eval_predicate_receives_checkpoint_path(clock):
    est = checkpointed(eval_dict={"global_step": 5})
    seen = []

    def predicate(eval_result, checkpoint_path=None):
        seen.append((eval_result, checkpoint_path))
        return len(seen) < 3

    make(est, clock, eval_delay_secs=0).continuous_eval(continuous_eval_predicate_fn=predicate)
    assert seen == [(None, None), ({"global_step": 5}, est.checkpoint), ({}, est.checkpoint)]


def test_continuous_eval_evaluates_checkpoint_once(clock):
    est = checkpointed(eval_dict={"global_step": 100})
    results = []

    def predicate(eval_result):
        results.append(eval_result)
        return len(results) < 300

    ex = make(est, clock, eval_delay_secs=0, continuous_eval_throttle_secs=0)
    ex.continuous_eval(continuous_eval_predicate_fn=predicate)
    assert est.eval_count == 1
    assert len(results) == 300
    assert sum(1 for r in results if r) == 1


def test_continuous_eval_exports_each_evaluated_checkpoint(clock):
    est = checkpointed(eval_dict={"global_step": 100})
    strategy = FakeExportStrategy("s")
    ex = make(est, clock, eval_delay_secs=0, train_steps=100, export_strategies=strategy)
    ex.continuous_eval()
    assert strategy.calls == [
        dict(
            export_path=f"{est.model_dir}/export/s",
            checkpoint_path=est.checkpoint,
            eval_result={"global_step": 100},
        )
    ]


def test_continuous_eval_on_train_data_uses_train_input_and_does_not_export(clock):
    est = checkpointed(eval_dict={"global_step": 100})

    def train_input():
        return iter(())

    strategy = FakeExportStrategy()
    ex = Experiment(
        est, train_input, fake_input_fn, train_steps=100, export_strategies=strategy, clock=clock
    )
    ex.continuous_eval_on_train_data(delay_secs=0)
    assert est.eval_calls[0]["input_fn"] is train_input
    assert est.eval_calls[0]["name"] == "continuous_on_train_data"
    assert strategy.calls == [] and clock.sleeps == [60]


def test_continuous_eval_waits_for_checkpoint_and_warns_every_600s(clock, caplog):
    est = FakeEstimator(eval_dict={"global_step": 1})
    calls = []

    def predicate(eval_result):
        calls.append(eval_result)
        if len(calls) == 25:  # the checkpoint appears after 24 throttled iterations
            est.fake_checkpoint()
        return len(calls) < 27

    ex = make(est, clock, continuous_eval_throttle_secs=60)
    with caplog.at_level(logging.WARNING):
        ex.continuous_eval(continuous_eval_predicate_fn=predicate)
    assert clock.sleeps[0] == 120  # eval_delay_secs
    assert clock.sleeps[1:] == [60] * 26
    assert est.eval_count == 1
    not_fitted = caplog.text.count("Estimator is not fitted yet.")
    assert not_fitted == 3  # t = 0, 660, 1320 of 24 minutes without a checkpoint


# -- local_run / train_and_evaluate (8.2 #16, #19-#21, #34) ----------------------------------
def test_local_run(clock, validation_monitor):
    est = FakeEstimator()
    h = FakeHook()
    ex = make(est, clock, train_steps=100, eval_steps=100, local_eval_frequency=10, eval_hooks=[h])
    ex.local_run()
    assert est.fit_count == 1 and est.eval_count == 1
    hooks = est.train_calls[0]["hooks"]
    assert len(hooks) == 1 and isinstance(hooks[0], validation_monitor)
    assert hooks[0].kwargs["every_n_steps"] == 10
    assert est.eval_calls[0]["hooks"] == [h]
    assert ex.min_eval_frequency == 1  # restored


def test_local_run_default_has_no_validation(clock, validation_monitor):
    est = FakeEstimator()
    make(est, clock).local_run()
    assert est.train_calls[0]["hooks"] == []


def test_train_and_evaluate(clock, validation_monitor):
    est = FakeEstimator(eval_dict={"global_step": 100})
    h = FakeHook()
    strategy = FakeExportStrategy()
    ex = make(
        est,
        clock,
        train_steps=100,
        eval_steps=100,
        eval_hooks=[h],
        export_strategies=strategy,
        check_interval_secs=7,
    )
    eval_result, exports = ex.train_and_evaluate()
    assert est.fit_count == 1 and est.eval_count == 1 and est.export_count == 1
    assert clock.sleeps == []
    hooks = est.train_calls[0]["hooks"]
    assert len(hooks) == 1
    monitor = hooks[0].kwargs
    assert monitor["every_n_steps"] == 1 and monitor["check_interval_secs"] == 7
    assert monitor["input_fn"] is fake_input_fn and monitor["hooks"] == [h]
    assert monitor["eval_steps"] == 100
    assert est.eval_calls[0]["hooks"] == [h] and est.eval_calls[0]["name"] is None
    assert eval_result == {"global_step": 100}
    assert exports == [f"{est.model_dir}/export/Servo/bogus_timestamp"]
    assert strategy.calls[0]["checkpoint_path"] is None
    assert ex._train_monitors == []  # the validation hook does not leak


def test_train_and_evaluate_builds_the_real_validation_monitor(clock):
    est = FakeEstimator()
    h = FakeHook()
    make(
        est, clock, min_eval_frequency=5, eval_hooks=[h], check_interval_secs=3
    ).train_and_evaluate()
    (monitor,) = est.train_calls[0]["hooks"]
    assert isinstance(monitor, public_hooks.ValidationMonitor)
    assert (monitor.every_n_steps, monitor.check_interval_secs, monitor.hooks) == (5, 3, [h])
    assert monitor.input_fn is fake_input_fn and monitor._clock is clock


def test_train_and_evaluate_keeps_user_monitors(clock, validation_monitor):
    est = FakeEstimator()
    h = FakeHook()
    ex = make(est, clock, train_monitors=[h])
    ex.train_and_evaluate()
    assert est.train_calls[0]["hooks"][0] is h and len(est.train_calls[0]["hooks"]) == 2
    assert ex._train_monitors == [h]


def test_train_and_evaluate_with_no_eval_during_training(clock):
    est = FakeEstimator()
    make(est, clock, min_eval_frequency=0).train_and_evaluate()
    assert est.fit_count == 1 and est.eval_count == 1
    assert est.train_calls[0]["hooks"] == []


def test_export_strategies_reset(clock):
    est = FakeEstimator()
    s1, s2, s3 = (FakeExportStrategy(n) for n in ("s1", "s2", "s3"))
    ex = make(est, clock, min_eval_frequency=0, export_strategies=[s1])
    ex.train_and_evaluate()
    assert est.export_count == 1
    assert ex.reset_export_strategies() == (s1,)
    ex.train_and_evaluate()
    assert est.export_count == 1
    assert ex.reset_export_strategies([s2, s3]) == ()
    ex.train_and_evaluate()
    assert est.export_count == 3


def test_train_hooks_extend_does_not_mutate_input_hooks():
    h1, h2 = FakeHook("1"), FakeHook("2")
    given = [h1]
    ex = make(train_monitors=given)
    assert ex.extend_train_hooks([h2]) is None
    assert ex._train_monitors == [h1, h2] and given == [h1]


def test_checkpoint_and_export(clock, monkeypatch):
    saves = []

    class FakeSaverHook(RecordingHook):
        instances = []

    monkeypatch.setattr(experiment_module, "CheckpointSaverHook", FakeSaverHook)

    def simulate_saves(est, kwargs):
        (saver,) = kwargs["hooks"]
        (listener,) = saver.kwargs["listeners"]
        assert isinstance(listener, hooks_module.CheckpointSaverListener)
        listener.begin()
        listener.after_save(None, 0)  # nothing saved yet: skipped
        for step in (1, 4, 7, 8, 8):  # the last one repeats: skipped
            est.fake_checkpoint(f"{est.model_dir}/ckpt-{step}")
            est.eval_dict = {"global_step": step}
            listener.before_save(None, step)
            assert listener.after_save(None, step) is None
            saves.append(step)
        listener.end(None, 8)

    config = FakeRunConfig(model_dir="m", save_checkpoints_steps=3, save_checkpoints_secs=None)
    est = FakeEstimator(config, on_train=simulate_saves)
    strategy = FakeExportStrategy()
    ex = make(
        est,
        clock,
        train_steps=8,
        eval_delay_secs=0,
        checkpoint_and_export=True,
        export_strategies=strategy,
    )
    eval_result, exports = ex.train_and_evaluate()
    assert FakeSaverHook.instances[0].kwargs["save_steps"] == 3
    assert FakeSaverHook.instances[0].kwargs["save_secs"] is None
    assert FakeSaverHook.instances[0].kwargs["checkpoint_dir"] == "m"
    assert est.eval_count == 4 and est.export_count == 4
    assert [c["name"] for c in est.eval_calls] == ["intermediate_export"] * 4
    assert [c["checkpoint_path"] for c in strategy.calls] == [f"m/ckpt-{s}" for s in (1, 4, 7, 8)]
    assert eval_result == {"global_step": 8}
    assert exports == ["m/export/Servo/bogus_timestamp"]


def test_checkpoint_and_export_needs_checkpoints_on(clock, validation_monitor):
    config = FakeRunConfig(model_dir="m", save_checkpoints_secs=None)
    est = FakeEstimator(config)
    make(est, clock, checkpoint_and_export=True).train_and_evaluate()
    assert isinstance(est.train_calls[0]["hooks"][0], validation_monitor)
    assert est.eval_count == 1


# -- continuous_train_and_eval (8.2 #23-#27) -------------------------------------------------
def test_continuous_train_and_eval(clock):
    est = FakeEstimator(eval_dict={"global_step": 100})
    h = FakeHook()
    listener = object()
    strategy = FakeExportStrategy()
    ex = make(
        est,
        clock,
        train_steps=100,
        eval_hooks=[h],
        export_strategies=strategy,
        saving_listeners=[listener],
    )
    eval_result, exports = ex.continuous_train_and_eval()
    assert est.fit_count == 1 and est.eval_count == 1 and est.export_count == 1
    assert est.eval_calls[0]["hooks"] == [h] and est.eval_calls[0]["name"] == "one_pass"
    assert est.eval_calls[0]["checkpoint_path"] == est.checkpoint
    assert est.train_calls[0]["saving_listeners"] == [listener]
    assert est.train_calls[0]["steps"] == 10 and est.train_calls[0]["max_steps"] is None
    assert strategy.calls[0]["checkpoint_path"] is None
    assert eval_result == {"global_step": 100} and len(exports) == 1


def test_continuous_train_and_eval_with_predicate_fn(clock):
    est = FakeEstimator(eval_dict={"global_step": 100})
    ex = make(est, clock, train_steps=100, export_strategies=FakeExportStrategy())
    assert ex.continuous_train_and_eval(continuous_eval_predicate_fn=lambda r: False) == (
        None,
        None,
    )
    assert est.fit_count == 0 and est.eval_count == 0 and est.export_count == 0


@pytest.mark.parametrize(
    "kwargs, steps",
    [
        (dict(train_steps=10**14), int(10**14 / 10)),
        (dict(train_steps_per_iteration=1234), 1234),
        (dict(), 1000),
    ],
)
def test_continuous_train_and_eval_steps_per_iteration(clock, kwargs, steps):
    est = FakeEstimator(eval_dict={"global_step": 100})
    ex = make(est, clock, **kwargs)
    ex.continuous_train_and_eval(continuous_eval_predicate_fn=lambda r: r is None)
    assert est.fit_count == 1 and est.train_calls[0]["steps"] == steps


# -- serve / run_std_server / test (8.2 #30-#32) ---------------------------------------------
PS_CONFIG = dict(
    model_dir="m",
    cluster_spec={"ps": ["host1:1", "host2:2"], "worker": ["host3:3"]},
    task_type="ps",
    task_id=1,
    master="host2:2222",
    environment="cloud",
)


@pytest.mark.parametrize("schedule", ["serve", "run_std_server"])
def test_serve_delegates_to_distributed(monkeypatch, schedule):
    served = []
    monkeypatch.setattr(experiment_module, "serve", lambda ex: served.append(ex) or "done")
    ex = make(FakeEstimator(FakeRunConfig(**PS_CONFIG)))
    assert getattr(ex, schedule)() == "done"
    assert served == [ex]


@pytest.mark.parametrize(
    "override",
    [dict(cluster_spec={}), dict(task_type=None), dict(master=""), dict(task_id=None)],
)
def test_serve_raises_without_cluster_info(override):
    ex = make(FakeEstimator(FakeRunConfig(**{**PS_CONFIG, **override})))
    with pytest.raises(ValueError, match="Could not start server; be sure to specify"):
        ex.run_std_server()


def test_test(clock):
    est = FakeEstimator()
    h = FakeHook()
    ex = make(est, clock, export_strategies=FakeExportStrategy(), eval_hooks=[h])
    ex.test()
    assert est.fit_count == 1 and est.eval_count == 1 and est.export_count == 1
    assert est.train_calls[0]["steps"] == 1
    assert est.eval_calls[0]["steps"] == 1 and est.eval_calls[0]["hooks"] is None
    assert clock.sleeps == []


def test_eval_metrics_with_real_learnrun_estimator(tmp_path):
    from learnrun.config.run_config import RunConfig
    from learnrun.estimator.estimator import Estimator

    est = Estimator(lambda params: None, config=RunConfig(model_dir=str(tmp_path), environ={}))
    with pytest.raises(ValueError, match="`eval_metrics` must be `None` with `learnrun.Estimator`"):
        make(est, eval_metrics={"a": "b"})
    assert make(est).estimator is est


# -- bad input: one clear error naming the argument and the value ---------------------------
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"train_steps": -5}, ValueError, r"`train_steps` must be None or an integer >= 0, got -5"),
        ({"train_steps": "abc"}, ValueError, r"`train_steps` .* got 'abc'"),
        ({"train_steps": 1.5}, ValueError, r"`train_steps` .* got 1.5"),
        (
            {"eval_steps": 0},
            ValueError,
            r"`eval_steps` must be None or an integer >= 1, got 0\. None",
        ),
        ({"local_eval_frequency": -1}, ValueError, r"`local_eval_frequency` .* got -1"),
        ({"min_eval_frequency": -1}, ValueError, r"`min_eval_frequency` .* got -1"),
        ({"min_eval_frequency": "a"}, ValueError, r"`min_eval_frequency` .* got 'a'"),
        (
            {"eval_delay_secs": -1},
            ValueError,
            r"`eval_delay_secs` must be a number of seconds >= 0.*-1",
        ),
        ({"eval_delay_secs": "x"}, ValueError, r"`eval_delay_secs` .* got 'x'"),
        (
            {"continuous_eval_throttle_secs": -1},
            ValueError,
            r"`continuous_eval_throttle_secs` .*-1",
        ),
        ({"check_interval_secs": -2}, ValueError, r"`check_interval_secs` .*-2"),
        (
            {"train_steps_per_iteration": 0},
            ValueError,
            r"`train_steps_per_iteration` must be an integer\. Got 0",
        ),
        (
            {"train_steps_per_iteration": True},
            ValueError,
            r"`train_steps_per_iteration` must be an integer",
        ),
        (
            {"train_monitors": FakeHook()},
            TypeError,
            r"`train_monitors` must be a list of hooks.*\[hook\]",
        ),
        ({"eval_hooks": 3}, TypeError, r"`eval_hooks` must be a list of hooks .*got 3"),
        ({"saving_listeners": 3}, TypeError, r"`saving_listeners` must be a list .*got 3"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        make(**kwargs)


def test_check_interval_secs_may_be_none():
    assert make(check_interval_secs=None)._check_interval_secs is None


@pytest.mark.parametrize("which", [0, 1])
def test_input_fns_must_be_callable(which):
    fns = [fake_input_fn, fake_input_fn]
    fns[which] = "not a function"
    name = ["train_input_fn", "eval_input_fn"][which]
    with pytest.raises(TypeError, match=rf"`{name}` must be callable, given: 'not a function'"):
        Experiment(FakeEstimator(), *fns)


def test_bad_schedule_arguments(clock):
    ex = make(clock=clock, train_steps=1)
    with pytest.raises(ValueError, match=r"`delay_secs` must be a number of seconds >= 0.*-1"):
        ex.train(delay_secs=-1)
    with pytest.raises(ValueError, match=r"`delay_secs` .* got 'x'"):
        ex.evaluate(delay_secs="x")
    with pytest.raises(ValueError, match=r"`throttle_delay_secs` .* got -1"):
        ex.continuous_eval(delay_secs=0, throttle_delay_secs=-1)
    with pytest.raises(TypeError, match=r"`additional_hooks` must be a list of hooks"):
        ex.extend_train_hooks(FakeHook())
    assert clock.sleeps == [] and ex.estimator.fit_count == 0
