"""Asynchronous parameter servers (RPC) with real processes on 127.0.0.1."""

from __future__ import annotations

import os
import signal

import pytest
from _helpers import run_cluster

from learnrun.estimator.checkpoint import checkpoint_step, latest_checkpoint

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(90)]


def test_killed_worker_does_not_stop_training(tmp_path):
    cluster, code, out, _ = run_cluster(tmp_path, "--steps", "60", "--timeout", "20",
                                        "--die-at", "worker:1@3", num_ps=1, num_workers=2)
    assert cluster.codes["worker:1"] == 137, out.text
    assert {k: v for k, v in cluster.codes.items() if k != "worker:1"} == {
        "ps:0": 0, "chief:0": 0, "worker:0": 0}, out.text
    assert code == 0  # a worker's death is tolerated with parameter servers
    assert checkpoint_step(latest_checkpoint(str(tmp_path))) >= 60
    assert "presumed dead" in out.text


def test_killed_ps_ends_every_process(tmp_path):
    killed = []

    def kill_ps(line, cluster):
        if line.startswith("[chief:0] STEP ") and int(line.split()[-1]) >= 5 and not killed:
            killed.append(line)
            os.kill(cluster.processes["ps:0"].pid, signal.SIGKILL)

    cluster, code, out, secs = run_cluster(
        tmp_path, "--steps", "100000", "--timeout", "20", num_ps=1, num_workers=1,
        stop_on_failure=False, on_line=kill_ps)
    assert cluster.codes["ps:0"] == 137
    assert cluster.codes["chief:0"] == 1 and cluster.codes["worker:0"] == 1, out.text
    assert "FAILED chief:0: DistributedError" in out.text and "the call to ps:0 failed" in out.text
    assert secs < 40


def test_killed_chief_ends_every_process(tmp_path):
    cluster, code, out, secs = run_cluster(
        tmp_path, "--steps", "100000", "--timeout", "10", "--die-at", "chief:0@3",
        num_ps=1, num_workers=1, stop_on_failure=False)
    assert cluster.codes["chief:0"] == 137
    assert cluster.codes["ps:0"] == 1 and cluster.codes["worker:0"] == 1, out.text
    assert "task chief:0 has been silent" in out.text
    assert secs < 45
