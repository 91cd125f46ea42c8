"""SIGTERM saves and exits 143; SIGKILL during a checkpoint save restarts from the previous one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from learnrun.errors import PREEMPTED_EXIT_CODE
from learnrun.model_dir import checkpoints as ckpt

# What both training scripts start with: imports, arguments and a one-layer model_fn.
PREAMBLE = textwrap.dedent("""
    import os, signal, sys, threading, time, logging
    import torch
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO)
    from learnrun.estimator.estimator import Estimator
    from learnrun.hooks import SessionRunHook
    from learnrun.estimator.spec import EstimatorSpec
    from learnrun.config.run_config import RunConfig
    from learnrun.model_dir import checkpoints as ckpt

    model_dir, mode = sys.argv[1], sys.argv[2]

    def model_fn():
        m = torch.nn.Linear(3, 1)
        return EstimatorSpec(module=m, loss_fn=torch.nn.functional.mse_loss,
                             optimizer=torch.optim.SGD(m.parameters(), lr=0.01))
""")

SCRIPT = PREAMBLE + textwrap.dedent("""

    def input_fn():
        g = torch.Generator().manual_seed(0)
        for _ in range(1000):
            x = torch.randn(4, 3, generator=g)
            yield x, x.sum(1, keepdim=True)

    class SignalAt(SessionRunHook):
        def after_run(self, run_context, run_values):
            if run_values.global_step != 7:
                return
            if mode == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            elif mode == "sigint":
                os.kill(os.getpid(), signal.SIGINT)
            elif mode == "sigint-twice":
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)

    if mode == "sigkill":  # die with ckpt-10's files written, before its meta.json
        original = ckpt.CheckpointManager._write_parts
        def write_then_die(self, path, parts):
            result = original(self, path, parts)
            if path.endswith(os.path.join("ckpt-10", "state.pt")):
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        ckpt.CheckpointManager._write_parts = write_then_die

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
def test_sigterm_saves_checkpoint_and_exits_143(tmp_path, model_dir):
    proc = run_script(tmp_path, "sigterm")
    assert proc.returncode == PREEMPTED_EXIT_CODE, proc.stderr[-2000:]
    assert "Training was preempted by SIGTERM at global step 7" in proc.stderr
    assert ckpt.checkpoint_step(ckpt.latest_checkpoint(model_dir)) == 7
    # the job is requeued: it resumes at step 7 and finishes
    proc = run_script(tmp_path, "none")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Restoring parameters from" in proc.stderr and "ckpt-7" in proc.stderr
    assert "FINISHED 20" in proc.stdout


@pytest.mark.timeout(240)
def test_sigkill_during_save_restarts_from_previous_checkpoint(tmp_path, model_dir):
    proc = run_script(tmp_path, "sigkill")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert ckpt.checkpoint_step(ckpt.latest_checkpoint(model_dir)) == 5
    assert os.path.isdir(os.path.join(model_dir, "ckpt-10"))  # uncommitted: no meta.json
    assert not os.path.exists(os.path.join(model_dir, "ckpt-10", "meta.json"))
    proc = run_script(tmp_path, "none")  # at once: the dead run's lease is taken over
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ckpt-5" in proc.stderr and "FINISHED 20" in proc.stdout
    assert "Taking over the lease" in proc.stderr
    assert not any(name.startswith("tmp-") for name in os.listdir(model_dir))
    assert "lease" not in os.listdir(model_dir)
    assert [c.step for c in ckpt.list_checkpoints(model_dir)][-3:] == [10, 15, 20]


@pytest.mark.timeout(120)
def test_first_sigint_saves_and_exits_143(tmp_path, model_dir):
    proc = run_script(tmp_path, "sigint")
    assert proc.returncode == PREEMPTED_EXIT_CODE, proc.stderr[-2000:]
    assert "Training was preempted by SIGINT at global step 7" in proc.stderr
    assert ckpt.checkpoint_step(ckpt.latest_checkpoint(model_dir)) == 7


@pytest.mark.timeout(120)
def test_second_sigint_raises_keyboard_interrupt_at_once(tmp_path, model_dir):
    proc = run_script(tmp_path, "sigint-twice")
    # An uncaught KeyboardInterrupt: CPython 3.11 re-raises SIGINT on itself (status -2),
    # 3.12 (seen on the GPU machine) exits with status 1.
    assert proc.returncode in (-signal.SIGINT, 1), proc.stderr[-2000:]
    assert "KeyboardInterrupt" in proc.stderr and "preempted" not in proc.stderr
    latest = ckpt.latest_checkpoint(model_dir)
    assert ckpt.checkpoint_step(latest) == 5  # no save on the way out; the last one loads
    assert ckpt.load_checkpoint(latest).state["global_step"] == 5


LOADER_SCRIPT = PREAMBLE + textwrap.dedent("""

    class Slow(torch.utils.data.Dataset):
        def __len__(self):
            return 4000
        def __getitem__(self, i):
            time.sleep(0.005)  # the main process mostly waits in next(): the hard case
            x = torch.full((3,), float(i % 7))
            return x, x.sum(0, keepdim=True)

    def mark_worker(worker_id):  # a user's own worker_init_fn: must still run
        open(os.path.join(os.path.dirname(model_dir), f"worker-{worker_id}"), "w").close()

    def input_fn():
        kwargs = {"worker_init_fn": mark_worker} if mode == "custom" else {}
        return torch.utils.data.DataLoader(Slow(), batch_size=4, num_workers=2, **kwargs)

    class KillGroupAt(SessionRunHook):
        def after_run(self, run_context, run_values):
            if run_values.global_step == 7:  # like a scheduler: the whole process group
                threading.Timer(0.01, os.killpg, (os.getpgid(0), signal.SIGTERM)).start()

    hooks = [KillGroupAt()] if mode != "resume" else []
    est = Estimator(model_fn, config=RunConfig(model_dir=model_dir, save_checkpoints_steps=5))
    est.train(input_fn, hooks=hooks, max_steps=12 if mode == "resume" else 400)
    print("FINISHED", est.latest_checkpoint())
""")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["auto", "custom"])
def test_sigterm_to_process_group_with_dataloader_workers(tmp_path, model_dir, mode):
    """Workers ignore SIGTERM without the user passing worker_init_fn; the user's one still runs."""
    script = tmp_path / "train_loader.py"
    script.write_text(LOADER_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script), model_dir, mode], capture_output=True,
                          text=True, timeout=120, env=env, start_new_session=True)
    assert proc.returncode == PREEMPTED_EXIT_CODE, proc.stderr[-3000:]
    assert "exited unexpectedly" not in proc.stderr and "killed by signal" not in proc.stderr
    step = ckpt.checkpoint_step(ckpt.latest_checkpoint(model_dir))
    assert step >= 7
    assert f"Training was preempted by SIGTERM at global step {step}" in proc.stderr
    if mode == "custom":
        assert {"worker-0", "worker-1"} <= set(os.listdir(tmp_path))
    else:  # the requeued job resumes from the preemption checkpoint
        proc = subprocess.run([sys.executable, str(script), model_dir, "resume"],
                              capture_output=True, text=True, timeout=120, env=env,
                              start_new_session=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"ckpt-{step}" in proc.stderr and "FINISHED" in proc.stdout
