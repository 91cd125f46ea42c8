"""The real path on real clusters: learnrun launch -> learnrun run -> Experiment -> Estimator -> Strategy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import learnrun
from learnrun.model_dir.checkpoints import (
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
)
from tests.conftest import SYNC_REFERENCE_ARGS, SYNC_REFERENCE_STEPS
from tests.helpers import experiments
from tests.helpers.distributed import Collector, launch_experiment

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(120)]

# 2 DDP ranks each take the mean loss over half of the global batch; DDP averages their
# gradients, which equals the gradient of the global-batch mean up to float32 summation order.
RTOL, ATOL = 1e-5, 1e-6


def _single_process(tmp_path: Path, steps: int) -> learnrun.Estimator:
    config = learnrun.RunConfig(model_dir=str(tmp_path / "single"), tf_random_seed=0,
                                save_checkpoints_steps=10**9, save_checkpoints_secs=None,
                                save_summary_steps=10**9, log_step_count_steps=10**9,
                                device="cpu")
    est = learnrun.Estimator(experiments.model_fn, config=config)
    hook = experiments.TestHook()
    est.train(experiments.train_input_fn, hooks=[hook], max_steps=steps)
    return est


def _losses(model_dir: Path, task: str) -> list[float]:
    return json.loads((model_dir / f"losses-{task}.json").read_text())["losses"]


@pytest.mark.parametrize("roles_from", ["tf_config", "torchrun"])
def test_sync_chief_and_worker_equal_single_process(tmp_path, roles_from, sync_reference):
    """TF_CONFIG and torchrun-style RANK/WORLD_SIZE/MASTER_* give the same roles and results.

    The TF_CONFIG cluster is the session's ``sync_reference`` run; the torchrun one has the
    same settings and ends bit-identical to it."""
    steps = SYNC_REFERENCE_STEPS
    if roles_from == "tf_config":
        model_dir, out = sync_reference.model_dir, sync_reference.out
    else:
        model_dir = tmp_path / "cluster"
        code, out, _ = launch_experiment(model_dir, roles_from=roles_from,
                                         **SYNC_REFERENCE_ARGS)
        assert code == 0, out.text
        want = _weights(sync_reference.model_dir)
        for name, value in _weights(model_dir).items():
            assert torch.equal(value, want[name]), name
    assert out.values("chief:0", "STOP") == [steps] and out.values("worker:0", "STOP") == [steps]
    # TF saves at creation, every save_checkpoints_steps (3) and at the end
    assert out.values("chief:0", "SAVED") == [0, 3, 6, 9, 12, 15, steps]
    assert out.values("worker:0", "SAVED") == []  # only the chief saves
    single = _single_process(tmp_path, steps)
    reference = json.loads((tmp_path / "single" / "losses-local:0.json").read_text())["losses"]
    mean = np.mean([_losses(model_dir, "chief:0"), _losses(model_dir, "worker:0")], axis=0)
    np.testing.assert_allclose(mean, reference, rtol=RTOL, atol=ATOL)
    path = latest_checkpoint(str(model_dir))
    assert checkpoint_step(path) == steps
    want = load_checkpoint(single.latest_checkpoint()).weights
    got = load_checkpoint(path).weights
    assert sorted(got) == sorted(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=RTOL, atol=ATOL)
    # the chief's local_run evaluated alone (no collective) after training
    records = (model_dir / "eval" / "results.jsonl").read_text().splitlines()
    assert json.loads(records[-1])["global_step"] == steps


PS_STEPS = 30


@pytest.fixture(scope="module")
def ps_run(tmp_path_factory) -> tuple[int, Collector, Path]:
    """A ps, a chief, a worker and an evaluator trained to PS_STEPS: (exit code, output, model
    directory). Tests must not write to the directory (copy it first)."""
    model_dir = tmp_path_factory.mktemp("ps-run") / "model"
    code, out, _ = launch_experiment(model_dir, num_ps=1, num_workers=1, evaluator=True,
                                     save_steps=10, LRTEST_TRAIN_STEPS=str(PS_STEPS))
    return code, out, model_dir


def test_ps_chief_worker_and_evaluator_train_to_exactly_train_steps(ps_run):
    steps = PS_STEPS
    code, out, model_dir = ps_run
    assert code == 0, out.text
    assert out.exit_codes() == {"ps:0": 0, "chief:0": 0, "worker:0": 0, "evaluator:0": 0}
    assert "could not say goodbye" not in out.text, out.text  # a normal end looks normal
    assert out.values("chief:0", "STEP") and out.values("worker:0", "STEP")
    # The ps refuses pushes past the chief's last step: no overshoot (31 of 30) from the
    # trainers' concurrent pushes, whichever trainer pushes last.
    assert checkpoint_step(latest_checkpoint(str(model_dir))) == steps
    assert max(out.values("chief:0", "STEP") + out.values("worker:0", "STEP")) == steps
    assert out.values("chief:0", "STOP") == out.values("worker:0", "STOP") == [steps]
    records = [json.loads(line) for line in
               (model_dir / "eval_continuous" / "results.jsonl").read_text().splitlines()]
    assert records and records[-1]["global_step"] == steps
    paths = [r["checkpoint_path"] for r in records]
    assert len(paths) == len(set(paths))  # each checkpoint evaluated once


def test_two_ps_shards_and_a_worker_waiting_for_the_global_step(tmp_path):
    """2 shards; the worker's GlobalStepWaiterHook (delay_workers_by_global_step's hook, with a
    small wait_until_step) reads the shared global step from ps 0 before its first step."""
    code, out, _ = launch_experiment(tmp_path, num_ps=2, num_workers=1, save_steps=100,
                                     LRTEST_TRAIN_STEPS="20", LRTEST_WAIT_FOR="worker:0@12")
    assert code == 0, out.text
    assert out.exit_codes() == {"ps:0": 0, "ps:1": 0, "chief:0": 0, "worker:0": 0}, out.text
    assert out.values("chief:0", "STEP")[:12] == list(range(1, 13))  # the chief alone
    worker_steps = out.values("worker:0", "STEP")
    assert worker_steps and worker_steps[0] > 12, out.text
    ckpt = load_checkpoint(latest_checkpoint(str(tmp_path)))
    assert sorted(ckpt.weights) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    # ps 0 (the global step's owner) counted 20 pushes and the final save names step 20 even
    # when the worker's push, not the chief's, reached it; ps 1 may still be applying that
    # push when the chief gathers the shards, but neither counts one past train_steps
    versions = ckpt.state["optimizer"]["learnrun_ps_versions"]
    assert versions[0] == 20 and versions[1] in (19, 20), versions
    assert checkpoint_step(latest_checkpoint(str(tmp_path))) == 20


@pytest.mark.parametrize("num_ps", [0, 1])
def test_sigterm_to_a_worker_stops_every_trainer_and_the_chief_saves_once(tmp_path, num_ps):
    # grace_secs: time the launcher gives the others to stop by themselves after the first
    # 143 before it signals them; generous, so a loaded CI machine does not cut the save short.
    code, out, _ = launch_experiment(tmp_path, num_ps=num_ps, num_workers=1, grace_secs=20.0,
                                     LRTEST_TRAIN_STEPS="100000", LRTEST_SIGTERM_AT="worker:0@3")
    assert code == 143, out.text
    for task in ("chief:0", "worker:0"):
        assert "preempted" in out.text.split(f"[{task}] learnrun: Training was")[1][:30] or \
            f"[{task}] learnrun: Training was preempted" in out.text, out.text
    saved = out.values("chief:0", "SAVED")
    assert saved[0] == 0 and len(saved) == 2, out.text  # creation save + one preemption save
    assert out.values("worker:0", "SAVED") == []
    assert checkpoint_step(latest_checkpoint(str(tmp_path))) == saved[1]
    if num_ps:
        assert "[launch] ps:0 failed" not in out.text, out.text
    else:  # every rank agreed on one stop step
        assert out.values("chief:0", "STOP") == out.values("worker:0", "STOP") == [saved[1]]


def test_sync_evaluate_on_every_trainer_reduces_each_shard_once(tmp_path):
    single = _single_process(tmp_path, 4)
    path = single.latest_checkpoint()
    want = single.evaluate(experiments.eval_input_fn, checkpoint_path=path)
    model_dir = tmp_path / "single"
    code, out, _ = launch_experiment(model_dir, num_workers=1, extra_args=("--schedule", "evaluate"))
    assert code == 0, out.text
    records = [json.loads(line) for line in
               (model_dir / "eval_one_pass" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 1  # written by the chief only
    assert records[0]["global_step"] == 4
    # each rank evaluated 4 of the 8 batches; the mean over all 8 equals one process's
    assert records[0]["loss"] == pytest.approx(want["loss"], rel=RTOL)


def test_input_running_out_ends_every_role_with_exit_0_and_the_final_checkpoint_evaluated(
        tmp_path):
    """ps, chief, worker and evaluator; train_steps None and one epoch: the evaluator stops
    after the final checkpoint (model_dir/final), the ps task exits 0."""
    code, out, _ = launch_experiment(tmp_path, num_ps=1, num_workers=1, evaluator=True,
                                     LRTEST_TRAIN_STEPS="none", LRTEST_TRAIN_EPOCHS="1")
    assert code == 0, out.text
    assert out.exit_codes() == {"ps:0": 0, "chief:0": 0, "worker:0": 0, "evaluator:0": 0}
    final = json.loads((tmp_path / "final").read_text())
    assert final["checkpoint"] == Path(latest_checkpoint(str(tmp_path))).name
    records = [json.loads(line) for line in
               (tmp_path / "eval_continuous" / "results.jsonl").read_text().splitlines()]
    assert records[-1]["global_step"] == final["step"]


def _weights(model_dir: Path) -> dict:
    return load_checkpoint(latest_checkpoint(str(model_dir))).weights


def test_sync_restart_after_a_kill_resumes_from_the_latest_checkpoint_bit_identical(
        tmp_path, sync_reference):
    """The launcher restarts the cluster after a worker's death; it resumes from the latest
    checkpoint. Every trainer's input position is in the checkpoint (trainer-<rank>.pt): the
    worker killed at step 7 continues its shard where the checkpoint was, and the run ends
    bit-identical to the uninterrupted one (``sync_reference``: the same cluster and saves)."""
    model_dir = tmp_path / "killed"
    code, out, _ = launch_experiment(model_dir, max_restarts=1, LRTEST_DIE_AT="worker:0@7",
                                     LRTEST_DIE_ONCE="1", **SYNC_REFERENCE_ARGS)
    assert code == 0, out.text
    assert "restarting the cluster (attempt 2 of 2)" in out.text, out.text
    restored = out.values("chief:0", "RESTORED")
    assert restored[0] == 0 and restored[-1] == 6, out.text
    path = latest_checkpoint(str(model_dir))
    assert checkpoint_step(path) == SYNC_REFERENCE_STEPS
    assert sorted(p.name for p in Path(path).glob("trainer-*.pt")) == ["trainer-0.pt",
                                                                        "trainer-1.pt"]
    want, got = _weights(sync_reference.model_dir), _weights(model_dir)
    for name in want:
        assert torch.equal(got[name], want[name]), name


def test_sync_cluster_resumed_with_another_size_warns_about_input_positions(tmp_path,
                                                                           sync_reference):
    # a copy of a 2-trainer cluster's model directory, resumed by 3 trainers
    shutil.copytree(sync_reference.model_dir, tmp_path / "model")
    steps = SYNC_REFERENCE_STEPS + 2
    code, out, _ = launch_experiment(tmp_path / "model", num_workers=2,
                                     LRTEST_TRAIN_STEPS=str(steps))
    assert code == 0, out.text
    assert "holds the input positions of 2 trainers, but this run has 3" in out.text, out.text
    assert checkpoint_step(latest_checkpoint(str(tmp_path / "model"))) == steps


@pytest.mark.parametrize("policy", ["rollback", "stop"])
def test_a_nan_loss_on_one_trainer_is_one_decision_for_every_trainer(tmp_path, policy):
    """Only the worker's 5th loss is NaN (DDP spreads its gradient to the chief's weights):
    every trainer rolls back to ckpt-3 (or stops) at the same step; no NaN is ever saved."""
    code, out, _ = launch_experiment(tmp_path, num_workers=1, save_steps=3, dist_timeout=10,
                                     extra_args=("--config", f"on_nan_loss='{policy}'"),
                                     LRTEST_TRAIN_STEPS="12", LRTEST_NAN_AT="worker:0@5")
    assert code == 0, out.text
    for task in ("chief:0", "worker:0"):
        text = out.task_text(task)
        if policy == "rollback":
            assert "Rolled back to checkpoint" in text and "ckpt-3 (step 3)" in text, text
        else:
            assert "on_nan_loss='stop'" in text, text
    steps = [info.step for info in list_checkpoints(str(tmp_path))]
    assert steps[-1] == (12 if policy == "rollback" else 3), steps
    for info in list_checkpoints(str(tmp_path)):
        weights = load_checkpoint(info.path).weights
        assert all(torch.isfinite(t).all() for t in weights.values()), info.path


def test_ps_cluster_restarted_after_training_ended_exits_0_at_once(tmp_path, ps_run):
    """The trainers find train_steps already saved: they still tell the ps that training is
    over (found by the fault suite: the ps waited for them until the launcher's timeout)."""
    code, out, trained = ps_run
    assert code == 0, out.text
    shutil.copytree(trained, tmp_path / "model")  # a copy of a ps cluster's finished run
    code, out, secs = launch_experiment(tmp_path / "model", num_ps=1, num_workers=1,
                                        save_steps=10, timeout=60,
                                        LRTEST_TRAIN_STEPS=str(PS_STEPS))
    assert code == 0, out.text
    assert out.exit_codes() == {"ps:0": 0, "chief:0": 0, "worker:0": 0}, out.text
    assert checkpoint_step(latest_checkpoint(str(tmp_path / "model"))) == PS_STEPS
