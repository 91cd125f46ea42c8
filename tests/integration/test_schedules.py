"""Every local Experiment schedule, end to end through ``learnrun.run`` on the real Estimator.

A tiny torch MLP is trained on CPU for a few steps; each test checks what lands in
``model_dir``: the checkpoint index, ``results.jsonl`` of each evaluation, TensorBoard events
(read back with tensorboard's EventAccumulator) and exports (reloaded with
``learnrun.export.load_export`` and compared with ``Estimator.predict``).
"""

from __future__ import annotations

import json
import os
import re

import pytest
import torch

import learnrun
import learnrun.export
from learnrun.estimator.estimator import Estimator
from learnrun.estimator.spec import EstimatorSpec
from learnrun.experiment import Experiment
from learnrun.model_dir.checkpoints import checkpoint_step, list_checkpoints
from learnrun.model_dir.eval_results import read_eval_results
from tests.helpers.data import separable_tensors

pytestmark = pytest.mark.timeout(60)

X, Y = separable_tensors(64)
EXPORT_DIR_RE = re.compile(r"^\d{10}$")


def model_fn(params, mode):
    """A 4-8-2 MLP classifier with SGD; predictions ``classes`` and ``probabilities``."""
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(module.parameters(), lr=params.get("lr", 0.1))
    return EstimatorSpec(
        module=module,
        loss_fn=torch.nn.functional.cross_entropy,
        optimizer=optimizer,
        predictions_fn=lambda out: {"classes": out.argmax(-1), "probabilities": out.softmax(-1)},
    )


def train_input_fn():
    """Endless batches of 8 (training stops at ``train_steps``)."""
    while True:
        for i in range(0, len(X), 8):
            yield X[i : i + 8], Y[i : i + 8]


def eval_input_fn():
    """Two batches of 16 (one pass)."""
    return [(X[:16], Y[:16]), (X[16:32], Y[16:32])]


def serving_input_fn():
    """Example features for the export trace (dynamic batch)."""
    return X[:2]


def make_experiment_fn(clock, **experiment_kwargs):
    """An ``experiment_fn(run_config, hparams)`` building the Experiment on the real Estimator."""
    experiment_kwargs.setdefault("train_steps", 6)
    experiment_kwargs.setdefault("eval_steps", None)
    experiment_kwargs.setdefault("eval_delay_secs", 0)
    experiment_kwargs.setdefault("continuous_eval_throttle_secs", 0)

    def experiment_fn(run_config, hparams):
        estimator = Estimator(model_fn, config=run_config, params={"lr": 0.1})
        return Experiment(
            estimator, train_input_fn, eval_input_fn, clock=clock, **experiment_kwargs
        )

    return experiment_fn


def run_config(tmp_path, name="model", **kwargs):
    kwargs.setdefault("save_checkpoints_steps", 3)
    kwargs.setdefault("tf_random_seed", 1)
    kwargs.setdefault("log_step_count_steps", 1)
    kwargs.setdefault("save_summary_steps", 1)
    return learnrun.RunConfig(model_dir=str(tmp_path / name), **kwargs)


def run(experiment_fn, config, schedule=None):
    return learnrun.run(experiment_fn, run_config=config, schedule=schedule)


# -- readers ------------------------------------------------------------------------------------
def checkpoint_steps(model_dir) -> list[int]:
    """Steps of the checkpoints listed in ``model_dir/checkpoint`` (oldest first)."""
    assert os.path.isfile(os.path.join(model_dir, "checkpoint"))
    return [info.step for info in list_checkpoints(str(model_dir))]


def scalar_steps(logdir, tag) -> list[int]:
    """Steps at which TensorBoard scalar ``tag`` was written under ``logdir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(logdir))
    accumulator.Reload()
    if tag not in accumulator.Tags()["scalars"]:
        return []
    return [event.step for event in accumulator.Scalars(tag)]


def exports(model_dir, strategy="Servo") -> list[str]:
    base = os.path.join(model_dir, "export", strategy)
    if not os.path.isdir(base):
        return []
    return sorted(
        os.path.join(base, name) for name in os.listdir(base) if EXPORT_DIR_RE.match(name)
    )


def assert_export_matches_predict(export_path, model_dir, checkpoint_path=None):
    """The reloaded export gives the Estimator's predictions for the same inputs."""
    predictor = learnrun.export.load_export(export_path)
    estimator = Estimator(model_fn, config=learnrun.RunConfig(model_dir=str(model_dir)))
    features = X[:5]
    expected = next(
        estimator.predict(
            lambda: [features], checkpoint_path=checkpoint_path, yield_single_examples=False
        )
    )
    got = predictor(features)
    assert set(got) == {"classes", "probabilities"}
    torch.testing.assert_close(got["probabilities"], torch.as_tensor(expected["probabilities"]))
    assert got["classes"].tolist() == expected["classes"].tolist()


def export_step(export_path) -> int:
    with open(os.path.join(export_path, "signature.json"), encoding="utf-8") as f:
        return json.load(f)["global_step"]


def export_strategy(**kwargs):
    kwargs.setdefault("exports_to_keep", None)
    return learnrun.export.make_export_strategy(serving_input_fn, **kwargs)


# -- train / evaluate ---------------------------------------------------------------------------
def test_train_writes_checkpoints_and_summaries_then_resumes(tmp_path, clock):
    config = run_config(tmp_path)
    model_dir = config.model_dir
    run(make_experiment_fn(clock, train_steps=6), config, "train")
    assert checkpoint_steps(model_dir) == [0, 3, 6]
    assert scalar_steps(model_dir, "loss") == [1, 2, 3, 4, 5, 6]
    weights_at_6 = Estimator(model_fn, config=config).get_variable_value("0.weight")

    # A second run continues from ckpt-6: steps 7..9 only, and changes the weights.
    run(make_experiment_fn(clock, train_steps=9), config, "train")
    assert checkpoint_steps(model_dir)[-1] == 9
    assert scalar_steps(model_dir, "loss") == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert not (
        Estimator(model_fn, config=config).get_variable_value("0.weight") == weights_at_6
    ).all()
    # Reaching train_steps again trains nothing.
    run(make_experiment_fn(clock, train_steps=9), config, "train")
    assert checkpoint_steps(model_dir)[-1] == 9
    assert clock.sleeps == []


def test_evaluate_latest_checkpoint_once(tmp_path, clock):
    config = run_config(tmp_path)
    run(make_experiment_fn(clock), config, "train")
    result = run(make_experiment_fn(clock), config, "evaluate")
    assert result["global_step"] == 6
    assert set(result) >= {"loss", "global_step"}
    records = read_eval_results(os.path.join(config.model_dir, "eval_one_pass"))
    assert [(r["global_step"], checkpoint_step(r["checkpoint_path"])) for r in records] == [(6, 6)]
    assert records[0]["loss"] == pytest.approx(result["loss"])
    assert scalar_steps(os.path.join(config.model_dir, "eval_one_pass"), "loss") == [6]
    assert exports(config.model_dir) == []


def test_evaluate_without_checkpoint_raises_not_fitted(tmp_path, clock):
    config = run_config(tmp_path)
    with pytest.raises(learnrun.errors.NotFittedError, match="Couldn't find trained model"):
        run(make_experiment_fn(clock), config, "evaluate")


# -- train_and_evaluate -------------------------------------------------------------------------
def test_train_and_evaluate_with_min_eval_frequency(tmp_path, clock):
    config = run_config(tmp_path)
    fn = make_experiment_fn(
        clock, min_eval_frequency=2, check_interval_secs=None, export_strategies=export_strategy()
    )
    eval_result, export_results = run(fn, config, "train_and_evaluate")
    model_dir = config.model_dir
    eval_dir = os.path.join(model_dir, "eval")
    steps = [r["global_step"] for r in read_eval_results(eval_dir)]
    # The ValidationMonitor checks at steps 2 and 4 (every 2 steps) and evaluates the newest
    # checkpoint then (ckpt-0, ckpt-3); the final evaluation after training takes ckpt-6.
    assert steps == [0, 3, 6] and eval_result["global_step"] == 6
    assert scalar_steps(eval_dir, "loss") == [0, 3, 6]
    assert scalar_steps(model_dir, "loss") == [1, 2, 3, 4, 5, 6]
    (export_path,) = export_results
    assert exports(model_dir) == [export_path]
    assert export_step(export_path) == 6
    assert_export_matches_predict(export_path, model_dir)


def test_train_and_evaluate_checkpoint_and_export(tmp_path, clock):
    """Spec 8.2 #34: save every 3 steps, train_steps=8 -> eval+export 4 times.

    TF saved after steps 1, 4, 7 and 8; learnrun's saver writes the initial checkpoint at step
    0 (before the first update), then 3, 6 and the final 8: the same four saves.
    """
    config = run_config(tmp_path, save_checkpoints_steps=3)
    fn = make_experiment_fn(
        clock, train_steps=8, checkpoint_and_export=True, export_strategies=export_strategy()
    )
    eval_result, export_results = run(fn, config, "train_and_evaluate")
    model_dir = config.model_dir
    assert checkpoint_steps(model_dir) == [0, 3, 6, 8]
    eval_dir = os.path.join(model_dir, "eval_intermediate_export")
    assert [r["global_step"] for r in read_eval_results(eval_dir)] == [0, 3, 6, 8]
    assert scalar_steps(eval_dir, "loss") == [0, 3, 6, 8]
    assert not os.path.exists(os.path.join(model_dir, "eval"))  # no extra final evaluation
    assert [export_step(p) for p in exports(model_dir)] == [0, 3, 6, 8]
    assert eval_result["global_step"] == 8
    assert export_results == exports(model_dir)[-1:]
    assert_export_matches_predict(export_results[0], model_dir)


def test_local_run_evaluates_only_at_the_end(tmp_path, clock):
    config = run_config(tmp_path)
    eval_result, export_results = run(
        make_experiment_fn(clock, export_strategies=export_strategy()), config, "local_run"
    )
    records = read_eval_results(os.path.join(config.model_dir, "eval"))
    assert [r["global_step"] for r in records] == [6]
    assert eval_result["global_step"] == 6
    assert [export_step(p) for p in export_results] == [6]


def test_default_schedule_without_tf_config_is_train_and_evaluate(tmp_path, clock):
    config = run_config(tmp_path, environ={})
    eval_result, export_results = run(make_experiment_fn(clock, min_eval_frequency=0), config)
    assert eval_result["global_step"] == 6
    assert export_results == []
    records = read_eval_results(os.path.join(config.model_dir, "eval"))
    assert [r["global_step"] for r in records] == [6]


# -- continuous schedules -----------------------------------------------------------------------
def test_continuous_eval_evaluates_each_checkpoint_once(tmp_path, clock):
    config = run_config(tmp_path)
    run(make_experiment_fn(clock, train_steps=3), config, "train")
    trainer = Estimator(model_fn, config=config, params={"lr": 0.1})

    def on_sleep(secs):
        # The second throttle sleep is "while" a trainer writes the next checkpoint.
        if len(clock.sleeps) == 2:
            trainer.train(train_input_fn, max_steps=6)

    clock.on_sleep = on_sleep
    fn = make_experiment_fn(
        clock, train_steps=6, continuous_eval_throttle_secs=10, export_strategies=export_strategy()
    )
    assert run(fn, config, "continuous_eval") is None
    eval_dir = os.path.join(config.model_dir, "eval_continuous")
    records = read_eval_results(eval_dir)
    assert [(r["global_step"], checkpoint_step(r["checkpoint_path"])) for r in records] == [
        (3, 3),
        (6, 6),
    ]
    assert scalar_steps(eval_dir, "loss") == [3, 6]
    assert [export_step(p) for p in exports(config.model_dir)] == [3, 6]
    # No start delay (eval_delay_secs=0); a throttle wait after every pass, including the one
    # that found no new checkpoint; the loop ends once a result reaches train_steps.
    # no throttle sleep after the final checkpoint (recorded in model_dir/final): it exits at once
    assert clock.sleeps == [10, 10]


def test_restarted_continuous_eval_skips_recorded_checkpoints(tmp_path, clock):
    config = run_config(tmp_path)
    run(make_experiment_fn(clock, train_steps=6), config, "train")
    fn = make_experiment_fn(clock, train_steps=6, continuous_eval_throttle_secs=10,
                            export_strategies=export_strategy())
    assert run(fn, config, "continuous_eval") is None
    eval_dir = os.path.join(config.model_dir, "eval_continuous")
    assert [r["global_step"] for r in read_eval_results(eval_dir)] == [6]
    assert len(exports(config.model_dir)) == 1
    # The evaluator restarts: the latest checkpoint is already recorded, so it is neither
    # evaluated nor exported again, and the recorded global_step still ends the loop.
    clock.sleeps.clear()
    assert run(fn, config, "continuous_eval") is None
    assert [r["global_step"] for r in read_eval_results(eval_dir)] == [6]
    assert len(exports(config.model_dir)) == 1
    # the recorded checkpoint is the one training ended with (model_dir/final): no throttle sleep
    assert clock.sleeps == []


def test_continuous_eval_on_train_data(tmp_path, clock):
    config = run_config(tmp_path)
    run(make_experiment_fn(clock), config, "train")
    fn = make_experiment_fn(clock, eval_steps=2, export_strategies=export_strategy())
    assert run(fn, config, "continuous_eval_on_train_data") is None
    records = read_eval_results(os.path.join(config.model_dir, "eval_continuous_on_train_data"))
    assert [r["global_step"] for r in records] == [6]
    assert exports(config.model_dir) == []  # never exports


def test_continuous_train_and_eval(tmp_path, clock):
    config = run_config(tmp_path)
    fn = make_experiment_fn(clock, train_steps_per_iteration=2, export_strategies=export_strategy())
    eval_result, export_results = run(fn, config, "continuous_train_and_eval")
    records = read_eval_results(os.path.join(config.model_dir, "eval_one_pass"))
    assert [r["global_step"] for r in records] == [2, 4, 6]
    assert eval_result["global_step"] == 6
    assert [export_step(p) for p in exports(config.model_dir)] == [2, 4, 6]
    assert export_results == exports(config.model_dir)[-1:]
    assert checkpoint_steps(config.model_dir)[-1] == 6


def test_test_schedule_smoke(tmp_path, clock):
    config = run_config(tmp_path)
    result = run(make_experiment_fn(clock, export_strategies=export_strategy()), config, "test")
    assert result["global_step"] == 1
    assert checkpoint_steps(config.model_dir)[-1] == 1
    records = read_eval_results(os.path.join(config.model_dir, "eval_one_pass"))
    assert [r["global_step"] for r in records] == [1]
    (export_path,) = exports(config.model_dir)
    assert_export_matches_predict(export_path, config.model_dir)
