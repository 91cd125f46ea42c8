"""learnrun.run / tune: spec 8.1 (learn_runner_test) plus the seed's default-schedule table."""

from __future__ import annotations

import json

import pytest

from learnrun import runner
from learnrun.config.run_config import RunConfig
from learnrun.experiment import Experiment
from learnrun.hparams import HParams
from tests.helpers.fakes import FakeEstimator, FakeRunConfig, fake_input_fn


def make_config(model_dir=None, cluster_spec=None, task_type=None, task_id=0, **kwargs):
    """A real RunConfig; the cluster and task come from an explicit TF_CONFIG."""
    tf_config = {}
    if cluster_spec:
        tf_config["cluster"] = cluster_spec
    if task_type:
        tf_config["task"] = {"type": task_type, "index": task_id}
    environ = {"TF_CONFIG": json.dumps(tf_config)} if tf_config else {}
    return RunConfig(model_dir=model_dir, environ=environ, **kwargs)


class TestExperiment(Experiment):
    """Schedules return ``"<method>-<model_dir>"`` (TF's learn_runner_test double)."""

    __test__ = False  # not a pytest class

    def __init__(self, default=None, config=None):
        estimator = FakeEstimator(config=config or make_config(model_dir="out"))
        super().__init__(estimator, fake_input_fn, fake_input_fn)
        self.default = default

    def _name(self, method):
        return f"{method}-{self.estimator.model_dir}"

    def simple_task(self):
        return f"simple_task, default={self.default}."

    def train(self, delay_secs=None):
        return self._name("train")

    def evaluate(self, delay_secs=None, name=None):
        return self._name("evaluate")

    def train_and_evaluate(self):
        return self._name("train_and_evaluate")

    def local_run(self):
        return self._name("local_run")

    def continuous_eval(self, *args, **kwargs):
        return self._name("continuous_eval")

    def serve(self):
        return self._name("serve")

    def run_std_server(self):
        return self._name("run_std_server")


def build_experiment(output_dir):
    return TestExperiment(config=make_config(model_dir=output_dir))


def build_experiment_for_run_config(run_config, hparams):
    return TestExperiment(config=run_config)


def build_non_experiment(output_dir):
    return "Ceci n'est pas un Experiment."


def build_non_experiment_for_run_config(run_config, hparams):
    return "Ceci n'est pas un Experiment."


# -- output_dir form (8.1 #1-#10) -------------------------------------------------------------
def test_run_with_custom_schedule():
    assert runner.run(build_experiment, output_dir="out", schedule="simple_task") == (
        "simple_task, default=None."
    )


def test_run_with_explicit_local_run():
    assert runner.run(build_experiment, output_dir="out", schedule="local_run") == "local_run-out"


def test_fail_output_dir_and_run_config_are_both_set():
    with pytest.raises(ValueError, match="Cannot provide both `output_dir` and `run_config`"):
        runner.run(build_experiment, output_dir="out", run_config=make_config(model_dir="out"))


def test_fail_empty_output_dir():
    with pytest.raises(ValueError, match="Must specify an output directory"):
        runner.run(build_experiment, output_dir="", schedule="simple_task")


def test_fail_no_output_dir():
    with pytest.raises(ValueError, match="Must set value for `output_dir` or `run_config`"):
        runner.run(build_experiment, None, "simple_task")


def test_fail_hparams_are_set():
    with pytest.raises(
        ValueError, match="Must set `hparams` as None for `experiment_fn` with `output_dir`."
    ):
        runner.run(build_experiment, output_dir="out", schedule="simple_task", hparams={})


def test_fail_non_callable():
    with pytest.raises(TypeError, match="Experiment builder .* is not callable"):
        runner.run("not callable", "out", "simple_test")


def test_callable_check_comes_before_empty_output_dir():
    with pytest.raises(TypeError, match="is not callable"):
        runner.run("not callable", "", "x")


def test_fail_not_experiment():
    with pytest.raises(TypeError, match="Experiment builder did not return an Experiment"):
        runner.run(build_non_experiment, output_dir="out", schedule="simple_task")


def test_fail_non_existent_task_lists_schedules():
    with pytest.raises(ValueError, match="Schedule references non-existent task mirage") as e:
        runner.run(build_experiment, output_dir="out", schedule="mirage")
    assert "'simple_task'" in str(e.value) and "'train_and_evaluate'" in str(e.value)
    assert "'default'" not in str(e.value)


def test_fail_non_callable_task_lists_schedules():
    with pytest.raises(TypeError, match="Schedule references non-callable member default") as e:
        runner.run(build_experiment, output_dir="out", schedule="default")
    assert "'local_run'" in str(e.value)


# -- run_config form (8.1 #11-#21) ------------------------------------------------------------
def test_run_config_custom_schedule():
    config = make_config(model_dir="out")
    assert runner.run(
        build_experiment_for_run_config, run_config=config, schedule="simple_task"
    ) == ("simple_task, default=None.")


def test_run_config_hparams_reach_the_builder():
    hparams = HParams(learning_rate=0.01)
    seen = []

    def build(run_config, hparams):
        seen.append((run_config, hparams))
        return TestExperiment(config=run_config)

    config = make_config(model_dir="out")
    assert runner.run(build, run_config=config, schedule="simple_task", hparams=hparams) == (
        "simple_task, default=None."
    )
    assert seen == [(config, hparams)]
    assert seen[0][1] is hparams


def test_run_config_explicit_local_run():
    assert (
        runner.run(
            build_experiment_for_run_config,
            run_config=make_config(model_dir="out"),
            schedule="local_run",
        )
        == "local_run-out"
    )


def test_run_config_requires_model_dir():
    with pytest.raises(
        ValueError, match="Must specify a model directory `model_dir` in `run_config`."
    ):
        runner.run(build_experiment_for_run_config, run_config=make_config(model_dir=None))


def test_empty_model_dir_is_refused_by_run_config_itself():
    # 8.1 #14: learnrun's RunConfig rejects model_dir="" at construction (core rule).
    with pytest.raises(ValueError, match="model_dir should be non-empty"):
        make_config(model_dir="")


def test_fail_invalid_run_config_type():
    with pytest.raises(ValueError, match="`run_config` must be `learnrun.RunConfig` instance"):
        runner.run(build_experiment_for_run_config, run_config="invalid_run_config")


def test_fail_invalid_hparams_type():
    with pytest.raises(ValueError, match="`hparams` must be `HParams` instance"):
        runner.run(
            build_experiment_for_run_config,
            run_config=make_config(model_dir="out"),
            hparams=["hparams"],
        )


def test_run_config_fail_non_callable():
    with pytest.raises(TypeError, match="Experiment builder .* is not callable"):
        runner.run("not callable", run_config=make_config(model_dir="out"))


def test_run_config_fail_not_experiment():
    with pytest.raises(TypeError, match="Experiment builder did not return an Experiment"):
        runner.run(build_non_experiment_for_run_config, run_config=make_config(model_dir="out"))


def test_run_config_fail_schedules():
    config = make_config(model_dir="out")
    with pytest.raises(ValueError, match="non-existent task"):
        runner.run(build_experiment_for_run_config, run_config=config, schedule="mirage")
    with pytest.raises(TypeError, match="non-callable member"):
        runner.run(build_experiment_for_run_config, run_config=config, schedule="default")


def test_uid_check_fails_for_another_config():
    def build(run_config, hparams):
        return TestExperiment(config=make_config(model_dir="another"))

    with pytest.raises(
        RuntimeError, match="`RunConfig` instance is expected to be used by the `Estimator`"
    ):
        runner.run(build, run_config=make_config(model_dir="out"), schedule="simple_task")


def test_uid_check_fails_for_config_without_uid():
    class NoUid:
        model_dir = "out"

    def build(run_config, hparams):
        experiment = TestExperiment(config=run_config)
        experiment.estimator.config = NoUid()
        return experiment

    with pytest.raises(RuntimeError, match="Pass `run_config` argument of the `experiment_fn`"):
        runner.run(build, run_config=make_config(model_dir="out"), schedule="simple_task")


def test_fake_config_is_not_a_run_config():
    with pytest.raises(ValueError, match="`run_config` must be `learnrun.RunConfig` instance"):
        runner.run(build_experiment_for_run_config, run_config=FakeRunConfig(model_dir="out"))


def test_uid_check_passes_for_whitelisted_replace():
    def build(run_config, hparams):
        return TestExperiment(config=run_config.replace(save_checkpoints_steps=123))

    config = make_config(model_dir="out")
    assert runner.run(build, run_config=config, schedule="local_run") == "local_run-out"


# -- default schedules (8.1 #22-#28 with the seed's table) -------------------------------------
CLUSTER = {
    "ps": ["ps0:1"],
    "worker": ["w0:1", "w1:1"],
    "chief": ["c0:1"],
    "evaluator": ["e0:1"],
    "foo_has_no_default_schedule": ["f0:1"],
}
# TF 8.1 #22-#24: a master-style cluster (a cluster may not hold both master and chief)
MASTER_CLUSTER = {
    "ps": ["ps0:1", "ps1:1"],
    "worker": ["w0:1", "w1:1"],
    "master": ["m0:1"],
    "foo_has_no_default_schedule": ["f0:1"],
}


@pytest.mark.parametrize(
    "cluster, task_type, schedule",
    [
        (CLUSTER, "ps", "serve"),
        (CLUSTER, "worker", "train"),
        (CLUSTER, "chief", "local_run"),
        (CLUSTER, "evaluator", "continuous_eval"),
        (MASTER_CLUSTER, "ps", "serve"),
        (MASTER_CLUSTER, "worker", "train"),
        (MASTER_CLUSTER, "master", "local_run"),
    ],
)
def test_default_schedule_table(cluster, task_type, schedule):
    config = make_config(model_dir="out", cluster_spec=cluster, task_type=task_type)
    assert runner.default_schedule(config) == schedule
    assert runner.run(build_experiment_for_run_config, run_config=config) == f"{schedule}-out"


def test_default_schedule_not_distributed():
    assert runner.default_schedule(None) == "train_and_evaluate"
    assert runner.run(build_experiment, output_dir="out") == "train_and_evaluate-out"
    single = make_config(model_dir="out", cluster_spec={"foo": ["localhost:1234"]})
    assert runner.run(build_experiment_for_run_config, run_config=single) == (
        "train_and_evaluate-out"
    )


def test_default_schedule_counts_sparse_holes():
    sparse = make_config(
        model_dir="out", cluster_spec={"worker": {"1": "w1:1"}}, task_type="worker", task_id=1
    )
    assert runner.default_schedule(sparse) == "train"


def test_no_default_schedule_for_unknown_task_type():
    config = make_config(
        model_dir="out", cluster_spec=CLUSTER, task_type="foo_has_no_default_schedule"
    )
    with pytest.raises(
        ValueError, match="No default schedule for task type: foo_has_no_default_schedule"
    ):
        runner.run(build_experiment_for_run_config, run_config=config)


def test_distributed_without_task_type_must_specify_schedule():
    config = make_config(model_dir="out", cluster_spec=CLUSTER)
    with pytest.raises(ValueError, match="Must specify a schedule"):
        runner.run(build_experiment_for_run_config, run_config=config)


def test_empty_schedule_means_default():
    assert runner.run(build_experiment, output_dir="out", schedule="") == "train_and_evaluate-out"


# -- tune (spec 6) ----------------------------------------------------------------------------
class ListTuner(runner.Tuner):
    def __init__(self, trials):
        self.trials = list(trials)
        self.results = []

    def next_trial(self):
        return bool(self.trials)

    def run_experiment(self, experiment_fn):
        hparams = self.trials.pop(0)
        experiment = experiment_fn(run_config=make_config(model_dir="out"), hparams=hparams)
        self.results.append(experiment.simple_task())


def test_tune_runs_every_trial():
    tuner = ListTuner([HParams(lr=0.1), HParams(lr=0.2)])
    assert runner.tune(build_experiment_for_run_config, tuner) is None
    assert tuner.results == ["simple_task, default=None."] * 2


def test_tune_requires_hparams():
    tuner = ListTuner([None])
    with pytest.raises(ValueError, match="`hparams` cannot be `None`."):
        runner.tune(build_experiment_for_run_config, tuner)


def test_tune_rejects_bad_arguments():
    with pytest.raises(TypeError, match="is not callable"):
        runner.tune("nope", ListTuner([]))
    with pytest.raises(TypeError, match="must implement learnrun.Tuner"):
        runner.tune(build_experiment_for_run_config, object())


def test_tuner_is_abstract():
    with pytest.raises(TypeError):
        runner.Tuner()

    class Half(runner.Tuner):
        def next_trial(self):
            return super().next_trial()

        def run_experiment(self, experiment_fn):
            return super().run_experiment(experiment_fn)

    with pytest.raises(NotImplementedError, match="Calling an abstract method."):
        Half().next_trial()
    with pytest.raises(NotImplementedError, match="Calling an abstract method."):
        Half().run_experiment(None)


def test_public_names():
    import learnrun

    assert learnrun.run is runner.run
    assert learnrun.tune is runner.tune
    assert learnrun.Tuner is runner.Tuner


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", [123, ["train"], b"train"])
def test_schedule_must_be_a_string(schedule):
    with pytest.raises(
        TypeError, match=r"`schedule` must be the name of an Experiment method.*got"
    ):
        runner.run(build_experiment, output_dir="out", schedule=schedule)


def test_output_dir_must_be_a_path(tmp_path):
    with pytest.raises(TypeError, match=r"`output_dir` must be a path .*got 123"):
        runner.run(build_experiment, output_dir=123, schedule="simple_task")
    # a pathlib.Path is passed through to the builder unchanged
    assert runner.run(build_experiment, output_dir=tmp_path, schedule="local_run") == (
        f"local_run-{tmp_path}"
    )


def test_missing_model_dir_message_names_value_and_fix():
    with pytest.raises(ValueError, match=r"Got model_dir=None; use RunConfig\(model_dir=\.\.\.\)"):
        runner.run(build_experiment_for_run_config, run_config=make_config(), schedule="train")
