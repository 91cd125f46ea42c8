"""Failures on the real path: launch() -> learnrun run -> Experiment -> Estimator -> Strategy.

Each test kills one task of a cluster running ``tests/helpers/experiments.py`` and checks how every other
task ends: parameter-server training survives a dead worker; a dead ps or chief ends every
process within a bounded time with a non-zero exit and a message naming the failed task; a
dead member of a synchronous group ends the group. ``stop_on_failure=False`` keeps the
launcher from stopping the others, so that they must end by themselves.
"""

from __future__ import annotations

import json

import pytest

from learnrun.model_dir.checkpoints import checkpoint_step, latest_checkpoint
from tests.helpers.distributed import launch_experiment

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(90)]


def test_ps_killed_worker_does_not_stop_training(tmp_path):
    steps = 40
    code, out, _ = launch_experiment(tmp_path, num_ps=1, num_workers=1, evaluator=True,
                                     save_steps=20, LRTEST_TRAIN_STEPS=str(steps),
                                     LRTEST_DIE_AT="worker:0@3")
    assert code == 0, out.text  # a worker's death is tolerated with parameter servers
    assert out.exit_codes() == {"ps:0": 0, "chief:0": 0, "worker:0": 137, "evaluator:0": 0}, \
        out.text
    assert "worker:0 exited with code 137; parameter-server training goes on" in out.text
    assert "task worker:0 has been silent" in out.task_text("ps:0")
    assert checkpoint_step(latest_checkpoint(str(tmp_path))) == steps
    assert out.values("chief:0", "STOP") == [steps]
    records = [json.loads(line) for line in
               (tmp_path / "eval_continuous" / "results.jsonl").read_text().splitlines()]
    assert records[-1]["global_step"] == steps


def test_ps_killed_ps_ends_every_process_naming_it(tmp_path):
    code, out, secs = launch_experiment(tmp_path, num_ps=1, num_workers=1, dist_timeout=10,
                                        stop_on_failure=False, timeout=60,
                                        LRTEST_TRAIN_STEPS="100000", LRTEST_DIE_AT="ps:0@5")
    codes = out.exit_codes()
    assert codes["ps:0"] == 137, out.text
    assert codes["chief:0"] != 0 and codes["worker:0"] != 0, out.text
    assert code == 137  # the first failure
    for task in ("chief:0", "worker:0"):
        assert "the call to ps:0 failed" in out.task_text(task), out.text
    assert secs < 50, out.text


def test_ps_killed_chief_ends_every_process_naming_it(tmp_path):
    # 10 s, not less: the ps waits that long for the chief's first parameters too, and a
    # chief starting on a loaded 2-core machine can take longer than 5 s to send them
    code, out, secs = launch_experiment(tmp_path, num_ps=1, num_workers=1, dist_timeout=10,
                                        stop_on_failure=False, timeout=60,
                                        LRTEST_TRAIN_STEPS="100000", LRTEST_DIE_AT="chief:0@3",
                                        # the worker trains alone for dist_timeout (thousands
                                        # of asynchronous steps): at 0.05 it diverges first
                                        LRTEST_LR="0.005")
    codes = out.exit_codes()
    assert codes["chief:0"] == 137, out.text
    assert codes["ps:0"] != 0 and codes["worker:0"] != 0, out.text
    assert "task chief:0 has been silent" in out.task_text("ps:0"), out.text
    # The ps answers STOP_FAILED for a grace period: the worker learns it was the chief.
    assert "reports that task chief:0 failed or went silent" in out.task_text("worker:0"), \
        out.text
    assert secs < 50, out.text


def test_sync_killed_member_ends_the_group(tmp_path):
    code, out, secs = launch_experiment(tmp_path, num_workers=1, dist_timeout=10,
                                        stop_on_failure=False, timeout=60,
                                        LRTEST_TRAIN_STEPS="100000", LRTEST_DIE_AT="worker:0@3")
    codes = out.exit_codes()
    assert codes == {"worker:0": 137, "chief:0": codes["chief:0"]} and codes["chief:0"] != 0, \
        out.text
    assert "A trainer has probably died" in out.task_text("chief:0"), out.text
    assert secs < 50, out.text
