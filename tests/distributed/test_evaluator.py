"""The evaluator task's continuous_eval on the real Estimator: retention races and restarts."""

from __future__ import annotations

import json
import logging

import pytest

import learnrun
from learnrun.clock import FakeClock
from learnrun.model_dir.checkpoints import list_checkpoints
from tests.helpers import experiments

pytestmark = pytest.mark.timeout(60)


def _config(model_dir, task_type: str | None, **kwargs) -> learnrun.RunConfig:
    environ = {}
    if task_type:
        environ["TF_CONFIG"] = json.dumps({
            "cluster": {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]},
            "task": {"type": task_type, "index": 0}})
    return learnrun.RunConfig(model_dir=str(model_dir), tf_random_seed=0,
                              save_checkpoints_secs=None, save_summary_steps=10**9,
                              log_step_count_steps=10**9, device="cpu", environ=environ,
                              **kwargs)


def _train(model_dir, steps: int, save_steps: int, keep: int) -> None:
    config = _config(model_dir, None, save_checkpoints_steps=save_steps, keep_checkpoint_max=keep)
    learnrun.Estimator(experiments.model_fn, config=config).train(
        experiments.train_input_fn, max_steps=steps)


def _evaluator(model_dir) -> learnrun.Estimator:
    return learnrun.Estimator(experiments.model_fn, config=_config(model_dir, "evaluator"))


def test_checkpoint_deleted_by_retention_is_skipped_with_a_warning(tmp_path, caplog):
    _train(tmp_path, steps=6, save_steps=2, keep=1)
    assert [c.step for c in list_checkpoints(str(tmp_path))] == [6]
    est = _evaluator(tmp_path)
    with caplog.at_level(logging.WARNING, logger="learnrun"):
        result = est.evaluate(experiments.eval_input_fn, checkpoint_path=str(tmp_path / "ckpt-2"),
                              name="continuous")
    assert result == {}
    assert "ckpt-2" in caplog.text and "deleted" in caplog.text
    assert est.evaluated_checkpoints("continuous") == []
    # Outside the evaluator a missing checkpoint is still an error.
    local = learnrun.Estimator(experiments.model_fn, config=_config(tmp_path, None))
    with pytest.raises(Exception, match="ckpt-2"):
        local.evaluate(experiments.eval_input_fn, checkpoint_path=str(tmp_path / "ckpt-2"))


def test_restarted_evaluator_does_not_evaluate_a_recorded_checkpoint_again(tmp_path):
    _train(tmp_path, steps=4, save_steps=2, keep=5)

    def continuous_eval() -> None:
        est = _evaluator(tmp_path)
        experiment = learnrun.Experiment(est, experiments.train_input_fn,
                                         experiments.eval_input_fn, train_steps=4,
                                         eval_steps=None, eval_delay_secs=0,
                                         continuous_eval_throttle_secs=1, clock=FakeClock())
        experiment.continuous_eval()

    continuous_eval()
    results = tmp_path / "eval_continuous" / "results.jsonl"
    first = results.read_text().splitlines()
    assert [json.loads(line)["global_step"] for line in first] == [4]
    continuous_eval()  # the evaluator restarted: ckpt-4 is recorded, so it exits at once
    assert results.read_text().splitlines() == first
    assert _evaluator(tmp_path).evaluated_checkpoints("continuous") == [str(tmp_path / "ckpt-4")]


def _one_epoch_input_fn(input_context=None):
    x, y = experiments.make_data()
    return learnrun.inputs.numpy_input_fn(x, y, batch_size=16, num_epochs=1, shuffle=False)(
        input_context=input_context)


def _run_with_timeout(fn, timeout: float = 40.0) -> None:
    import threading

    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as err:  # re-raised below
            errors.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the evaluator did not stop after the final checkpoint"
    if errors:
        raise errors[0]


@pytest.mark.parametrize("train_steps", [None, 1000])
def test_evaluator_started_after_the_input_ran_out_evaluates_the_final_checkpoint_and_stops(
        tmp_path, train_steps):
    # train_steps None, or never reached: the input ran out at step 32 (one epoch)
    config = _config(tmp_path, None, save_checkpoints_steps=10)
    learnrun.Estimator(experiments.model_fn, config=config).train(_one_epoch_input_fn,
                                                                  max_steps=train_steps)
    assert json.loads((tmp_path / "final").read_text())["checkpoint"] == "ckpt-32"

    def continuous_eval() -> None:
        experiment = learnrun.Experiment(_evaluator(tmp_path), _one_epoch_input_fn,
                                         experiments.eval_input_fn, train_steps=train_steps,
                                         eval_steps=None, eval_delay_secs=0,
                                         continuous_eval_throttle_secs=1, clock=FakeClock())
        experiment.continuous_eval()

    _run_with_timeout(continuous_eval)
    records = (tmp_path / "eval_continuous" / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["global_step"] for line in records] == [32]


def test_train_and_evaluate_evaluator_stops_after_the_final_checkpoint(tmp_path):
    config = _config(tmp_path, None, save_checkpoints_steps=10)
    learnrun.Estimator(experiments.model_fn, config=config).train(_one_epoch_input_fn)
    train_spec = learnrun.TrainSpec(_one_epoch_input_fn)  # max_steps None
    eval_spec = learnrun.EvalSpec(experiments.eval_input_fn, steps=None, start_delay_secs=0,
                                  throttle_secs=1)
    _run_with_timeout(lambda: learnrun.train_and_evaluate(_evaluator(tmp_path), train_spec,
                                                          eval_spec, clock=FakeClock()))
    records = (tmp_path / "eval" / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["global_step"] for line in records] == [32]


def test_the_end_record_tells_whether_more_training_may_come(tmp_path):
    _train(tmp_path, steps=4, save_steps=2, keep=5)
    assert (tmp_path / "final").exists()
    from learnrun.model_dir import checkpoints as ckpt

    assert ckpt.training_ended_with(str(tmp_path), str(tmp_path / "ckpt-4"), 4)
    # reached its own limit 4: an evaluator waiting for step 8 keeps waiting for more
    assert not ckpt.training_ended_with(str(tmp_path), str(tmp_path / "ckpt-4"), 8)
    assert not ckpt.training_ended_with(str(tmp_path), str(tmp_path / "ckpt-2"), 4)
