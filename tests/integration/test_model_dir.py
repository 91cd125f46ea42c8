"""The model directory through the real Estimator and CLI: damage, the lease, asynchronous saves."""

from __future__ import annotations

import glob
import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

import learnrun
from learnrun.errors import PREEMPTED_EXIT_CODE
from learnrun.hooks import CheckpointSaverListener
from learnrun.model_dir import checkpoints as ckpt
from tests.helpers.data import linear_regression_model_fn, sum_batches
from tests.helpers.hooks import StartStep

model_fn = linear_regression_model_fn
input_fn = sum_batches



def _estimator(model_dir, **config) -> learnrun.Estimator:
    config = {"save_checkpoints_steps": 10, "tf_random_seed": 1, "log_step_count_steps": 1000,
              "save_summary_steps": 0, **config}
    return learnrun.Estimator(model_fn, config=learnrun.RunConfig(model_dir=str(model_dir), **config))


def _resume_step(model_dir, max_steps: int = 40) -> int:
    hook = StartStep()
    _estimator(model_dir).train(input_fn, hooks=[hook], max_steps=max_steps)
    return hook.start


def _damage(ckpt_dir: str, how: str) -> None:
    weights = os.path.join(ckpt_dir, "model.safetensors")
    if how == "truncated":
        os.truncate(weights, os.path.getsize(weights) // 2)
    elif how == "flipped byte":
        data = bytearray(open(weights, "rb").read())  # noqa: SIM115
        data[-3] ^= 0x40
        with open(weights, "wb") as f:
            f.write(bytes(data))
    elif how == "missing file":
        os.remove(os.path.join(ckpt_dir, "state.pt"))
    elif how == "missing meta.json":
        os.remove(os.path.join(ckpt_dir, "meta.json"))
    elif how == "garbage meta.json":
        with open(os.path.join(ckpt_dir, "meta.json"), "w") as f:
            f.write("{]")
    elif how == "garbage index":
        with open(os.path.join(os.path.dirname(ckpt_dir), "checkpoint"), "w") as f:
            f.write("\x00garbage")
    elif how == "empty ckpt dir":
        os.makedirs(os.path.join(os.path.dirname(ckpt_dir), "ckpt-35"))


# how -> (the step training resumes from, ckpt-30 moved aside)
DAMAGE = {
    "truncated": (20, True),
    "flipped byte": (20, True),
    "missing file": (20, True),
    "garbage meta.json": (20, True),
    "missing meta.json": (20, False),  # never committed: not a checkpoint, removed
    "garbage index": (30, False),
    "empty ckpt dir": (30, False),
}


@pytest.mark.parametrize("how", list(DAMAGE))
def test_damage_matrix_resumes_from_the_right_step(tmp_path, how, caplog):
    model_dir = tmp_path / "model"
    _estimator(model_dir).train(input_fn, max_steps=30)
    _damage(str(model_dir / "ckpt-30"), how)
    with caplog.at_level(logging.WARNING):
        start = _resume_step(model_dir)
    expected, moved = DAMAGE[how]
    assert start == expected
    names = sorted(os.listdir(model_dir))
    aside = [n for n in names if n.startswith("ckpt-30.damaged-")]
    assert bool(aside) == moved, names
    if moved:
        assert "ckpt-30 is damaged" in caplog.text and "ckpt-20 instead" in caplog.text
        assert os.listdir(model_dir / aside[0])  # kept, not deleted
    if how == "garbage index":
        assert "rebuilding it from the committed ckpt-*" in caplog.text
        assert json.loads((model_dir / "checkpoint").read_text())["latest"] == "ckpt-40"
    assert "ckpt-35" not in names and "lease" not in names
    assert [c.step for c in ckpt.list_checkpoints(str(model_dir))][-2:] == [30, 40]
    assert all(problem is None for _, problem in ckpt.verify_checkpoints(str(model_dir)))


def test_only_damaged_checkpoints_stop_training_with_one_line_and_change_nothing(tmp_path):
    model_dir = tmp_path / "model"
    _estimator(model_dir, keep_checkpoint_max=2).train(input_fn, max_steps=20)
    for path in glob.glob(str(model_dir / "ckpt-*")):
        _damage(path, "flipped byte")
    def files():
        return {p: (os.path.getmtime(p), os.path.getsize(p))
                for p in glob.glob(str(model_dir / "**"), recursive=True) if os.path.isfile(p)}

    before = files()
    with pytest.raises(ckpt.DamagedCheckpointError) as info:
        _estimator(model_dir, keep_checkpoint_max=2).train(input_fn, max_steps=40)
    assert "\n" not in str(info.value) and "Every checkpoint in" in str(info.value)
    assert files() == before


def _cli_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CONFIG", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                        "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_ID")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_checkpoints_verify_command(tmp_path):
    model_dir = tmp_path / "model"
    _estimator(model_dir).train(input_fn, max_steps=20)
    run = [sys.executable, "-m", "learnrun", "checkpoints", str(model_dir), "--verify"]
    proc = subprocess.run(run, capture_output=True, text=True, timeout=120, env=_cli_env())
    assert proc.returncode == 0, proc.stderr
    assert "all verified" in proc.stdout and "verified" in proc.stdout.splitlines()[1]
    _damage(str(model_dir / "ckpt-10"), "flipped byte")
    proc = subprocess.run(run, capture_output=True, text=True, timeout=120, env=_cli_env())
    assert proc.returncode == 1
    assert "1 damaged" in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if line.startswith("10 "))
    assert "DAMAGED" in row and "checksum" in row


LEASE_EXPERIMENT = textwrap.dedent("""
    import os, sys, torch, learnrun
    from learnrun.estimator.spec import EstimatorSpec

    def model_fn():
        m = torch.nn.Linear(4, 1)
        return EstimatorSpec(module=m, loss_fn=torch.nn.functional.mse_loss,
                             optimizer=torch.optim.SGD(m.parameters(), lr=0.05))

    def input_fn():
        for _ in range(100):
            x = torch.randn(8, 4)
            yield x, x.sum(1, keepdim=True)

    class Hold(learnrun.hooks.SessionRunHook):
        def after_run(self, run_context, run_values):
            if run_values.global_step == 3 and os.environ.get("HOLD"):
                print("HOLDING", flush=True)
                sys.stdin.readline()

    def experiment_fn(run_config, hparams):
        est = learnrun.Estimator(model_fn, config=run_config)
        return learnrun.Experiment(est, input_fn, input_fn, train_steps=10,
                                   train_monitors=[Hold()])
""")


@pytest.mark.timeout(240)
def test_a_second_writer_fails_with_one_line_naming_the_holder(tmp_path):
    (tmp_path / "exp.py").write_text(LEASE_EXPERIMENT)
    cmd = [sys.executable, "-m", "learnrun", "run", "exp.py", "--model-dir", "m",
           "--schedule", "train", "--config", "save_checkpoints_steps=2"]
    first = subprocess.Popen(cmd, cwd=tmp_path, env={**_cli_env(), "HOLD": "1"}, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = []
        for line in first.stdout:  # ends when the process does, so no endless wait
            lines.append(line)
            if line.strip() == "HOLDING":
                break
        assert lines and lines[-1].strip() == "HOLDING", "".join(lines)
        second = subprocess.run(cmd, cwd=tmp_path, env=_cli_env(), capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 1, second.stderr
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in second.stderr, second.stderr
        assert "LeaseError: model_dir m is being written by another run" in err[0]
        assert f"pid {first.pid}" in err[0] and "delete m/lease to take over" in err[0]
        out, errors = first.communicate("\n", timeout=120)
        assert first.returncode == 0, errors
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)
    assert "lease" not in os.listdir(tmp_path / "m")
    assert ckpt.checkpoint_step(ckpt.latest_checkpoint(str(tmp_path / "m"))) == 10


class Recorder(CheckpointSaverListener):
    def __init__(self, model_dir) -> None:
        self.model_dir = str(model_dir)
        self.events: list[tuple] = []

    def before_save(self, session, global_step_value):
        self.events.append(("before", global_step_value))

    def after_save(self, session, global_step_value):
        committed = os.path.exists(os.path.join(self.model_dir, f"ckpt-{global_step_value}",
                                                "meta.json"))
        self.events.append(("after", global_step_value, committed,
                            threading.current_thread() is threading.main_thread()))

    def end(self, session, global_step_value):
        self.events.append(("end", global_step_value))


def test_async_saves_run_listeners_after_the_commit_in_step_order(tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    original = ckpt.CheckpointManager._write_parts

    def slow(self, path, parts):  # slow storage: the save is still in flight a step later
        threading.Event().wait(0.02)
        return original(self, path, parts)

    monkeypatch.setattr(ckpt.CheckpointManager, "_write_parts", slow)
    recorder = Recorder(model_dir)
    est = _estimator(model_dir, save_checkpoints_steps=3, async_checkpoint=True)
    est.train(input_fn, max_steps=10, saving_listeners=[recorder])
    afters = [e for e in recorder.events if e[0] == "after"]
    assert [e[1] for e in afters] == [0, 3, 6, 9, 10]
    assert all(committed and main for _, _, committed, main in afters)
    for step in (0, 3, 6, 9, 10):  # after_save follows its own before_save
        assert recorder.events.index(("before", step)) < next(
            i for i, e in enumerate(recorder.events) if e[:2] == ("after", step))
    assert recorder.events[-1] == ("end", 10)
    assert [c.step for c in ckpt.list_checkpoints(str(model_dir))] == [0, 3, 6, 9, 10]


# A deterministic run: dropout (RNG), momentum (optimizer state), a resumable input position.
TRAIN_SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading, logging
    import torch
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO)
    import learnrun
    from learnrun.estimator.spec import EstimatorSpec
    from learnrun.hooks import CheckpointSaverListener, SessionRunHook
    from learnrun.model_dir import checkpoints as ckpt

    model_dir, mode = sys.argv[1], sys.argv[2]
    max_steps, every = int(os.environ.get("MAX_STEPS", "40")), int(os.environ.get("EVERY", "2"))

    if os.environ.get("SLOW"):  # slow storage: saves stay in flight across steps
        original = ckpt.CheckpointManager._write_parts
        def slow(self, path, parts):
            threading.Event().wait(float(os.environ["SLOW"]))
            return original(self, path, parts)
        ckpt.CheckpointManager._write_parts = slow

    def model_fn():
        m = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Dropout(0.3),
                                torch.nn.ReLU(), torch.nn.Linear(16, 1))
        return EstimatorSpec(module=m, loss_fn=torch.nn.functional.mse_loss,
                             optimizer=torch.optim.SGD(m.parameters(), lr=0.02, momentum=0.9))

    class Batches:
        def __init__(self):
            self.pos = 0
        def state_dict(self):
            return {"pos": self.pos}
        def load_state_dict(self, state):
            self.pos = int(state["pos"])
        def __iter__(self):
            while True:
                g = torch.Generator().manual_seed(1000 + self.pos)
                self.pos += 1
                x = torch.randn(8, 6, generator=g)
                yield x, x.sum(1, keepdim=True)

    class Progress(SessionRunHook):
        def after_create_session(self, session, coord=None):
            print("START", session.global_step, flush=True)
        def after_run(self, run_context, run_values):
            print("STEP", run_values.global_step, flush=True)
            if mode == "sigterm" and run_values.global_step == 7:
                os.kill(os.getpid(), signal.SIGTERM)

    class Committed(CheckpointSaverListener):
        def after_save(self, session, step):
            print("COMMITTED", step, flush=True)

    config = learnrun.RunConfig(model_dir=model_dir, save_checkpoints_steps=every, tf_random_seed=3,
                                async_checkpoint=True, log_step_count_steps=1000,
                                save_summary_steps=0)
    est = learnrun.Estimator(model_fn, config=config)
    est.train(Batches, hooks=[Progress()], max_steps=max_steps, saving_listeners=[Committed()])
    print("FINISHED", flush=True)
""")


def _script(tmp_path) -> str:
    path = tmp_path / "train.py"
    path.write_text(TRAIN_SCRIPT)
    return str(path)


def _env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


@pytest.mark.timeout(240)
def test_sigterm_waits_for_the_save_in_flight(tmp_path):
    model_dir = str(tmp_path / "model")
    proc = subprocess.run([sys.executable, _script(tmp_path), model_dir, "sigterm"],
                          capture_output=True, text=True, timeout=120,
                          env=_env(EVERY="3", SLOW="0.2"))
    assert proc.returncode == PREEMPTED_EXIT_CODE, proc.stderr[-3000:]
    committed = [int(line.split()[1]) for line in proc.stdout.splitlines()
                 if line.startswith("COMMITTED")]
    assert committed == [0, 3, 6, 7]  # ckpt-6 was in flight when SIGTERM came: waited for
    assert [c.step for c in ckpt.list_checkpoints(model_dir)] == [0, 3, 6, 7]
    assert sorted(n for n in os.listdir(model_dir) if n.startswith("ckpt-")) == [
        "ckpt-0", "ckpt-3", "ckpt-6", "ckpt-7"]
    assert "lease" not in os.listdir(model_dir)


def _final_weights(model_dir: str) -> dict:
    path = ckpt.latest_checkpoint(model_dir)
    assert ckpt.checkpoint_step(path) == 40
    return ckpt.load_checkpoint(path).weights


@pytest.mark.timeout(300)
def test_random_sigkills_with_async_saves_end_bit_identical(tmp_path):
    seed = int(os.environ.get("LEARNRUN_KILL_SEED", random.randrange(1 << 30)))
    print(f"random SIGKILL test seed: {seed} (rerun with LEARNRUN_KILL_SEED={seed})")
    rng = random.Random(seed)
    script = _script(tmp_path)
    env = _env(SLOW="0.01")
    reference = str(tmp_path / "reference")
    proc = subprocess.run([sys.executable, script, reference, "none"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    model_dir = str(tmp_path / "killed")
    kills = 0
    for _ in range(3):
        kill_at = rng.randint(1, 40)
        proc = subprocess.Popen([sys.executable, script, model_dir, "none"], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        start = committed = None
        finished = False
        try:
            for line in proc.stdout:  # ends when the process does
                word, *rest = line.split()
                if word == "START":
                    start = int(rest[0])
                elif word == "COMMITTED":
                    committed = int(rest[0])
                elif word == "FINISHED":
                    finished = True
                elif word == "STEP" and int(rest[0]) >= kill_at:
                    os.kill(proc.pid, signal.SIGKILL)
                    kills += 1
                    break
        finally:
            if proc.poll() is None and not finished:
                proc.kill()
            proc.wait(timeout=60)
            proc.stdout.close()
        assert start is not None, f"seed {seed}: the run did not start"
        if finished:
            assert proc.returncode == 0
            break
        # a crash loses at most the save that was not committed yet
        latest = ckpt.latest_checkpoint(model_dir)
        assert latest is not None and ckpt.checkpoint_step(latest) >= (committed or 0), seed
    else:
        proc = subprocess.run([sys.executable, script, model_dir, "none"], capture_output=True,
                              text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"seed {seed}: {kills} SIGKILL(s)")
    got, want = _final_weights(model_dir), _final_weights(reference)
    assert sorted(got) == sorted(want)
    for name in want:
        assert torch.equal(got[name], want[name]), f"seed {seed}: {name} differs"
