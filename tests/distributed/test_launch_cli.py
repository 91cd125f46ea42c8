"""`learnrun launch` as a user runs it: a subprocess that forwards SIGTERM to every task."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from learnrun.errors import PREEMPTED_EXIT_CODE
from learnrun.model_dir.checkpoints import checkpoint_step, latest_checkpoint
from tests.helpers import experiments
from tests.helpers.distributed import EXPERIMENT, cluster_env

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(120)]


def test_sigterm_to_the_launcher_is_forwarded_and_the_chief_saves(tmp_path: Path):
    model_dir = tmp_path / "model"
    env = cluster_env(LRTEST_TRAIN_STEPS="100000")
    cmd = [sys.executable, "-m", "learnrun", "launch", "--workers", "1", "--grace-secs", "30",
           f"{EXPERIMENT}:experiment_fn", "--model-dir", str(model_dir),
           *experiments.config_args(timeout=30)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines: list[str] = []
    both_training = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            steps = {task for task in ("chief:0", "worker:0")
                     if any(re.match(rf"^\[{task}\] STEP [3-9]", seen) for seen in lines[-50:])}
            if len(steps) == 2:
                both_training.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert both_training.wait(90), "\n".join(lines)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    reader.join(timeout=10)
    text = "\n".join(lines)
    assert code == PREEMPTED_EXIT_CODE, text
    assert "[launch] got signal 15; forwarding it to every task." in text
    saved = [int(m.group(1)) for line in lines if (m := re.match(r"^\[chief:0\] SAVED (\d+)$", line))]
    assert len(saved) == 2 and saved[0] == 0, text  # at creation, then once on preemption
    assert not any(line.startswith("[worker:0] SAVED") for line in lines)  # only the chief saves
    assert checkpoint_step(latest_checkpoint(str(model_dir))) == saved[1]
    stops = {task: [int(m.group(1)) for line in lines
                    if (m := re.match(rf"^\[{task}\] STOP (\d+)$", line))]
             for task in ("chief:0", "worker:0")}
    assert stops["chief:0"] == stops["worker:0"] == [saved[1]], text  # one agreed stop step
