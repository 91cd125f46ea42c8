"""SIGTERM saves and exits 143; SIGKILL during a checkpoint save restarts from the previous one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from learnrun.errors import PREEMPTED_EXIT_CODE
from learnrun.estimator import checkpoint as ckpt

SCRIPT = textwrap.dedent("""
    import os, signal, sys, logging
    import torch
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO)
    from learnrun.estimator.estimator import Estimator
    from learnrun.estimator.hooks import SessionRunHook
    from learnrun.estimator.spec import EstimatorSpec
    from learnrun.run_config import RunConfig
    from learnrun.estimator import checkpoint as ckpt

    model_dir, mode = sys.argv[1], sys.argv[2]

    def model_fn():
        m = torch.nn.Linear(3, 1)
        return EstimatorSpec(module=m, loss_fn=torch.nn.functional.mse_loss,
                             optimizer=torch.optim.SGD(m.parameters(), lr=0.01))

    def input_fn():
        g = torch.Generator().manual_seed(0)
        for _ in range(1000):
            x = torch.randn(4, 3, generator=g)
            yield x, x.sum(1, keepdim=True)

    class SignalAt(SessionRunHook):
        def after_run(self, run_context, run_values):
            if mode == "sigterm" and run_values.global_step == 7:
                os.kill(os.getpid(), signal.SIGTERM)

    if mode == "sigkill":
        original = ckpt.CheckpointManager._write_files
        def write_then_die(self, tmp_dir, step, *args, **kwargs):
            original(self, tmp_dir, step, *args, **kwargs)
            if step == 10:
                os.kill(os.getpid(), signal.SIGKILL)
        ckpt.CheckpointManager._write_files = write_then_die

    est = Estimator(model_fn, config=RunConfig(model_dir=model_dir, save_checkpoints_steps=5,
                                               tf_random_seed=1))
    est.train(input_fn, hooks=[SignalAt()], max_steps=20)
    print("FINISHED", ckpt.checkpoint_step(est.latest_checkpoint()))
""")


def run_script(tmp_path, mode):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(script), str(tmp_path / "model"), mode],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.timeout(240)
def test_sigterm_saves_checkpoint_and_exits_143(tmp_path):
    proc = run_script(tmp_path, "sigterm")
    assert proc.returncode == PREEMPTED_EXIT_CODE, proc.stderr[-2000:]
    assert "Training was preempted by SIGTERM at global step 7" in proc.stderr
    model_dir = str(tmp_path / "model")
    assert ckpt.checkpoint_step(ckpt.latest_checkpoint(model_dir)) == 7
    # the job is requeued: it resumes at step 7 and finishes
    proc = run_script(tmp_path, "none")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Restoring parameters from" in proc.stderr and "ckpt-7" in proc.stderr
    assert "FINISHED 20" in proc.stdout


@pytest.mark.timeout(240)
def test_sigkill_during_save_restarts_from_previous_checkpoint(tmp_path):
    proc = run_script(tmp_path, "sigkill")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    model_dir = str(tmp_path / "model")
    assert ckpt.checkpoint_step(ckpt.latest_checkpoint(model_dir)) == 5
    assert any(name.startswith("tmp-") for name in os.listdir(model_dir))
    proc = run_script(tmp_path, "none")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ckpt-5" in proc.stderr and "FINISHED 20" in proc.stdout
    assert not any(name.startswith("tmp-") for name in os.listdir(model_dir))
    assert [c.step for c in ckpt.list_checkpoints(model_dir)][-3:] == [10, 15, 20]
