"""config/environment.py: TF_CONFIG parsing, torchrun/SLURM detection, contradictions."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learnrun.config.cluster import ClusterInfo
from learnrun.config.environment import first_slurm_host, parse_tf_config, resolve_cluster

NOTE = "Note that these values may be coming from the TF_CONFIG environment variable"


def tf(cluster=None, task=None, **extra) -> dict[str, str]:
    config = dict(extra)
    if cluster is not None:
        config["cluster"] = cluster
    if task is not None:
        config["task"] = task
    return {"TF_CONFIG": json.dumps(config)}


CHIEF_CLUSTER = {
    "chief": ["host0:0"],
    "ps": ["host1:1", "host2:2"],
    "worker": ["host3:3", "host4:4", "host5:5"],
}


def test_no_torch_import():
    code = "import learnrun.config.run_config, learnrun.config.environment, learnrun.hparams, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- TF_CONFIG -------------------------------------------------------------------------------


def test_absent_or_blank_tf_config_is_local():
    for env in ({}, {"TF_CONFIG": ""}, {"TF_CONFIG": "  "}, {"TF_CONFIG": "{}"}):
        info = resolve_cluster(env)
        assert info == ClusterInfo()
        assert (info.task_type, info.task_id, info.rank, info.world_size, info.source) == (
            None,
            0,
            0,
            1,
            None,
        )
        assert info.is_chief and info.environment == "local" and not info.cluster_spec


def test_bad_json_names_tf_config_and_text():
    with pytest.raises(ValueError, match=r"TF_CONFIG is not valid JSON .*'\{cluster'"):
        resolve_cluster({"TF_CONFIG": "{cluster"})
    with pytest.raises(TypeError, match="TF_CONFIG must be a JSON object, got list"):
        parse_tf_config("[1, 2]")


@pytest.mark.parametrize(
    "config, error, text",
    [
        ({"task": "worker"}, TypeError, r'TF_CONFIG\["task"\] must be a JSON object'),
        (
            {"task": {"type": 3}},
            TypeError,
            r'TF_CONFIG\["task"\]\["type"\] must be a string, got 3',
        ),
        (
            {"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "x"}},
            TypeError,
            r'\["index"\] must be an integer, got \'x\'',
        ),
        (
            {"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1.5}},
            TypeError,
            "must be an integer, got 1.5",
        ),
        ({"cluster": {"worker": "a:1"}}, TypeError, "The tasks for job 'worker' must be a list"),
        ({"cluster": ["a:1"]}, TypeError, "must be a dictionary mapping"),
        ({"environment": 3}, TypeError, r'TF_CONFIG\["environment"\] must be a string'),
        ({"model_dir": 3}, TypeError, r'TF_CONFIG\["model_dir"\] must be a string'),
        ({"session_master": []}, TypeError, "must be a string"),
    ],
)
def test_wrong_value_types(config, error, text):
    with pytest.raises(error, match=text) as info:
        resolve_cluster({"TF_CONFIG": json.dumps(config)})
    assert NOTE in str(info.value)


def test_worker_in_cluster_without_chief():
    info = resolve_cluster(
        tf(
            {"ps": ["host1:1", "host2:2"], "worker": ["host3:3", "host4:4", "host5:5"]},
            {"type": "worker", "index": 1},
        )
    )
    assert (info.task_type, info.task_id, info.source) == ("worker", 1, "TF_CONFIG")
    assert (info.rank, info.world_size, info.global_id_in_cluster) == (1, 3, 1)
    assert (info.master_addr, info.master_port) == ("host3", 3)
    assert info.derived_master == "grpc://host4:4"
    assert not info.is_chief and info.num_ps_replicas == 2 and info.num_worker_replicas == 3


def test_rank_convention_with_chief():
    env_of = lambda t, i: tf(CHIEF_CLUSTER, {"type": t, "index": i})  # noqa: E731
    chief = resolve_cluster(env_of("chief", 0))
    assert (chief.rank, chief.world_size, chief.global_id_in_cluster, chief.is_chief) == (
        0,
        4,
        0,
        True,
    )
    assert (chief.master_addr, chief.master_port) == ("host0", 0)
    worker2 = resolve_cluster(env_of("worker", 2))
    assert (worker2.rank, worker2.global_id_in_cluster, worker2.is_chief) == (3, 3, False)
    ps1 = resolve_cluster(env_of("ps", 1))
    assert (ps1.rank, ps1.world_size, ps1.global_id_in_cluster) == (None, 4, 5)
    evaluator = resolve_cluster(env_of("evaluator", 0))
    assert (evaluator.rank, evaluator.global_id_in_cluster, evaluator.is_chief) == (
        None,
        None,
        False,
    )
    assert evaluator.cluster_spec == CHIEF_CLUSTER and evaluator.derived_master == ""


def test_global_id_orders_other_jobs_alphabetically():
    cluster = dict(CHIEF_CLUSTER, other_type=["o0:1", "o1:1"])
    info = resolve_cluster(tf(cluster, {"type": "other_type", "index": 1}))
    assert info.global_id_in_cluster == 2 and info.rank is None
    assert resolve_cluster(tf(cluster, {"type": "worker", "index": 0})).global_id_in_cluster == 3
    master_cluster = {"master": ["m:1"], "ps": ["p:1"], "worker": ["w:1", "w:2"]}
    info = resolve_cluster(tf(master_cluster, {"type": "worker", "index": 1}))
    assert (info.global_id_in_cluster, info.rank, info.world_size) == (2, 2, 3)
    assert resolve_cluster(tf(master_cluster, {"type": "ps", "index": 0})).global_id_in_cluster == 3


def test_master_is_chief_in_master_cluster():
    cluster = {"master": ["m:7"], "ps": ["p:1"], "worker": ["w:1"]}
    assert resolve_cluster(tf(cluster, {"type": "master", "index": 0})).is_chief
    info = resolve_cluster(tf(cluster, {"type": "worker", "index": 0}))
    assert not info.is_chief and (info.master_addr, info.master_port) == ("m", 7)


def test_task_index_from_string_and_task_without_type():
    info = resolve_cluster(tf({"worker": ["a:1", "b:2"]}, {"type": "worker", "index": "1"}))
    assert info.task_id == 1
    info = resolve_cluster(tf({"worker": ["a:1", "b:2"]}))
    assert (info.task_type, info.task_id, info.rank, info.is_chief) == (None, 0, None, True)


def test_cluster_less_tf_config():
    info = resolve_cluster(
        tf(task={"type": "worker", "index": 0}, model_dir="/m", environment="cloud")
    )
    assert (info.task_type, info.task_id, info.rank, info.world_size, info.is_chief) == (
        "worker",
        0,
        0,
        1,
        True,
    )
    assert (info.tf_config_model_dir, info.environment, info.source) == ("/m", "cloud", "TF_CONFIG")
    with pytest.raises(
        ValueError, match='If "cluster" is not set in TF_CONFIG, task type must be WORKER.'
    ):
        resolve_cluster(tf(task={"type": "chief", "index": 0}))
    with pytest.raises(
        ValueError, match='If "cluster" is not set in TF_CONFIG, task index must be 0.'
    ):
        resolve_cluster(tf(task={"type": "worker", "index": 1}))
    with pytest.raises(ValueError, match="task index must be 0"):
        resolve_cluster(tf(task={"index": 2}))
    with pytest.raises(ValueError, match="model_dir in TF_CONFIG should be non-empty."):
        resolve_cluster(tf(model_dir=""))


def test_service_and_session_masters():
    info = resolve_cluster(
        tf(service={"b": 1, "a": 2}, session_master="s", eval_session_master="e")
    )
    assert info.service == {"b": 1, "a": 2}
    assert (info.session_master, info.eval_session_master) == ("s", "e")
    with pytest.raises(
        TypeError, match='If "service" is set in TF_CONFIG, it must be a dict. Given'
    ):
        resolve_cluster(tf(service=789))


@pytest.mark.parametrize(
    "cluster, task, text",
    [
        (
            {"chief": ["a:1", "b:1"], "worker": ["w:1"]},
            {"type": "worker", "index": 0},
            'The "cluster" in TF_CONFIG must have only one "chief" node.',
        ),
        (
            {"master": ["a:1", "b:1"]},
            {"type": "master", "index": 0},
            'The "cluster" in TF_CONFIG must have only one "master" node.',
        ),
        (
            {"chief": ["a:1"], "master": ["b:1"]},
            {"type": "chief", "index": 0},
            "If `master` node exists in `cluster`, job `chief` is not supported.",
        ),
        (
            {"master": ["a:1"], "worker": ["w:1"]},
            {"type": "evaluator", "index": 0},
            "If `master` node exists in `cluster`, task_type `evaluator` is not supported.",
        ),
        (
            CHIEF_CLUSTER,
            {"type": "worker"},
            'If "cluster" is set in TF_CONFIG, task index must be set.',
        ),
        (CHIEF_CLUSTER, {"type": "worker", "index": -1}, "Task index must be non-negative number."),
        (
            CHIEF_CLUSTER,
            {"type": "evaluator", "index": -1},
            "Task index must be non-negative number.",
        ),
        (
            CHIEF_CLUSTER,
            {"type": "worker", "index": 3},
            "3 is not a valid task_id for task_type worker",
        ),
        (
            CHIEF_CLUSTER,
            {"type": "chief", "index": 1},
            "1 is not a valid task_id for task_type chief",
        ),
        (
            {"ps": ["p:1"], "chief": ["c:1"]},
            {"type": "worker", "index": 0},
            "worker is not a valid task_type in the cluster_spec",
        ),
        (
            {"chief": ["host0"], "worker": ["w:1"]},
            {"type": "worker", "index": 0},
            "The chief task's address 'host0' must be 'host:port'",
        ),
    ],
)
def test_contradictions_fail_at_start_up(cluster, task, text):
    with pytest.raises(ValueError, match=__import__("re").escape(text)):
        resolve_cluster(tf(cluster, task))


def test_invalid_task_message_shows_cluster_and_note():
    with pytest.raises(ValueError) as info:
        resolve_cluster(
            tf(
                {"ps": ["p:1"], "worker": ["w:1", "w:2"]},
                {"type": "not_in_cluster_spec", "index": 0},
            )
        )
    assert str(info.value) == (
        "not_in_cluster_spec is not a valid task_type in the cluster_spec:\n"
        "ClusterSpec({'ps': ['p:1'], 'worker': ['w:1', 'w:2']})\n\n" + NOTE + "."
    )


def test_validate_task_false_accepts_unknown_task():
    info = resolve_cluster(
        tf({"ps": ["p:1"], "my_job_name": ["m:3"]}, {"type": "worker", "index": 2}),
        validate_task=False,
    )
    assert (info.task_type, info.task_id, info.rank, info.global_id_in_cluster) == (
        "worker",
        2,
        None,
        None,
    )
    assert info.world_size == 0 and info.master_addr is None and not info.is_chief


def test_evaluator_may_have_any_index_and_be_outside_the_cluster():
    info = resolve_cluster(tf(CHIEF_CLUSTER, {"type": "evaluator", "index": 12}))
    assert (info.task_id, info.rank, info.world_size) == (12, None, 4)


def test_rank_and_world_size_must_agree_with_tf_config():
    env = tf(CHIEF_CLUSTER, {"type": "worker", "index": 1})
    info = resolve_cluster({**env, "RANK": "2", "WORLD_SIZE": "4"})
    assert info.rank == 2 and info.source == "TF_CONFIG"
    with pytest.raises(
        ValueError, match="WORLD_SIZE=3 contradicts TF_CONFIG, whose cluster has 4 trainers"
    ):
        resolve_cluster({**env, "WORLD_SIZE": "3"})
    with pytest.raises(
        ValueError, match="RANK=1 contradicts TF_CONFIG, where task worker:1 has trainer rank 2"
    ):
        resolve_cluster({**env, "RANK": "1"})
    # ps tasks are not trainers: RANK/WORLD_SIZE are not compared
    resolve_cluster(
        {**tf(CHIEF_CLUSTER, {"type": "ps", "index": 0}), "RANK": "9", "WORLD_SIZE": "9"}
    )


# -- torchrun / PyTorchJob -------------------------------------------------------------------

TORCHRUN = {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1234", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}


def test_torchrun_rank_zero_is_chief():
    info = resolve_cluster({**TORCHRUN, "RANK": "0"})
    assert (info.source, info.task_type, info.task_id, info.rank, info.world_size) == (
        "torchrun",
        "chief",
        0,
        0,
        4,
    )
    assert info.is_chief and info.global_id_in_cluster == 0 and info.local_rank == 1
    assert (info.master_addr, info.master_port) == ("10.0.0.1", 1234)
    assert info.cluster_spec.as_dict() == {
        "chief": ["10.0.0.1:1234"],
        "worker": ["torchrun-rank-1", "torchrun-rank-2", "torchrun-rank-3"],
    }
    assert info.num_worker_replicas == 4 and info.num_ps_replicas == 0


def test_torchrun_other_ranks_are_workers():
    info = resolve_cluster({**TORCHRUN, "RANK": "3"})
    assert (info.task_type, info.task_id, info.rank, info.global_id_in_cluster) == (
        "worker",
        2,
        3,
        3,
    )
    assert not info.is_chief


def test_torchrun_single_process():
    info = resolve_cluster({"RANK": "0", "WORLD_SIZE": "1"})
    assert (info.task_type, info.world_size, info.master_addr, info.master_port) == (
        "chief",
        1,
        "127.0.0.1",
        29500,
    )
    assert (
        info.cluster_spec.as_dict() == {"chief": ["127.0.0.1:29500"]} and info.derived_master == ""
    )


def test_torchrun_ipv6_address():
    info = resolve_cluster(
        {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "::1", "MASTER_PORT": "5"}
    )
    assert info.cluster_spec.task_address("chief", 0) == "[::1]:5" and info.master_addr == "::1"


@pytest.mark.parametrize(
    "env, text",
    [
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK must be an integer, got 'x'"),
        ({"RANK": "0", "WORLD_SIZE": "two"}, "WORLD_SIZE must be an integer, got 'two'"),
        ({"RANK": "4", "WORLD_SIZE": "4"}, r"RANK=4 is out of range for WORLD_SIZE=4"),
        ({"RANK": "-1", "WORLD_SIZE": "4"}, r"RANK=-1 is out of range"),
        ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE must be >= 1, got 0"),
        ({"RANK": "0"}, "RANK is set but WORLD_SIZE is not"),
        ({"WORLD_SIZE": "2"}, "WORLD_SIZE is set but RANK is not"),
        (
            {"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "1"},
            "WORLD_SIZE=2 but MASTER_ADDR is not set",
        ),
        (
            {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h"},
            "WORLD_SIZE=2 but MASTER_PORT is not set",
        ),
        (
            {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "70000"},
            "MASTER_PORT must be in 1..65535",
        ),
        ({**TORCHRUN, "RANK": "0", "LOCAL_RANK": "-2"}, "LOCAL_RANK must be >= 0"),
    ],
)
def test_torchrun_errors(env, text):
    with pytest.raises(ValueError, match=text):
        resolve_cluster(env)


# -- SLURM -----------------------------------------------------------------------------------

SLURM = {
    "SLURM_NTASKS": "3",
    "SLURM_NODELIST": "gpu[07-09],cpu1",
    "SLURM_LOCALID": "0",
    "SLURM_JOB_NAME": "train",
}


def test_slurm_detection():
    info = resolve_cluster({**SLURM, "SLURM_PROCID": "2"})
    assert (info.source, info.task_type, info.task_id, info.rank, info.world_size) == (
        "slurm",
        "worker",
        1,
        2,
        3,
    )
    assert (info.master_addr, info.master_port, info.local_rank) == ("gpu07", 29500, 0)
    assert info.cluster_spec.as_dict() == {
        "chief": ["gpu07:29500"],
        "worker": ["slurm-rank-1", "slurm-rank-2"],
    }
    info = resolve_cluster(
        {**SLURM, "SLURM_PROCID": "0", "MASTER_ADDR": "head", "MASTER_PORT": "777"}
    )
    assert (info.task_type, info.master_addr, info.master_port, info.is_chief) == (
        "chief",
        "head",
        777,
        True,
    )


def test_slurm_is_ignored_for_one_task_or_interactive_shells():
    assert resolve_cluster({**SLURM, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}).source is None
    assert resolve_cluster({**SLURM, "SLURM_JOB_NAME": "bash", "SLURM_PROCID": "1"}).source is None
    assert resolve_cluster({"SLURM_PROCID": "1"}).source is None


def test_precedence_tf_config_then_torchrun_then_slurm():
    both = {**SLURM, "SLURM_PROCID": "1", **TORCHRUN, "RANK": "2"}
    assert resolve_cluster(both).source == "torchrun"
    env = {**both, **tf({"worker": ["a:1", "b:2", "c:3", "d:4"]}, {"type": "worker", "index": 2})}
    assert resolve_cluster(env).source == "TF_CONFIG"
    # a TF_CONFIG with only model_dir leaves the role to torchrun but keeps its model_dir
    info = resolve_cluster({**both, **tf(model_dir="/m")})
    assert info.source == "torchrun" and info.tf_config_model_dir == "/m"


@pytest.mark.parametrize(
    "env, text",
    [
        ({**SLURM, "SLURM_PROCID": "3"}, "SLURM_PROCID=3 is out of range for SLURM_NTASKS=3"),
        ({**SLURM}, "SLURM_NTASKS is set but SLURM_PROCID is not"),
        ({**SLURM, "SLURM_PROCID": "a"}, "SLURM_PROCID must be an integer"),
        ({**SLURM, "SLURM_NTASKS": "many"}, "SLURM_NTASKS must be an integer"),
        (
            {"SLURM_NTASKS": "2", "SLURM_PROCID": "0"},
            "neither MASTER_ADDR nor SLURM_NODELIST is set",
        ),
    ],
)
def test_slurm_errors(env, text):
    with pytest.raises(ValueError, match=text):
        resolve_cluster(env)


@pytest.mark.parametrize(
    "nodelist, host",
    [
        ("node1", "node1"),
        ("node1,node2", "node1"),
        ("node[03-05,9],gpu1", "node03"),
        ("a-[1-3]-x", "a-1-x"),
        ("rack[2-3]node[5-6]", "rack2node5"),
    ],
)
def test_first_slurm_host(nodelist, host):
    assert first_slurm_host(nodelist) == host


# -- properties ------------------------------------------------------------------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=True)
    | st.sampled_from(
        ["", "a:1", "b:2", "worker", "chief", "ps", "master", "evaluator", "0", "-1", "x"]
    ),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["0", "1", "3", "worker", "chief", "ps", "master", "x"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)
_tf_configs = st.fixed_dictionaries(
    {},
    optional={
        "cluster": _json_values,
        "task": st.fixed_dictionaries({}, optional={"type": _json_values, "index": _json_values})
        | _json_values,
        "environment": _json_values,
        "model_dir": _json_values,
        "service": _json_values,
    },
)


@settings(max_examples=150, deadline=None)
@given(_tf_configs)
def test_tf_config_structures_raise_only_value_or_type_error(config):
    try:
        info = resolve_cluster({"TF_CONFIG": json.dumps(config)})
    except (ValueError, TypeError):
        return
    assert isinstance(info.task_id, int) and isinstance(info.world_size, int)
    assert info.rank is None or 0 <= info.rank < info.world_size
    assert isinstance(info.is_chief, bool)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='{}[]":,0123 abtrue-', max_size=40) | st.text(max_size=20))
def test_tf_config_text_raises_only_value_or_type_error(text):
    try:
        resolve_cluster({"TF_CONFIG": text})
    except (ValueError, TypeError):
        pass


@pytest.mark.parametrize("cluster", [{"worker": []}, {"worker": ["a:1"], "ps": {}}])
def test_tf_config_job_without_tasks_is_refused(cluster):
    # Found by the property test above: an empty job used to fail with an IndexError.
    with pytest.raises(ValueError, match=r"TF_CONFIG\[\"cluster\"\]\['(worker|ps)'\] has no tasks"):
        resolve_cluster({"TF_CONFIG": json.dumps({"cluster": cluster})})
