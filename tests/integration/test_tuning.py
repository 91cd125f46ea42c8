"""OptunaTuner: studies of tiny trials, resume after interruption, pruning (parsing: unit tests)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

import learnrun
from learnrun.tuning import OptunaTuner, SearchSpaceError
from tests.helpers import REPO_ROOT
from tests.helpers.fakes import QuadraticEstimator

optuna = pytest.importorskip("optuna")


# ----------------------------------------------------------------- studies


def make_experiment_fn(interrupt_on=None, calls=None):
    calls = [] if calls is None else calls

    def experiment_fn(run_config, hparams):
        calls.append((run_config.model_dir, hparams.lr, list(hparams.units)))
        if interrupt_on is not None and len(calls) == interrupt_on:
            raise KeyboardInterrupt
        return learnrun.Experiment(QuadraticEstimator(run_config, hparams), lambda: [],
                                   lambda: [], train_steps=2, min_eval_frequency=0)

    return experiment_fn, calls


def make_tuner(tmp_path, out, n_trials=4, **kw):
    return OptunaTuner(
        "lr=loguniform(1e-3, 1e-1),units=choice([8],[16,8])",
        n_trials=n_trials, base_model_dir=str(tmp_path / "tune"), seed=0,
        hparams=learnrun.HParams(lr=0.05, units=[4], extra="kept"), out=out, **kw)


def test_study_runs_trials_in_own_model_dirs(tmp_path, capsys):
    experiment_fn, calls = make_experiment_fn()
    tuner = make_tuner(tmp_path, sys.stdout)
    learnrun.tune(experiment_fn, tuner)
    assert len(calls) == 4
    dirs = [c[0] for c in calls]
    assert dirs == [str(tmp_path / "tune" / f"trial_{i:03d}") for i in range(4)]
    assert os.path.exists(tmp_path / "tune" / "study.db")
    assert all(1e-3 <= lr <= 1e-1 for _, lr, _ in calls)
    assert {tuple(u) for _, _, u in calls} <= {(8,), (16, 8)}
    out = capsys.readouterr().out
    assert "best trial" in out and "trial  state" in out
    best = tuner.best_trial
    assert best.value == min(t.value for t in tuner.study.trials)
    assert set(tuner.best_hparams) == {"lr", "units"}
    assert tuner.direction == "minimize"


def test_maximize_metric_defaults_direction(tmp_path):
    tuner = make_tuner(tmp_path, open(os.devnull, "w"), n_trials=2, metric="accuracy")  # noqa: SIM115
    assert tuner.direction == "maximize"
    learnrun.tune(make_experiment_fn()[0], tuner)
    assert tuner.best_trial.value == max(t.value for t in tuner.study.trials)


def test_study_resumes_after_interruption(tmp_path):
    sink = open(os.devnull, "w")  # noqa: SIM115
    experiment_fn, calls = make_experiment_fn(interrupt_on=3)
    with pytest.raises(KeyboardInterrupt):
        learnrun.tune(experiment_fn, make_tuner(tmp_path, sink))
    interrupted_dir, interrupted_lr, interrupted_units = calls[2]
    states = [t.state.name for t in make_tuner(tmp_path, sink).study.trials]
    assert states == ["COMPLETE", "COMPLETE", "RUNNING"]

    experiment_fn2, calls2 = make_experiment_fn()
    tuner = make_tuner(tmp_path, sink)
    learnrun.tune(experiment_fn2, tuner)
    # the interrupted trial's hyperparameters run again, in the same model_dir
    assert calls2[0] == (interrupted_dir, interrupted_lr, interrupted_units)
    trials = tuner.study.trials
    assert [t.state.name for t in trials].count("COMPLETE") == 4
    assert trials[2].state.name == "FAIL" and len(trials) == 5
    # a finished study does not run more trials
    experiment_fn3, calls3 = make_experiment_fn()
    learnrun.tune(experiment_fn3, make_tuner(tmp_path, sink))
    assert calls3 == []


def test_unknown_metric_fails_the_trial_with_a_clear_error(tmp_path):
    tuner = make_tuner(tmp_path, open(os.devnull, "w"), n_trials=1, metric="f2")  # noqa: SIM115
    with pytest.raises(ValueError, match="metric 'f2' is not in the trial's evaluation results"):
        learnrun.tune(make_experiment_fn()[0], tuner)
    assert tuner.study.trials[0].state.name == "FAIL"


def test_space_value_that_does_not_fit_hparam_type(tmp_path):
    tuner = OptunaTuner("lr=choice(fast)", n_trials=1, base_model_dir=str(tmp_path / "t"),
                        hparams=learnrun.HParams(lr=0.1), out=open(os.devnull, "w"))  # noqa: SIM115
    with pytest.raises(SearchSpaceError, match="lr='fast' does not fit the hyperparameter lr=0.1"):
        learnrun.tune(make_experiment_fn()[0], tuner)


def test_run_experiment_without_trial():
    tuner = OptunaTuner("lr=uniform(0,1)", storage="sqlite:///:memory:", n_trials=1)
    with pytest.raises(RuntimeError, match="call next_trial"):
        tuner.run_experiment(lambda **kw: None)


def test_cli_tune_resumes_after_the_process_dies(tmp_path):
    header = f"import sys\nsys.path.insert(0, {str(REPO_ROOT)!r})\n"
    (tmp_path / "exp.py").write_text(header + textwrap.dedent(
        """
        import os, signal
        import learnrun
        from tests.helpers.fakes import QuadraticEstimator

        def default_hparams():
            return learnrun.HParams(lr=0.05, units=[4])

        def experiment_fn(run_config, hparams):
            if os.environ.get("DIE_ON") == os.path.basename(run_config.model_dir):
                os.kill(os.getpid(), signal.SIGKILL)
            return learnrun.Experiment(QuadraticEstimator(run_config, hparams), lambda: [],
                                       lambda: [], train_steps=2, min_eval_frequency=0)
        """))
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    args = [sys.executable, "-m", "learnrun", "tune", "exp.py", "--trials", "3", "--space",
            "lr=loguniform(1e-3,1e-1),units=choice([8],[16,8])", "--model-dir", "t", "--seed", "1"]
    first = subprocess.run(args, cwd=tmp_path, env={**env, "DIE_ON": "trial_001"},
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == -9, first.stderr
    second = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert second.returncode == 0, second.stderr
    assert "trial 1 was interrupted; retrying" in second.stdout
    assert "best trial" in second.stdout
    study = optuna.load_study(study_name="exp", storage=f"sqlite:///{tmp_path}/t/study.db")
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 3 and states.count("FAIL") == 1
    assert study.trials[2].user_attrs["learnrun_model_dir"] == os.path.join("t", "trial_001")


def test_cli_tune_bad_space_is_one_line(tmp_path):
    (tmp_path / "exp.py").write_text("def experiment_fn(run_config, hparams):\n    pass\n")
    proc = subprocess.run(
        [sys.executable, "-m", "learnrun", "tune", "exp.py", "--trials", "2", "--space",
         "lr=loguniform(0,1)", "--model-dir", "t"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "learnrun: error: bad search space 'lr=loguniform(0,1)': lr: loguniform() needs low > 0, got 0"]


def test_pruning_stops_training_from_in_training_evaluations(tmp_path):
    from learnrun.examples import digits
    from learnrun.model_dir.checkpoints import list_checkpoints

    tuner = OptunaTuner(
        "learning_rate=loguniform(1e-3,1e-2)", metric="accuracy", n_trials=1,
        base_model_dir=str(tmp_path / "tune"), hparams=digits.default_hparams().parse(
            "train_steps=60"),
        config_overrides={"save_checkpoints_steps": 20},
        pruner=optuna.pruners.ThresholdPruner(lower=0.999), out=open(os.devnull, "w"))  # noqa: SIM115
    learnrun.tune(digits.experiment_fn, tuner)
    trial = tuner.study.trials[0]
    assert trial.state.name == "PRUNED"
    assert trial.intermediate_values and all(v < 0.999 for v in trial.intermediate_values.values())
    steps = [c.step for c in list_checkpoints(trial.user_attrs["learnrun_model_dir"])]
    assert max(steps) < 60
    assert "no trial completed" in tuner.summary()


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"metric": ""}, "metric must be the name"),
        ({"metric": 3}, "metric must be the name"),
        ({"direction": "up"}, "direction must be 'minimize' or 'maximize', got 'up'"),
        ({"n_trials": 0}, "n_trials must be a positive integer, got 0"),
        ({"n_trials": True}, "got True"),
        ({"base_model_dir": 3}, "base_model_dir must be a non-empty directory path, got 3"),
        ({"storage": ""}, "storage must be an optuna storage URL"),
        ({"storage": 3}, "storage must be a URL string or an optuna storage, got int 3"),
        ({"study_name": ""}, "study_name must be a non-empty string"),
        ({"schedule": 3}, "schedule must be a non-empty string"),
        ({"seed": 1.5}, "seed must be an integer or None, got 1.5"),
        ({"catch": (3,)}, "catch must hold exception classes, got 3"),
        ({"catch": 3}, "catch must be an exception class or a tuple"),
        ({"hparams": 3}, "hparams must be an HParams, a dict or None, got int 3"),
        ({"pruner": 3}, "pruner must be an optuna.pruners.BasePruner"),
        ({"sampler": "tpe"}, "sampler must be an optuna.samplers.BaseSampler"),
        ({"out": 3}, "out must be a writable text stream"),
        ({"run_config": 3}, "run_config must be a learnrun.RunConfig"),
        ({"config_overrides": 3}, "config_overrides must be a dict"),
        ({"config_overrides": {"bogus": 1}}, "RunConfig has no argument 'bogus'"),
        ({"config_overrides": {"model_dir": "x"}}, "model_dir is set per trial"),
    ],
)
def test_bad_constructor_arguments(tmp_path, kwargs, needle):
    args = {"base_model_dir": str(tmp_path / "t"), **kwargs}
    with pytest.raises(ValueError) as info:
        OptunaTuner("lr=uniform(0.1, 1)", **args)
    assert needle in str(info.value)


def test_bad_storage_and_direction_mismatch_are_named(tmp_path):
    tuner = OptunaTuner("lr=uniform(0.1, 1)", storage="bogus://x", base_model_dir=str(tmp_path))
    with pytest.raises(ValueError, match="cannot open the optuna storage 'bogus://x'"):
        tuner.study  # noqa: B018
    make_tuner(tmp_path, open(os.devnull, "w"), metric="accuracy").study  # noqa: B018, SIM115
    with pytest.raises(ValueError, match="was created to maximize; got direction='minimize'"):
        make_tuner(tmp_path, None, metric="accuracy", direction="minimize").study  # noqa: B018


def test_unknown_schedule_fails_the_trial_listing_the_schedules(tmp_path):
    tuner = make_tuner(tmp_path, open(os.devnull, "w"), n_trials=1, schedule="trian")  # noqa: SIM115
    with pytest.raises(ValueError, match="schedule 'trian' is not a method.*train_and_evaluate"):
        learnrun.tune(make_experiment_fn()[0], tuner)


def test_cli_tune_bad_input_lines(tmp_path):
    header = f"import sys\nsys.path.insert(0, {str(REPO_ROOT)!r})\n"
    (tmp_path / "exp.py").write_text(header + textwrap.dedent(
        """
        import learnrun
        from tests.helpers.fakes import QuadraticEstimator

        def experiment_fn(run_config, hparams):
            return learnrun.Experiment(QuadraticEstimator(run_config, hparams), lambda: [],
                                       lambda: [], train_steps=2, min_eval_frequency=0)

        def default_hparams():
            return learnrun.HParams(lr=0.05, units=[4])
        """))
    base = [sys.executable, "-m", "learnrun", "tune", "exp.py", "--model-dir", "t",
            "--space", "lr=loguniform(1e-3,1e-1)"]

    def cli(*args):
        return subprocess.run([*base, *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)

    proc = cli("--trials", "1", "--metric", "f2")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "learnrun: error: ValueError: metric 'f2' is not in the trial's evaluation results "
        "(accuracy, global_step, loss); pass one of them as metric (--metric on the command "
        "line) (run with --verbose for the traceback)"]
    proc = cli("--trials", "2", "--metric", "accuracy", "--study-name", "s")
    assert proc.returncode == 0, proc.stderr
    assert "best trial" in proc.stdout
    # column widths follow the values (accuracy 0.0123457 is wider than its header)
    assert re.search(r"^trial +state +accuracy +lr +model_dir$", proc.stdout, re.M)
    proc = cli("--trials", "2", "--metric", "accuracy", "--study-name", "s",
               "--direction", "minimize")
    assert proc.returncode == 2
    assert "was created to maximize" in proc.stderr and len(proc.stderr.splitlines()) == 1
    proc = cli("--trials", "2", "--direction", "up")
    assert proc.returncode == 2 and "invalid choice: 'up'" in proc.stderr
    proc = cli("--trials", "0")
    assert proc.returncode == 2 and "--trials must be >= 1, got 0" in proc.stderr
    proc = cli("--trials", "1", "--storage", "bogus://x")
    assert proc.returncode == 2 and "cannot open the optuna storage 'bogus://x'" in proc.stderr


def test_finished_trials_keep_no_event_file_open(tmp_path):
    # A study runs its trials in this process: each trial's event files (model_dir and eval
    # dirs) are closed when it ends, so hundreds of trials do not run out of file handles.
    from learnrun.examples import digits

    def open_event_files():
        found = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if "events.out.tfevents" in target and target.startswith(str(tmp_path)):
                found.append(target)
        return found

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd")
    tuner = OptunaTuner("learning_rate=loguniform(1e-3,1e-2)", metric="accuracy", n_trials=2,
                        base_model_dir=str(tmp_path / "tune"),
                        hparams=digits.default_hparams().parse("train_steps=20"),
                        out=open(os.devnull, "w"))  # noqa: SIM115
    learnrun.tune(digits.experiment_fn, tuner)
    assert [t.state.name for t in tuner.study.trials] == ["COMPLETE", "COMPLETE"]
    assert open_event_files() == []
    written = [os.path.join(root, f) for root, _, files in os.walk(tmp_path / "tune")
               for f in files if f.startswith("events.out.tfevents")]
    assert len(written) >= 4  # each trial's training and evaluation events, on disk
