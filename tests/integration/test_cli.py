"""The ``learnrun`` command line end to end, in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

EXPERIMENT = textwrap.dedent(
    """
    import learnrun
    from learnrun.errors import PreemptedError


    class TinyEstimator:
        '''The Estimator protocol without torch: fixed metrics, optional preemption.'''

        def __init__(self, config, preempt=False):
            self.config = config
            self.model_dir = config.model_dir
            self.params = None
            self.preempt = preempt
            self.step = 0

        def train(self, input_fn, hooks=None, steps=None, max_steps=None, saving_listeners=None):
            if self.preempt:
                raise PreemptedError("SIGTERM received; checkpoint saved at step 2")
            self.step = max_steps or steps or 0
            return self

        def evaluate(self, input_fn, steps=None, hooks=None, checkpoint_path=None, name=None):
            return {"loss": 0.25, "global_step": self.step, "accuracy": 0.75}

        def latest_checkpoint(self):
            return None


    def default_hparams():
        return learnrun.HParams(lr=0.1, units=[8])


    def experiment_fn(run_config, hparams):
        print("HPARAMS", hparams.to_json(sort_keys=True))
        print("SEED", run_config.tf_random_seed)
        return learnrun.Experiment(TinyEstimator(run_config), lambda: [], lambda: [],
                                   train_steps=3, min_eval_frequency=0, eval_delay_secs=0)


    def preempted_fn(run_config, hparams):
        return learnrun.Experiment(TinyEstimator(run_config, preempt=True), lambda: [],
                                   lambda: [], train_steps=3, min_eval_frequency=0)


    def crashing_fn(run_config, hparams):
        raise RuntimeError("disk full\\nsecond line")


    def old_style_fn(output_dir):
        config = learnrun.RunConfig(model_dir=output_dir)
        return learnrun.Experiment(TinyEstimator(config), lambda: [], lambda: [],
                                   train_steps=2, min_eval_frequency=0)
    """
)


def learnrun_cli(*args: str, cwd: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CONFIG", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                        "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_ID")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "learnrun", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.fixture
def exp(tmp_path):
    (tmp_path / "exp.py").write_text(EXPERIMENT)
    return tmp_path


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("learnrun: error: ")
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_run_file_target_with_overrides(exp):
    proc = learnrun_cli("run", "exp.py", "--model-dir", "m", "--hparams", "lr=0.5,units=[4,2]",
                        "--config", "tf_random_seed=7", cwd=str(exp))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    hparams = json.loads(out.split("HPARAMS ", 1)[1].splitlines()[0])
    assert hparams == {"lr": 0.5, "units": [4, 2]}
    assert "SEED 7" in out
    assert "role:      local (not distributed)" in out
    assert "schedule:  train_and_evaluate" in out
    assert "model_dir: m" in out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()
            if line.split()[:1] and line.split()[0] in ("accuracy", "loss", "global_step")}
    assert rows == {"accuracy": "0.75", "loss": "0.25", "global_step": "3"}
    assert "tensorboard --logdir m" in out


def test_run_function_target_and_explicit_schedule(exp):
    proc = learnrun_cli("run", "exp.py:experiment_fn", "--model-dir", "m", "--schedule",
                        "evaluate", cwd=str(exp))
    assert proc.returncode == 0, proc.stderr
    assert "schedule:  evaluate" in proc.stdout
    assert "global_step  0" in proc.stdout


def test_run_output_dir_mode(exp):
    proc = learnrun_cli("run", "exp.py:old_style_fn", "--output-dir", "o", cwd=str(exp))
    assert proc.returncode == 0, proc.stderr
    assert "global_step  2" in proc.stdout


def test_bad_target(exp):
    proc = learnrun_cli("run", "no_such_experiment", "--model-dir", "m", cwd=str(exp))
    assert_one_line_error(proc, 2, "unknown TARGET 'no_such_experiment'", "digits")
    proc = learnrun_cli("run", "exp.py:nope", "--model-dir", "m", cwd=str(exp))
    assert_one_line_error(proc, 2, "has no function 'nope'", "experiment_fn")
    proc = learnrun_cli("run", "missing.py", "--model-dir", "m", cwd=str(exp))
    assert_one_line_error(proc, 2, "file 'missing.py' does not exist")


def test_bad_hparams(exp):
    proc = learnrun_cli("run", "exp.py", "--model-dir", "m", "--hparams", "nope=1", cwd=str(exp))
    assert_one_line_error(proc, 2, "bad --hparams 'nope=1'", "nope", "known: lr=0.1")
    proc = learnrun_cli("run", "exp.py", "--model-dir", "m", "--hparams", "lr=fast", cwd=str(exp))
    assert_one_line_error(proc, 2, "bad --hparams 'lr=fast'", "fast")


def test_unknown_schedule(exp):
    proc = learnrun_cli("run", "exp.py", "--model-dir", "m", "--schedule", "trian", cwd=str(exp))
    assert_one_line_error(proc, 2, "bad --schedule 'trian'", "non-existent task trian",
                          "'train_and_evaluate'", "'continuous_eval'")
    proc = learnrun_cli("run", "exp.py:old_style_fn", "--output-dir", "o", "--schedule", "nope",
                        cwd=str(exp))
    assert_one_line_error(proc, 2, "bad --schedule 'nope'", "'train'")


def test_more_bad_targets(exp):
    (exp / "broken.py").write_text("def experiment_fn(:\n")
    (exp / "values.py").write_text("experiment_fn = 3\n")
    proc = learnrun_cli("run", "broken.py", "--model-dir", "m", cwd=str(exp))
    assert_one_line_error(proc, 2, "broken.py", "SyntaxError")
    proc = learnrun_cli("run", "values.py", "--model-dir", "m", cwd=str(exp))
    assert_one_line_error(proc, 2, "'experiment_fn' is a int, not a function")
    proc = learnrun_cli("run", "nosuchpkg.mod:fn", "--model-dir", "m", cwd=str(exp))
    assert_one_line_error(proc, 2, "no module named 'nosuchpkg'")
    proc = learnrun_cli("run", "exp:nope", "--model-dir", "m", cwd=str(exp))
    assert_one_line_error(proc, 2, "exp has no function 'nope'", "preempted_fn")


def test_module_function_target_and_config_types(exp):
    (exp / "cfgexp.py").write_text(textwrap.dedent(
        """
        from exp import default_hparams, experiment_fn as base  # noqa: F401

        def show(run_config, hparams):
            print("CFG", repr(run_config.tf_random_seed), repr(run_config.save_checkpoints_secs),
                  repr(run_config.save_checkpoints_steps), repr(run_config.log_device_placement))
            return base(run_config, hparams)
        """))
    proc = learnrun_cli("run", "cfgexp:show", "--model-dir", "m", "--config", "tf_random_seed=3",
                        "--config", "save_checkpoints_secs=None", "--config",
                        "save_checkpoints_steps=5", "--config", "log_device_placement=true",
                        cwd=str(exp))
    assert proc.returncode == 0, proc.stderr
    assert "CFG 3 None 5 True" in proc.stdout
    assert "learnrun: show from cfgexp" in proc.stdout
    proc = learnrun_cli("run", "exp.py", "--model-dir", "m", "--config", "gradient_clip_norm=0.5",
                        "--config", "keep_checkpoint_max=x", cwd=str(exp))
    assert_one_line_error(proc, 2, "cannot build RunConfig", "gradient_clip_norm=0.5",
                          "keep_checkpoint_max='x'")


def test_junk_hparams_syntax(exp):
    for spec in ("lr==", ",,,x", "units=[a", "lr=[1,2]"):
        proc = learnrun_cli("run", "exp.py", "--model-dir", "m", "--hparams", spec, cwd=str(exp))
        assert_one_line_error(proc, 2, f"bad --hparams {spec!r}")


def test_role_line_from_tf_config(exp):
    env_cluster = {"chief": ["127.0.0.1:29991"]}
    proc = _with_tf_config(exp, {"cluster": env_cluster, "task": {"type": "chief", "index": 0}},
                           "run", "exp.py", "--model-dir", "m")
    assert proc.returncode == 0, proc.stderr
    assert "role:      chief 0 (TF_CONFIG, world size 1)" in proc.stdout
    assert "schedule:  train_and_evaluate" in proc.stdout
    cluster = {"chief": ["127.0.0.1:29991"], "worker": ["127.0.0.1:29992"]}
    proc = _with_tf_config(exp, {"cluster": cluster, "task": {"type": "evaluator", "index": 0}},
                           "run", "exp.py", "--model-dir", "m", "--schedule", "evaluate")
    assert proc.returncode == 0, proc.stderr
    assert "role:      evaluator 0 (TF_CONFIG, outside the 2 training task(s))" in proc.stdout


def _with_tf_config(exp, tf_config, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env.update(TF_CONFIG=json.dumps(tf_config), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "learnrun", *args], cwd=str(exp), env=env,
                          capture_output=True, text=True, timeout=120)


def test_bad_config(exp):
    proc = learnrun_cli("run", "exp.py", "--model-dir", "m", "--config", "bogus=1", cwd=str(exp))
    assert_one_line_error(proc, 2, "bad --config 'bogus=1'", "tf_random_seed")
    proc = learnrun_cli("run", "exp.py", "--model-dir", "m", "--config", "novalue", cwd=str(exp))
    assert_one_line_error(proc, 2, "expected key=value")
    proc = learnrun_cli("run", "exp.py", "--config", "tf_random_seed=1", cwd=str(exp))
    assert_one_line_error(proc, 2, "no model directory", "--model-dir")


def test_failure_in_experiment_is_one_line_unless_verbose(exp):
    proc = learnrun_cli("run", "exp.py:crashing_fn", "--model-dir", "m", cwd=str(exp))
    assert_one_line_error(proc, 1, "RuntimeError: disk full")
    proc = learnrun_cli("run", "exp.py:crashing_fn", "--model-dir", "m", "--verbose", cwd=str(exp))
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "disk full" in proc.stderr


def test_preemption_exits_143(exp):
    proc = learnrun_cli("run", "exp.py:preempted_fn", "--model-dir", "m", cwd=str(exp))
    assert proc.returncode == 143, proc.stderr
    assert "checkpoint saved at step 2" in proc.stderr


def test_checkpoints_command(tmp_path):
    import torch

    from learnrun.model_dir.checkpoints import CheckpointManager

    model_dir = tmp_path / "model"
    manager = CheckpointManager(str(model_dir))
    for step in (5, 10):
        manager.save(step, {"w": torch.zeros(64)}, {})
    (model_dir / "eval").mkdir()
    (model_dir / "eval" / "results.jsonl").write_text(
        json.dumps({"checkpoint_path": str(model_dir / "ckpt-10"), "global_step": 10,
                    "loss": 0.125, "accuracy": 0.9}) + "\n")
    proc = learnrun_cli("checkpoints", str(model_dir), cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "2 checkpoint(s)" in lines[0]
    row5 = next(line for line in lines if line.startswith("5 "))
    row10 = next(line for line in lines if line.startswith("10 *"))
    assert row5.rstrip().endswith("-")
    assert "[eval] accuracy=0.9 loss=0.125" in row10
    assert "B" in row10  # a size column


def test_checkpoints_command_errors(tmp_path):
    proc = learnrun_cli("checkpoints", str(tmp_path / "nope"), cwd=str(tmp_path))
    assert_one_line_error(proc, 2, "no such directory")
    proc = learnrun_cli("checkpoints", str(tmp_path), cwd=str(tmp_path))
    assert_one_line_error(proc, 2, "is not a model directory", "checkpoint index")
    (tmp_path / "f.txt").write_text("x")
    proc = learnrun_cli("checkpoints", str(tmp_path / "f.txt"), cwd=str(tmp_path))
    assert_one_line_error(proc, 2, "is a file, not a directory")
    (tmp_path / "m" / "eval").mkdir(parents=True)
    proc = learnrun_cli("checkpoints", "m", cwd=str(tmp_path))
    assert proc.returncode == 0
    assert proc.stdout.strip() == "no checkpoints in m yet (no ckpt-*/ holds a meta.json)"


def test_version_and_usage(tmp_path):
    proc = learnrun_cli("--version", cwd=str(tmp_path))
    assert proc.returncode == 0 and proc.stdout.startswith("learnrun ")
    proc = learnrun_cli(cwd=str(tmp_path))
    assert proc.returncode == 2 and "usage: learnrun" in proc.stderr


def test_launch_delegates_to_the_distributed_launcher(tmp_path):
    proc = learnrun_cli("launch", "--help", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "usage: learnrun launch" in proc.stdout and "--workers" in proc.stdout


def test_launch_bad_flag_is_a_launch_usage_error(tmp_path):
    proc = learnrun_cli("launch", "--bogus", "exp.py", cwd=str(tmp_path))
    assert proc.returncode == 2
    assert "usage: learnrun launch" in proc.stderr
    assert "unrecognized arguments: --bogus" in proc.stderr and "go after TARGET" in proc.stderr
    proc = learnrun_cli("launch", "--workers", "x", "exp.py", cwd=str(tmp_path))
    assert proc.returncode == 2 and "--workers: invalid int value: 'x'" in proc.stderr
