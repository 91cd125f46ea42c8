"""Fault injection: random kills, SIGTERM storms, a full disk, damaged files, two writers.

Every test asserts that nothing is lost: where training is deterministic (one process, a
synchronous cluster) the weights end bit-identical to an uninterrupted run; with parameter
servers the run completes at exactly ``train_steps``. The moments and kinds of the faults come
from ``random.Random(f"{seed}:{test name}")``; ``--fault-seed S`` replays a run and
``--fault-runs N`` makes it longer (N kills per cluster test, 3N per local test); both are
printed with each test's plan (``-s`` shows them) and in every assertion message. Long run::

    scripts/faults.sh 10 12345      # pytest tests/faults --fault-runs 10 --fault-seed 12345
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import learnrun
from learnrun.errors import CheckpointError
from learnrun.model_dir import checkpoints as ckpt
from learnrun.model_dir.lease import LeaseError
from tests.conftest import SYNC_REFERENCE_ARGS, SYNC_REFERENCE_STEPS
from tests.faults import local_target
from tests.helpers import REPO_ROOT, experiments
from tests.helpers.distributed import cluster_env, launch_experiment

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(1800)]


class Plan:
    """The seeded random source of one test, and the words to replay it."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.seed = request.config.getoption("--fault-seed")
        self.runs = max(1, request.config.getoption("--fault-runs"))
        self.rng = random.Random(f"{self.seed}:{request.node.name}")
        self.name = request.node.name
        self.replay = f"(replay: pytest '{request.node.nodeid}' --fault-seed {self.seed} " \
                      f"--fault-runs {self.runs})"

    def faults(self, count: int, tasks: list[str], steps: int, kinds=("KILL", "KILL", "TERM")):
        entries = [f"{self.rng.choice(tasks)}@{self.rng.randint(1, steps - 1)}"
                   f"~{self.rng.uniform(0, 25):.1f}:{self.rng.choice(kinds)}"
                   for _ in range(count)]
        return ",".join(entries)

    def report(self, text: str) -> None:
        print(f"[faults] {self.name}: seed={self.seed} runs={self.runs} {text}", flush=True)


@pytest.fixture
def plan(request) -> Plan:
    return Plan(request)


def _fired(model_dir: Path) -> int:
    return len(list(model_dir.glob("fault-*")))


def _weights(model_dir: Path) -> dict:
    return ckpt.load_checkpoint(ckpt.latest_checkpoint(str(model_dir))).weights


def _assert_identical(got: dict, want: dict, why: str) -> None:
    assert sorted(got) == sorted(want), why
    for name in want:
        assert torch.equal(got[name], want[name]), f"{name} differs {why}"


def _all_intact(model_dir: Path, why: str) -> None:
    problems = [(info.path, p) for info, p in ckpt.verify_checkpoints(str(model_dir)) if p]
    assert not problems, f"{problems} {why}"


# -- local runs -------------------------------------------------------------------------------
def _local(model_dir: Path, steps: int, save: int, faults: str = "", use_async: bool = False):
    env = cluster_env(LRTEST_FAULTS=faults)
    args = [sys.executable, "-m", "tests.faults.local_target", str(model_dir), str(steps),
            str(save)] + (["async"] if use_async else [])
    done = subprocess.run(args, env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    return done.returncode, done.stdout + done.stderr


def test_local_run_killed_and_sigterm_stormed_at_random_moments_ends_bit_identical(
        tmp_path, plan):
    steps, save = 40, 4
    # the reference run in this process: the same training as the subprocesses' (bit-identical)
    threads = torch.get_num_threads()  # local_target sets 1, as in its subprocesses
    try:
        assert local_target.main([str(tmp_path / "ref"), str(steps), str(save)]) == 0
    finally:
        torch.set_num_threads(threads)
    faults = plan.faults(3 * plan.runs, ["local:0"], steps)
    plan.report(f"plan {faults}")
    model_dir = tmp_path / "run"
    codes = []
    for attempt in range(3 * plan.runs + 2):
        code, text = _local(model_dir, steps, save, faults, use_async=attempt % 2 == 1)
        codes.append(code)
        if code == 0:
            break
        assert code in (-9, 143), f"{text[-3000:]} {plan.replay}"
    plan.report(f"{_fired(model_dir)} faults fired, exit codes {codes}")
    assert codes[-1] == 0, f"{text[-3000:]} {plan.replay}"
    _all_intact(model_dir, plan.replay)
    assert ckpt.checkpoint_step(ckpt.latest_checkpoint(str(model_dir))) == steps, plan.replay
    _assert_identical(_weights(model_dir), _weights(tmp_path / "ref"), plan.replay)


# -- clusters -------------------------------------------------------------------------------
def test_sync_cluster_members_killed_at_random_moments_end_bit_identical(tmp_path, plan,
                                                                         sync_reference):
    # the reference: the same cluster (1 worker, a save every 3 steps) run without faults
    steps, args = SYNC_REFERENCE_STEPS, {**SYNC_REFERENCE_ARGS, "timeout": 150}
    faults = plan.faults(plan.runs, ["chief:0", "worker:0"], steps)
    plan.report(f"plan {faults}")
    model_dir = tmp_path / "run"
    code, out, secs = launch_experiment(model_dir, max_restarts=plan.runs + 1,
                                        LRTEST_FAULTS=faults, **args)
    plan.report(f"{_fired(model_dir)} faults fired, exit {code} after {secs:.0f} s")
    assert code == 0, f"{out.text[-5000:]} {plan.replay}"
    _all_intact(model_dir, plan.replay)
    assert ckpt.checkpoint_step(ckpt.latest_checkpoint(str(model_dir))) == steps, plan.replay
    _assert_identical(_weights(model_dir), _weights(sync_reference.model_dir), plan.replay)


def test_parameter_server_members_killed_at_random_moments_complete_at_train_steps(
        tmp_path, plan):
    steps = 30
    faults = plan.faults(plan.runs, ["chief:0", "worker:0"], steps)
    plan.report(f"plan {faults}")
    code, out, secs = launch_experiment(tmp_path, num_ps=1, num_workers=1, save_steps=5,
                                        max_restarts=plan.runs + 1, dist_timeout=10,
                                        timeout=150, LRTEST_TRAIN_STEPS=str(steps),
                                        LRTEST_FAULTS=faults)
    plan.report(f"{_fired(tmp_path)} faults fired, exit {code} after {secs:.0f} s")
    assert code == 0, f"{out.text[-5000:]} {plan.replay}"
    _all_intact(tmp_path, plan.replay)
    assert ckpt.checkpoint_step(ckpt.latest_checkpoint(str(tmp_path))) == steps, plan.replay
    assert out.values("chief:0", "STOP")[-1] == steps, plan.replay


# -- storage ----------------------------------------------------------------------------------
def _config(model_dir: Path, **kw) -> learnrun.RunConfig:
    return learnrun.RunConfig(model_dir=str(model_dir), tf_random_seed=0, device="cpu",
                              save_checkpoints_steps=5, save_checkpoints_secs=None,
                              save_summary_steps=10**9, log_step_count_steps=10**9, **kw)


def _train(model_dir: Path, steps: int, hooks=(), **kw) -> learnrun.Estimator:
    est = learnrun.Estimator(experiments.model_fn, config=_config(model_dir, **kw))
    est.train(experiments.train_input_fn, hooks=list(hooks), max_steps=steps)
    return est


class _FillDisk(learnrun.hooks.SessionRunHook):
    """At global step ``at``, fill the file system of ``path`` to the last byte."""

    def __init__(self, path: Path, at: int) -> None:
        self.path, self.at = path, at

    def after_run(self, run_context, run_values) -> None:
        if run_values.global_step != self.at:
            return
        with open(self.path, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass


def test_disk_full_loses_nothing(tmp_path, plan):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or done.returncode})")
    try:
        steps = 30
        _train(tmp_path / "ref", steps)
        ref = _weights(tmp_path / "ref")
        at = plan.rng.randint(1, 24)
        plan.report(f"disk full at step {at}")
        model_dir, filler = mount / "model", mount / "filler"
        with pytest.raises(CheckpointError) as info:
            _train(model_dir, steps, hooks=[_FillDisk(filler, at)], keep_checkpoint_max=3)
        assert "\n" not in str(info.value), plan.replay
        _all_intact(model_dir, plan.replay)
        filler.unlink()
        _train(model_dir, steps, keep_checkpoint_max=3)
        _assert_identical(_weights(model_dir), ref, plan.replay)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_damaged_checkpoint_files_fall_back_and_lose_nothing(tmp_path, plan):
    steps = 30
    _train(tmp_path / "ref", steps)
    ref = _weights(tmp_path / "ref")
    model_dir = tmp_path / "run"
    _train(model_dir, 20)
    latest = Path(ckpt.latest_checkpoint(str(model_dir)))
    victim = plan.rng.choice(sorted(p for p in latest.iterdir() if p.is_file()))
    data = bytearray(victim.read_bytes())
    how = plan.rng.choice(["flip", "truncate"])
    if how == "flip":
        data[plan.rng.randrange(len(data))] ^= 0xFF
    else:
        data = data[:plan.rng.randrange(len(data))]
    victim.write_bytes(bytes(data))
    plan.report(f"{how} {victim.name} of {latest.name}")
    _train(model_dir, steps)
    _all_intact(model_dir, plan.replay)
    _assert_identical(_weights(model_dir), ref, plan.replay)


def test_a_second_writer_is_refused_and_the_first_finishes(tmp_path, plan):
    model_dir = tmp_path / "model"
    env = cluster_env()
    first = subprocess.Popen([sys.executable, "-m", "tests.faults.local_target", str(model_dir),
                              "150", "50"], env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    started = threading.Event()
    lines: list[str] = []

    def read() -> None:
        for line in first.stdout:
            lines.append(line)
            if line.startswith("STEP "):
                started.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert started.wait(60), "".join(lines)
        with pytest.raises(LeaseError) as info:
            _train(model_dir, 10)
        assert "\n" not in str(info.value) and str(first.pid) in str(info.value)
        assert first.wait(120) == 0, "".join(lines)
    finally:
        if first.poll() is None:
            first.kill()
    _all_intact(model_dir, plan.replay)
    assert ckpt.checkpoint_step(ckpt.latest_checkpoint(str(model_dir))) == 150
    assert os.path.exists(model_dir / "final")
