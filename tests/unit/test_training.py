"""train_and_evaluate, TrainSpec, EvalSpec, exporters: spec 8.7 against fakes and a FakeClock."""

from __future__ import annotations

import logging

import pytest

import learnrun.export
import learnrun.export.exporters
from learnrun import training
from learnrun.clock import FakeClock
from learnrun.hooks import SessionRunHook
from learnrun.training import (
    BestExporter,
    EvalSpec,
    Exporter,
    FinalExporter,
    LatestExporter,
    TrainSpec,
    train_and_evaluate,
)
from tests.helpers.fakes import FakeEstimator, FakeRunConfig, fake_input_fn


class RecordingExporter(Exporter):
    def __init__(self, name="rec"):
        self._name = name
        self.calls = []

    @property
    def name(self):
        return self._name

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        self.calls.append((export_path, checkpoint_path, eval_result, is_the_final_export))
        return "path_to_export"


# -- specs (8.7 #1, #2) ----------------------------------------------------------------------
def test_train_spec():
    spec = TrainSpec(fake_input_fn)
    assert (spec.max_steps, spec.hooks) == (None, ())
    hook = SessionRunHook()
    spec = TrainSpec(fake_input_fn, max_steps=2, hooks=[hook])
    assert (spec.max_steps, spec.hooks) == (2, (hook,))
    with pytest.raises(TypeError, match="`input_fn` must be callable, given: 'x'"):
        TrainSpec("x")
    with pytest.raises(ValueError, match="Must specify max_steps > 0, given: 0"):
        TrainSpec(fake_input_fn, max_steps=0)
    with pytest.raises(TypeError, match="All hooks must be `SessionRunHook` instances"):
        TrainSpec(fake_input_fn, hooks=[object()])


def test_eval_spec_defaults_and_args():
    spec = EvalSpec(fake_input_fn)
    assert (spec.steps, spec.name, spec.hooks, spec.exporters) == (100, None, (), ())
    assert (spec.start_delay_secs, spec.throttle_secs) == (120, 600)
    e1, e2 = RecordingExporter("a"), RecordingExporter("b")
    spec = EvalSpec(fake_input_fn, steps=2, name="n", exporters=[e1, e2], start_delay_secs=0)
    assert spec.exporters == (e1, e2) and spec.name == "n"
    assert EvalSpec(fake_input_fn, exporters=e1).exporters == (e1,)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(input_fn="x"), TypeError, "`input_fn` must be callable"),
        (dict(steps=0), ValueError, "Must specify steps > 0, given: 0"),
        (dict(name=123), TypeError, "`name` must be string, given: 123"),
        (dict(hooks=[object()]), TypeError, "All hooks must be `SessionRunHook`"),
        (dict(start_delay_secs=-1), ValueError, "Must specify start_delay_secs >= 0, given: -1"),
        (dict(throttle_secs=-1), ValueError, "Must specify throttle_secs >= 0, given: -1"),
        (dict(exporters=[SessionRunHook()]), TypeError, "`exporters` must be an Exporter"),
        (dict(exporters=SessionRunHook()), TypeError, "`exporters` must be an Exporter"),
        (
            dict(exporters=RecordingExporter(123)),
            ValueError,
            r"An Exporter must have a string name. Given: <class 'int'> \(123\)",
        ),
        (
            dict(exporters=[RecordingExporter("a"), RecordingExporter("a")]),
            ValueError,
            "`exporters` must have unique names",
        ),
        (dict(exporters=RecordingExporter(None)), ValueError, "cannot have a name that is `None`"),
        (
            dict(exporters=[RecordingExporter("a"), RecordingExporter("")]),
            ValueError,
            "cannot have a name that is `None`",
        ),
    ],
)
def test_eval_spec_errors(kwargs, error, match):
    kwargs = {"input_fn": fake_input_fn, **kwargs}
    with pytest.raises(error, match=match):
        EvalSpec(**kwargs)


# -- train_and_evaluate / executor checks (8.7 #3, #4, #12) -----------------------------------
def test_train_and_evaluate_checks():
    est = FakeEstimator()
    with pytest.raises(TypeError, match="`eval_spec` must have type `learnrun.EvalSpec`"):
        train_and_evaluate("not an estimator", TrainSpec(fake_input_fn), "bad")
    with pytest.raises(TypeError, match="`estimator` must have type `learnrun.Estimator`"):
        train_and_evaluate("nope", TrainSpec(fake_input_fn), EvalSpec(fake_input_fn))
    with pytest.raises(TypeError, match="`train_spec` must have type"):
        train_and_evaluate(est, "bad", EvalSpec(fake_input_fn))
    evaluator = FakeEstimator(FakeRunConfig(model_dir="m", task_type="evaluator", task_id=1))
    with pytest.raises(ValueError, match="there can only be one `evaluator` task .*with task id 0"):
        train_and_evaluate(evaluator, TrainSpec(fake_input_fn), EvalSpec(fake_input_fn))


def test_executor_constructor_checks():
    est, ts = FakeEstimator(), TrainSpec(fake_input_fn)
    with pytest.raises(TypeError, match="either `None` or have type"):
        training._TrainingExecutor(est, ts, "bad")
    with pytest.raises(TypeError, match="All hooks must be"):
        training._TrainingExecutor(est, ts, None, train_hooks=[object()])
    with pytest.raises(TypeError, match="`continuous_eval_listener` must have type"):
        training._TrainingExecutor(est, ts, None, continuous_eval_listener=object())


CLUSTER = {"chief": ["c:1"], "worker": ["w0:1", "w1:1"], "ps": ["p:1"], "evaluator": ["e:1"]}


def cluster_config(task_type, task_id=0, **kwargs):
    master = "" if task_type == "evaluator" else "grpc://host:1"
    kwargs.setdefault("master", master)
    return FakeRunConfig(
        model_dir="m", cluster_spec=CLUSTER, task_type=task_type, task_id=task_id, **kwargs
    )


@pytest.mark.parametrize("task_type", ["chief", "worker", "ps", "evaluator", "master"])
def test_run_dispatches_on_task_type(monkeypatch, task_type):
    called = []
    monkeypatch.setattr(
        training._TrainingExecutor, "run_" + task_type, lambda self: called.append(task_type)
    )
    executor = training._TrainingExecutor(
        FakeEstimator(cluster_config(task_type)), TrainSpec(fake_input_fn), None
    )
    assert executor.run() is None and called == [task_type]


def test_run_dispatch_errors():
    def run(config):
        return training._TrainingExecutor(
            FakeEstimator(config), TrainSpec(fake_input_fn), None
        ).run()

    with pytest.raises(ValueError, match="cannot be `local`"):
        run(cluster_config("local"))
    with pytest.raises(ValueError, match="Task type alloc is not supported. Supported") as e:
        run(cluster_config("alloc"))
    assert "'local'" not in str(e.value) and "'worker'" in str(e.value)
    with pytest.raises(ValueError, match="`estimator.config` must have task_type set."):
        run(cluster_config(None))


# -- chief / worker / master / ps (8.7 #5-#7, #9) ---------------------------------------------
def test_worker_and_chief_train(clock):
    hook, extra = SessionRunHook(), SessionRunHook()
    for task_type in ("chief", "worker"):
        est = FakeEstimator(cluster_config(task_type))
        spec = TrainSpec(fake_input_fn, max_steps=5, hooks=[hook])
        executor = training._TrainingExecutor(est, spec, None, train_hooks=[extra], clock=clock)
        getattr(executor, "run_" + task_type)()
        call = est.train_calls[0]
        assert call["max_steps"] == 5 and call["hooks"] == [hook, extra]
        assert est.eval_count == 0 and est.export_count == 0


@pytest.mark.parametrize(
    "override",
    [dict(cluster_spec={}), dict(master=""), dict(task_type=""), dict(task_id=None)],
)
def test_cluster_config_errors(clock, override):
    config = cluster_config("worker")
    for key, value in override.items():
        setattr(config, key, value)
    executor = training._TrainingExecutor(FakeEstimator(config), TrainSpec(fake_input_fn), None)
    with pytest.raises(RuntimeError, match="Could not start server; .*TF_CONFIG"):
        executor.run_worker() if override != dict(
            task_type=""
        ) else executor._start_distributed_training()
    ps = training._TrainingExecutor(FakeEstimator(config), TrainSpec(fake_input_fn), None)
    with pytest.raises(RuntimeError, match="Could not start server"):
        ps.run_ps()


def test_single_node_cluster_with_empty_master_trains(clock):
    config = FakeRunConfig(model_dir="m", cluster_spec={"chief": ["c:1"]}, task_type="chief")
    est = FakeEstimator(config)
    training._TrainingExecutor(est, TrainSpec(fake_input_fn), None, clock=clock).run_chief()
    assert est.fit_count == 1


def test_google_environment_skips_server_checks(clock):
    config = cluster_config("worker", master="", environment="google")
    est = FakeEstimator(config)
    training._TrainingExecutor(est, TrainSpec(fake_input_fn), None, clock=clock).run_worker()
    assert est.fit_count == 1


def test_worker_delay(clock):
    est = FakeEstimator(cluster_config("worker", task_id=1))
    training._TrainingExecutor(est, TrainSpec(fake_input_fn), None, clock=clock).run_worker()
    assert clock.sleeps == [10]
    est = FakeEstimator(cluster_config("worker", task_id=1, experimental_max_worker_delay_secs=0))
    clock2 = FakeClock()
    training._TrainingExecutor(est, TrainSpec(fake_input_fn), None, clock=clock2).run_worker()
    assert clock2.sleeps == []
    for task_type in ("chief", "master"):
        clock3 = FakeClock()
        est = FakeEstimator(cluster_config(task_type, task_id=0))
        spec = EvalSpec(fake_input_fn)
        getattr(
            training._TrainingExecutor(est, TrainSpec(fake_input_fn), spec, clock=clock3),
            "run_" + task_type,
        )()
        assert clock3.sleeps == []


def test_ps_serves(monkeypatch):
    served = []
    monkeypatch.setattr(training, "serve", served.append)
    config = cluster_config("ps")
    training._TrainingExecutor(FakeEstimator(config), TrainSpec(fake_input_fn), None).run_ps()
    assert served == [config]


def saving_simulator(steps, final_step):
    """on_train callback: the first save, then saves at ``steps``, then ``end``."""

    def simulate(est, kwargs):
        (listener,) = kwargs["saving_listeners"]
        listener.begin()
        stopped = False
        for step in [0, *steps]:
            est.fake_checkpoint(f"m/ckpt-{step}")
            est.eval_dict = {"global_step": step, "loss": 1.0}
            if listener.after_save(None, step):
                stopped = True
                break
        if not stopped:
            est.fake_checkpoint(f"m/ckpt-{final_step}")
            est.eval_dict = {"global_step": final_step, "loss": 1.0}
            listener.end(None, final_step)

    return simulate


def test_master_evaluates_while_training(clock):
    est = FakeEstimator(cluster_config("master"), on_train=saving_simulator([10, 20], 22))
    exporter = RecordingExporter()
    eval_spec = EvalSpec(fake_input_fn, name="n", exporters=exporter, throttle_secs=0)
    executor = training._TrainingExecutor(
        est, TrainSpec(fake_input_fn, max_steps=22), eval_spec, clock=clock
    )
    executor.run_master()
    assert [c["checkpoint_path"] for c in est.eval_calls] == ["m/ckpt-10", "m/ckpt-20", "m/ckpt-22"]
    assert est.eval_calls[0]["name"] == "n" and est.eval_calls[0]["steps"] == 100
    assert [c[3] for c in exporter.calls] == [False, False, True]
    assert exporter.calls[0][0] == "m/export/rec"
    with pytest.raises(TypeError, match="`eval_spec` must have type"):
        training._TrainingExecutor(est, TrainSpec(fake_input_fn), None).run_master()


def test_throttled_listener_evaluates_final_checkpoint(clock):
    est = FakeEstimator(on_train=saving_simulator([10, 20, 30, 40], 40))
    exporter = RecordingExporter()
    spec = EvalSpec(fake_input_fn, exporters=exporter, throttle_secs=100)
    metrics, exports = train_and_evaluate(
        est, TrainSpec(fake_input_fn, max_steps=40), spec, clock=clock
    )
    # clock does not move: only the first eligible save and the final one are evaluated
    assert [c["checkpoint_path"] for c in est.eval_calls] == ["m/ckpt-10", "m/ckpt-40"]
    assert [c[3] for c in exporter.calls] == [False, True]
    assert metrics["global_step"] == 40 and exports == ["path_to_export"]


# -- run_local (8.7 #11) ----------------------------------------------------------------------
def test_run_local(clock):
    est = FakeEstimator(on_train=saving_simulator([10, 20], 22))
    exporter = RecordingExporter()
    hook = SessionRunHook()
    spec = EvalSpec(fake_input_fn, exporters=exporter, throttle_secs=0)
    metrics, exports = train_and_evaluate(
        est, TrainSpec(fake_input_fn, max_steps=22, hooks=[hook]), spec, clock=clock
    )
    assert est.fit_count == 1 and est.eval_count == 3 and len(exporter.calls) == 3
    assert [c[3] for c in exporter.calls] == [False, False, True]
    assert est.train_calls[0]["hooks"] == [hook] and est.train_calls[0]["max_steps"] == 22
    assert metrics["global_step"] == 22 and exports == ["path_to_export"]


def test_run_local_listener_can_stop(clock):
    class StopBefore(training._ContinuousEvalListener):
        def before_eval(self):
            return False

    class StopAfter(training._ContinuousEvalListener):
        def after_eval(self, eval_result):
            return False

    est = FakeEstimator(on_train=saving_simulator([10, 20], 22))
    spec = EvalSpec(fake_input_fn, throttle_secs=0)
    executor = training._TrainingExecutor(
        est,
        TrainSpec(fake_input_fn, max_steps=22),
        spec,
        continuous_eval_listener=StopBefore(),
        clock=clock,
    )
    assert executor.run_local() == (None, None) and est.eval_count == 0
    est = FakeEstimator(on_train=saving_simulator([10, 20], 22))
    executor = training._TrainingExecutor(
        est,
        TrainSpec(fake_input_fn, max_steps=22),
        spec,
        continuous_eval_listener=StopAfter(),
        clock=clock,
    )
    metrics, _ = executor.run_local()
    assert est.eval_count == 1 and metrics["global_step"] < 22


def test_run_local_requires_eval_spec_and_a_new_checkpoint(clock):
    est = FakeEstimator()
    with pytest.raises(TypeError, match="`eval_spec` must have type"):
        training._TrainingExecutor(est, TrainSpec(fake_input_fn), None).run_local()

    def no_new_checkpoint(est, kwargs):
        (listener,) = kwargs["saving_listeners"]
        listener.begin()
        listener.end(None, 5)

    est = FakeEstimator(on_train=no_new_checkpoint)
    with pytest.raises(RuntimeError, match="There was no new checkpoint after the training"):
        train_and_evaluate(est, TrainSpec(fake_input_fn), EvalSpec(fake_input_fn), clock=clock)


@pytest.mark.parametrize(
    "result, error, match",
    [
        ({}, ValueError, "should never return empty metrics"),
        (123, TypeError, "should return dict"),
        ({"loss": 123}, ValueError, "should have `global_step`"),
    ],
)
def test_bad_evaluate_results(clock, result, error, match):
    est = FakeEstimator(eval_dict=result)
    est.fake_checkpoint()
    evaluator = training._Evaluator(est, EvalSpec(fake_input_fn), None, clock)
    with pytest.raises(error, match=match):
        evaluator.evaluate_and_export()


# -- evaluator (8.7 #8) -----------------------------------------------------------------------
class SequenceEstimator(FakeEstimator):
    def __init__(self, checkpoints, **kwargs):
        super().__init__(cluster_config("evaluator"), **kwargs)
        self.checkpoints = list(checkpoints)
        self.lookups = 0

    def latest_checkpoint(self):
        path = self.checkpoints[min(self.lookups, len(self.checkpoints) - 1)]
        self.lookups += 1
        if path:
            self.eval_dict = {"global_step": int(path.rsplit("_", 1)[-1]) if "_" in path else 1}
        return path


def test_evaluator_statuses(clock, caplog):
    statuses = []

    class Recorder(training._ContinuousEvalListener):
        def after_eval(self, eval_result):
            statuses.append(eval_result.status)
            return len(statuses) < 5

    est = SequenceEstimator([None, "", "same", "same", "path_2"])
    exporter = RecordingExporter()
    spec = EvalSpec(
        fake_input_fn, name="cont_eval", exporters=exporter, start_delay_secs=0, throttle_secs=0
    )
    executor = training._TrainingExecutor(
        est,
        TrainSpec(fake_input_fn, hooks=[SessionRunHook()]),
        spec,
        continuous_eval_listener=Recorder(),
        clock=clock,
    )
    with caplog.at_level(logging.WARNING):
        executor.run_evaluator()
    assert est.lookups == 5 and est.eval_count == 2 and est.fit_count == 0
    assert statuses == [
        "missing checkpoint",
        "missing checkpoint",
        "evaluated",
        "no new checkpoint",
        "evaluated",
    ]
    assert est.eval_calls[0]["name"] == "cont_eval" and est.eval_calls[0]["hooks"] == []
    # 8.7 #8: two warnings -- the first missing checkpoint ('' is within 600 s of it) and the
    # unchanged checkpoint (an evaluation resets the 600 s warning timer).
    assert caplog.text.count("Estimator is not trained yet") == 1
    assert caplog.text.count("No new checkpoint ready for evaluation") == 1
    assert "EvalSpec.throttle_secs is set as 0" in caplog.text
    assert clock.sleeps == []


def test_evaluator_stops_at_max_steps_with_one_final_export(clock):
    est = SequenceEstimator(["ckpt_5", "ckpt_10"])
    exporter = RecordingExporter()
    spec = EvalSpec(fake_input_fn, exporters=exporter, start_delay_secs=123, throttle_secs=0)
    training._TrainingExecutor(
        est, TrainSpec(fake_input_fn, max_steps=10), spec, clock=clock
    ).run_evaluator()
    assert est.eval_count == 2 and [c[3] for c in exporter.calls] == [False, True]
    assert clock.sleeps == [123]


def test_evaluator_throttle_subtracts_work(clock):
    est = SequenceEstimator(["ckpt_10"], clock=clock, eval_work_secs=12)
    spec = EvalSpec(fake_input_fn, start_delay_secs=0, throttle_secs=123)
    training._TrainingExecutor(
        est, TrainSpec(fake_input_fn, max_steps=10), spec, clock=clock
    ).run_evaluator()
    assert clock.sleeps == [111]


def test_evaluator_listener_can_stop(clock):
    class StopSecond(training._ContinuousEvalListener):
        calls = 0

        def before_eval(self):
            StopSecond.calls += 1
            return StopSecond.calls < 2

    est = SequenceEstimator(["ckpt_1", "ckpt_2"])
    spec = EvalSpec(fake_input_fn, start_delay_secs=0, throttle_secs=0)
    training._TrainingExecutor(
        est,
        TrainSpec(fake_input_fn, max_steps=10),
        spec,
        continuous_eval_listener=StopSecond(),
        clock=clock,
    ).run_evaluator()
    assert est.eval_count == 1
    with pytest.raises(TypeError, match="`eval_spec` must have type"):
        training._TrainingExecutor(est, TrainSpec(fake_input_fn), None).run_evaluator()


# -- exporters (7.4) --------------------------------------------------------------------------
@pytest.fixture
def gc_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(
        learnrun.export.exporters,
        "garbage_collect_exports",
        lambda base, keep: calls.append((base, keep)),
        raising=False,
    )
    return calls


def test_final_and_latest_exporters(gc_calls):
    est = FakeEstimator()
    final = FinalExporter("final", "serving_fn")
    assert final.export(est, "m/export/final", "ck", {}, False) is None
    assert final.export(est, "m/export/final", "ck", {}, True) == "m/export/final/bogus_timestamp"
    latest = LatestExporter("latest", "serving_fn", exports_to_keep=2)
    assert (
        latest.export(est, "m/export/latest", "ck", {}, False) == "m/export/latest/bogus_timestamp"
    )
    assert gc_calls == [("m/export/latest", 2)]
    assert est.export_calls[-1]["checkpoint_path"] == "ck"
    with pytest.raises(ValueError, match="`exports_to_keep`, if provided, must be a positive"):
        LatestExporter("latest", "serving_fn", exports_to_keep=0)


def test_best_exporter(gc_calls, tmp_path):
    est = FakeEstimator(FakeRunConfig(model_dir=str(tmp_path)))
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "results.jsonl").write_text('{"loss": 50, "global_step": 1}\n')
    best = BestExporter(serving_input_receiver_fn="fn", exports_to_keep=1)
    results = [
        best.export(est, "base", f"ck{i}", {"loss": loss}, False)
        for i, loss in enumerate([100, 40, 45, 10])
    ]
    assert results == [None, "base/bogus_timestamp", None, "base/bogus_timestamp"]
    assert [c["checkpoint_path"] for c in est.export_calls] == ["ck1", "ck3"]
    with pytest.raises(ValueError, match="compare_fn must include best_eval_result"):
        BestExporter(compare_fn=lambda a, b: True)
    with pytest.raises(ValueError, match="current_eval_result cannot be empty"):
        best.export(est, "base", "ck", {}, False)


def test_best_exporter_ignores_the_record_of_the_checkpoint_being_exported(gc_calls, tmp_path):
    est = FakeEstimator(FakeRunConfig(model_dir=str(tmp_path)))
    (tmp_path / "eval").mkdir()
    # Estimator.evaluate appended this checkpoint's own record before the exporter runs.
    (tmp_path / "eval" / "results.jsonl").write_text(
        '{"loss": 9, "global_step": 1, "checkpoint_path": "ck0"}\n'
        '{"loss": 5, "global_step": 2, "checkpoint_path": "ck1"}\n'
    )
    best = BestExporter(serving_input_receiver_fn="fn")
    assert best.export(est, "base", "ck1", {"loss": 5}, False) == "base/bogus_timestamp"
    assert best.export(est, "base", "ck2", {"loss": 6}, False) is None
