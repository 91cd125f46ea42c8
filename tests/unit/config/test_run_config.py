"""RunConfig: TF contrib cases (spec 8.3), applicable core cases (8.4), learnrun fields."""

from __future__ import annotations

import copy
import json
import os
import random

import pytest

import learnrun
from learnrun.config.run_config import RunConfig, SessionConfig

TF_CONFIG_ENV = "TF_CONFIG"
CLUSTER = {"ps": ["host1:1", "host2:2"], "worker": ["host3:3", "host4:4", "host5:5"]}
CHIEF_CLUSTER = {
    "chief": ["host0:0"],
    "ps": ["host1:1", "host2:2"],
    "worker": ["host3:3", "host4:4", "host5:5"],
}
MASTER_CLUSTER = {
    "master": ["host0:0"],
    "ps": ["host1:1", "host2:2"],
    "worker": ["host3:3", "host4:4", "host5:5"],
}


def env(cluster=None, task=None, **extra) -> dict[str, str]:
    config = dict(extra)
    if cluster is not None:
        config["cluster"] = cluster
    if task is not None:
        config["task"] = task
    return {TF_CONFIG_ENV: json.dumps(config)}


def device_fn(op):
    return op


# -- 8.3 contrib RunConfig ---------------------------------------------------------------


def test_public_names_and_core_keywords():  # 8.3.1: one class plays contrib and core roles
    assert learnrun.RunConfig is RunConfig
    config = RunConfig(
        train_distribute="t", eval_distribute="e", experimental_max_worker_delay_secs=10
    )
    assert (
        config.train_distribute,
        config.eval_distribute,
        config.experimental_max_worker_delay_secs,
    ) == (
        "t",
        "e",
        10,
    )
    assert config.device_fn is None and config.protocol is None and config.service is None


def test_defaults_with_no_tf_config():  # 8.3.2 (+ 3.1 defaults)
    config = RunConfig(environ={})
    assert config.master == ""
    assert config.task_id == 0
    assert config.num_ps_replicas == 0
    assert config.cluster_spec == {}
    assert config.task_type is None
    assert config.is_chief
    assert config.evaluation_master == ""
    assert config.num_worker_replicas == 0
    assert config.environment == "local"
    assert config.model_dir is None
    assert (config.save_checkpoints_secs, config.save_checkpoints_steps) == (600, None)
    assert (config.rank, config.world_size, config.global_id_in_cluster, config.cluster_source) == (
        0,
        1,
        0,
        None,
    )
    assert config.master_addr is None and config.master_port is None


def test_values_from_tf_config():  # 8.3.3
    config = RunConfig(environ=env(CLUSTER, {"type": "worker", "index": 1}))
    assert config.master == "grpc://host4:4"
    assert config.task_id == 1
    assert config.num_ps_replicas == 2
    assert config.num_worker_replicas == 3
    assert config.cluster_spec.as_dict() == CLUSTER
    assert config.task_type == "worker"
    assert not config.is_chief
    assert config.evaluation_master == ""
    assert (config.rank, config.world_size, config.cluster_source) == (1, 3, "TF_CONFIG")
    assert (config.master_addr, config.master_port) == ("host3", 3)


def test_explicitly_specified_values():  # 8.3.4
    cluster = {
        "ps": ["localhost:9990"],
        "my_job_name": ["localhost:9991", "localhost:9992", "localhost:0"],
    }
    config = RunConfig(
        master="localhost:0",
        evaluation_master="localhost:9991",
        environ=env(cluster, {"type": "worker", "index": 2}),
    )
    assert config.master == "localhost:0"
    assert config.task_id == 2
    assert config.num_ps_replicas == 1
    assert config.num_worker_replicas == 0
    assert config.cluster_spec == cluster
    assert config.task_type == "worker"
    assert not config.is_chief
    assert config.evaluation_master == "localhost:9991"


def test_single_node_in_cluster_spec_produces_empty_master():  # 8.3.5
    config = RunConfig(environ=env({"worker": ["host1:1"]}, {"type": "worker", "index": 0}))
    assert config.master == ""
    assert config.is_chief and config.world_size == 1


def test_no_task_type_produces_empty_master():  # 8.3.6
    config = RunConfig(environ=env(CLUSTER))
    assert config.master == ""
    assert config.task_type is None and config.rank is None


def test_invalid_job_name_raises():  # 8.3.7
    with pytest.raises(ValueError, match="not_in_cluster_spec is not a valid task"):
        RunConfig(environ=env(CLUSTER, {"type": "not_in_cluster_spec", "index": 0}))


def test_illegal_task_index_raises():  # 8.3.8
    with pytest.raises(ValueError, match="3 is not a valid task_id"):
        RunConfig(environ=env(CLUSTER, {"type": "worker", "index": 3}))


def test_is_chief_from_cloud_tf_config():  # 8.3.9
    cluster = {
        "ps": ["host1:1", "host2:2"],
        "master": ["host3:3"],
        "worker": ["host4:4", "host5:5", "host6:6"],
    }
    config = RunConfig(environ=env(cluster, {"type": "master", "index": 0}, environment="cloud"))
    assert config.is_chief and config.environment == "cloud"
    config = RunConfig(environ=env(cluster, {"type": "worker", "index": 0}, environment="cloud"))
    assert not config.is_chief


def test_is_chief_from_noncloud_tf_config_departs_from_tf():  # 8.3.10, deliberately inverted
    # TF contrib ('local'/other environments): worker 0 was chief even beside a master job.
    # learnrun: a master (or chief) job's task 0 is the one chief, in every environment.
    cluster = {
        "ps": ["host1:1", "host2:2"],
        "master": ["host3:3"],
        "worker": ["host4:4", "host5:5", "host6:6"],
    }
    worker0 = RunConfig(environ=env(cluster, {"type": "worker", "index": 0}, environment="random"))
    master0 = RunConfig(environ=env(cluster, {"type": "master", "index": 0}, environment="random"))
    assert not worker0.is_chief
    assert master0.is_chief
    # without a chief or master job, worker 0 is the chief (as TF's 'local' rule)
    assert RunConfig(environ=env(CLUSTER, {"type": "worker", "index": 0})).is_chief
    assert not RunConfig(environ=env(CLUSTER, {"type": "ps", "index": 0})).is_chief


def test_default_is_chief_from_tf_config_without_job_name():  # 8.3.11
    config = RunConfig(environ={TF_CONFIG_ENV: json.dumps({"cluster": {}, "task": {}})})
    assert config.is_chief


def test_model_dir():  # 8.3.12
    assert RunConfig(environ={}).model_dir is None
    assert RunConfig(model_dir="test_dir", environ={}).model_dir == "test_dir"


def test_model_dir_in_tf_config():  # 8.3.13
    assert RunConfig(environ=env(model_dir="test_dir")).model_dir == "test_dir"


def test_model_dir_both_in_tf_config_and_constructor():  # 8.3.14
    assert (
        RunConfig(model_dir="test_dir", environ=env(model_dir="test_dir")).model_dir == "test_dir"
    )


def test_model_dir_fail_if_constructor_value_mismatch_tf_config():  # 8.3.15
    with pytest.raises(
        ValueError,
        match="`model_dir` provided in RunConfig .* must have the same value .* in TF_CONFIG",
    ):
        RunConfig(model_dir="test_dir", environ=env(model_dir="other_dir"))


def test_replace():  # 8.3.16
    config = RunConfig(tf_random_seed=11, model_dir="/a", environ={})
    new = config.replace(model_dir="/b")
    assert new.model_dir == "/b" and new.tf_random_seed == 11
    assert config.model_dir == "/a"
    with pytest.raises(ValueError, match="Replacing some_undefined_property is not supported"):
        config.replace(some_undefined_property=123)


def test_uid_for_different_configs():  # 8.3.17
    config = RunConfig(tf_random_seed=11, model_dir="/a", environ={})
    expected = config.uid()
    for _ in range(10):
        assert config.uid() == expected
    new = config.replace(model_dir="/b")
    assert new.uid() != expected
    assert config.uid() == expected


def test_uid_for_whitelist():  # 8.3.18
    config = RunConfig(model_dir="/a", environ={})
    assert config.uid(["model_dir"]) == config.replace(model_dir="/b").uid(["model_dir"])


def test_uid_for_default_whitelist():  # 8.3.19
    a = RunConfig(
        tf_random_seed=11,
        save_summary_steps=12,
        save_checkpoints_steps=13,
        save_checkpoints_secs=14,  # both set: allowed in the constructor (contrib)
        session_config=SessionConfig(),
        keep_checkpoint_max=16,
        keep_checkpoint_every_n_hours=17,
        environ={},
    )
    b = RunConfig(
        tf_random_seed=21,
        save_summary_steps=22,
        save_checkpoints_steps=23,
        save_checkpoints_secs=24,
        session_config=SessionConfig(log_device_placement=True),
        keep_checkpoint_max=26,
        keep_checkpoint_every_n_hours=27,
        environ={},
    )
    assert (a.save_checkpoints_steps, a.save_checkpoints_secs) == (13, 14)
    assert a.uid() == b.uid()
    assert a.uid(whitelist=[]) != b.uid(whitelist=[])
    assert a.uid() != a.replace(model_dir="/other").uid()


def test_uid_for_deepcopy():  # 8.3.20
    config = RunConfig(environ=env(CLUSTER, {"type": "worker", "index": 1}))
    copied = copy.deepcopy(config)
    assert copied.cluster_spec.as_dict() == config.cluster_spec.as_dict()
    assert copied.uid() == config.uid()


def test_uid_for_different_cluster_spec_order():  # 8.3.21
    jobs = list({**CLUSTER, "chief": ["host0:0"], "other": ["o:1"]}.items())
    task = {"type": "worker", "index": 0}
    expected = RunConfig(environ=env(dict(jobs), task)).uid()
    rng = random.Random(0)
    for _ in range(100):
        rng.shuffle(jobs)
        assert RunConfig(environ=env(dict(jobs), task)).uid() == expected


def test_uid_for_different_cluster_specs():  # 8.3.22
    one = RunConfig(
        environ=env(
            {"ps": ["host1:1", "host2:2"], "worker": ["w:1"]}, {"type": "worker", "index": 0}
        )
    )
    two = RunConfig(
        environ=env({"ps": ["host1:1"], "worker": ["w:1"]}, {"type": "worker", "index": 0})
    )
    assert one.uid() != two.uid()


def test_uid_ignores_the_environ_mapping_itself():
    base = env(CLUSTER, {"type": "worker", "index": 1})
    a = RunConfig(environ=base)
    b = RunConfig(environ={**base, "HOME": "/elsewhere", "PATH": "/x"})
    assert a.uid(whitelist=[]) == b.uid(whitelist=[])


def test_num_worker_replicas_counts_in_master_too():  # 8.3.23
    cluster = {
        "ps": ["host1:1", "host2:2"],
        "master": ["host3:3"],
        "worker": ["host4:4", "host5:5", "host6:6"],
    }
    config = RunConfig(environ=env(cluster, {"type": "master", "index": 0}))
    assert config.num_worker_replicas == 4


# -- 8.4 core RunConfig (where it applies) ---------------------------------------------------


def test_core_defaults():  # 8.4.1
    config = RunConfig(environ={})
    assert (
        config.model_dir is None and config.session_config is None and config.tf_random_seed is None
    )
    assert (
        config.save_summary_steps,
        config.save_checkpoints_secs,
        config.save_checkpoints_steps,
    ) == (100, 600, None)
    assert (config.keep_checkpoint_max, config.keep_checkpoint_every_n_hours) == (5, 10000)
    assert config.service is None and config.device_fn is None
    assert config.experimental_max_worker_delay_secs is None
    assert config.session_creation_timeout_secs == 7200
    assert config.log_step_count_steps == 100


def test_core_replace_allowed_properties():  # 8.4.2
    config = RunConfig(environ={})
    session_config = SessionConfig(allow_soft_placement=True)
    new = config.replace(
        tf_random_seed=11,
        save_summary_steps=12,
        save_checkpoints_secs=14,
        session_config=session_config,
        keep_checkpoint_max=16,
        keep_checkpoint_every_n_hours=17,
        device_fn=device_fn,
        session_creation_timeout_secs=18,
    )
    assert (new.tf_random_seed, new.save_summary_steps, new.save_checkpoints_secs) == (11, 12, 14)
    assert new.session_config is session_config and new.device_fn is device_fn
    assert (
        new.keep_checkpoint_max,
        new.keep_checkpoint_every_n_hours,
        new.session_creation_timeout_secs,
    ) == (
        16,
        17,
        18,
    )
    none = config.replace(
        tf_random_seed=None,
        save_summary_steps=None,
        save_checkpoints_steps=None,
        save_checkpoints_secs=None,
        session_config=None,
        keep_checkpoint_max=None,
        keep_checkpoint_every_n_hours=None,
        log_step_count_steps=None,
        device_fn=None,
        model_dir=None,
    )
    assert (
        none.save_summary_steps is None
        and none.save_checkpoints_secs is None
        and none.model_dir is None
    )


def test_core_replace_invalid_names():  # 8.4.3
    for name in ("master", "task_type", "is_chief", "unknown"):
        with pytest.raises(ValueError, match="Replacing .*is not supported"):
            RunConfig(environ={}).replace(**{name: 1})


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"model_dir": ""}, "model_dir should be non-empty"),
        ({"save_summary_steps": -1}, "save_summary_steps should be >= 0"),
        ({"save_checkpoints_steps": -1}, "save_checkpoints_steps should be >= 0"),
        ({"save_checkpoints_secs": -1}, "save_checkpoints_secs should be >= 0"),
        ({"session_config": {}}, "session_config must be instance of ConfigProto"),
        ({"keep_checkpoint_max": -1}, "keep_checkpoint_max should be >= 0"),
        ({"keep_checkpoint_every_n_hours": 0}, "keep_checkpoint_every_n_hours should be > 0"),
        ({"session_creation_timeout_secs": 0}, "session_creation_timeout_secs should be > 0"),
        ({"tf_random_seed": 1.0}, "tf_random_seed must be integer"),
        (
            {"device_fn": lambda op, x: op},
            'device_fn must be callable with exactly one argument "op".',
        ),
        ({"device_fn": lambda x: x}, 'device_fn must be callable with exactly one argument "op".'),
        (
            {"experimental_max_worker_delay_secs": "5"},
            "experimental_max_worker_delay_secs must be an integer if set.",
        ),
        ({"protocol": "http"}, r"protocol should be grpc or grpc\+verbs"),
        ({"log_step_count_steps": 0}, "log_step_count_steps should be > 0"),
        ({"save_summary_steps": "5"}, r"save_summary_steps should be >= 0; got '5'"),
        # learnrun fields
        ({"device": "gpu"}, 'device should be a torch device string such as "cpu"'),
        ({"device": "cuda:x"}, "device should be a torch device string"),
        (
            {"precision": "fp16"},
            r"precision should be one of \(None, '32', 'bf16-mixed', '16-mixed'\); got 'fp16'",
        ),
        ({"gradient_clip_norm": 0}, "gradient_clip_norm should be a number > 0"),
        ({"gradient_clip_norm": float("inf")}, "gradient_clip_norm should be a number > 0"),
        ({"distributed_timeout_secs": 0}, "distributed_timeout_secs should be a number > 0; got 0"),
        (
            {"distributed_timeout_secs": None},
            "distributed_timeout_secs should be a number > 0; got None",
        ),
        ({"environ": "TF_CONFIG={}"}, "environ should be a mapping"),
    ],
)
def test_invalid_values_in_init_and_replace(kwargs, text):  # 8.4.4 (both paths)
    with pytest.raises(ValueError, match=text):
        RunConfig(environ={}, **kwargs) if "environ" not in kwargs else RunConfig(**kwargs)
    with pytest.raises(ValueError, match=text):
        RunConfig(environ={}).replace(**kwargs)


def test_init_invalid_contrib_only_fields():
    with pytest.raises(ValueError, match="num_cores should be an integer >= 0; got -1"):
        RunConfig(num_cores=-1, environ={})
    with pytest.raises(ValueError, match=r"gpu_memory_fraction should be in \(0, 1\]; got 2"):
        RunConfig(gpu_memory_fraction=2, environ={})


def test_core_init_allowed_properties():  # 8.4.5
    config = RunConfig(
        tf_random_seed=11,
        save_summary_steps=12,
        save_checkpoints_secs=14,
        session_config=SessionConfig(),
        keep_checkpoint_max=16,
        keep_checkpoint_every_n_hours=17,
        device_fn=device_fn,
        experimental_max_worker_delay_secs=10,
        session_creation_timeout_secs=18,
        environ={},
    )
    assert config.experimental_max_worker_delay_secs == 10 and config.device_fn is device_fn
    none = RunConfig(
        tf_random_seed=None,
        save_summary_steps=None,
        keep_checkpoint_max=None,
        keep_checkpoint_every_n_hours=None,
        log_step_count_steps=None,
        session_creation_timeout_secs=None,
        environ={},
    )
    assert none.save_summary_steps is None and none.keep_checkpoint_max is None


def test_core_distributed_defaults_contrib_wins():  # 8.4.6: contrib task_type None, 0 workers
    config = RunConfig(environ=env(task={"type": "worker", "index": 0}))
    assert (config.task_type, config.task_id, config.master, config.evaluation_master) == (
        "worker",
        0,
        "",
        "",
    )
    assert config.is_chief and config.num_ps_replicas == 0 and config.global_id_in_cluster == 0
    assert config.session_config is None


def test_core_session_masters_without_cluster():  # 8.4.7
    config = RunConfig(environ=env(session_master="_my_master", eval_session_master="_my_eval"))
    assert (config.master, config.evaluation_master) == ("_my_master", "_my_eval")


def test_core_no_cluster_rules():  # 8.4.8
    with pytest.raises(ValueError, match="must be WORKER"):
        RunConfig(environ=env(task={"type": "chief", "index": 0}))
    with pytest.raises(ValueError, match="index must be 0"):
        RunConfig(environ=env(task={"type": "worker", "index": 1}))
    with pytest.raises(ValueError, match="must be WORKER"):  # 8.4.16 master without cluster
        RunConfig(environ=env(task={"type": "master", "index": 0}))


def test_core_chief_config():  # 8.4.9
    config = RunConfig(environ=env(CHIEF_CLUSTER, {"type": "chief", "index": 0}))
    assert config.master == "grpc://host0:0" and config.is_chief
    assert (config.num_worker_replicas, config.num_ps_replicas) == (4, 2)
    assert (config.rank, config.world_size) == (0, 4)


def test_core_session_master_overrides_derived_master():  # 8.4.10
    for cluster, chief in ((CHIEF_CLUSTER, "chief"), (MASTER_CLUSTER, "master")):
        config = RunConfig(environ=env(cluster, {"type": chief, "index": 0}, session_master="_m"))
        assert config.master == "_m"
        single = RunConfig(
            environ=env({chief: ["h:1"]}, {"type": chief, "index": 0}, session_master="_m")
        )
        assert single.master == "_m"


def test_core_chief_counts():  # 8.4.11 (no chief: contrib wins, worker 0 is chief)
    with pytest.raises(ValueError, match='must have only one "chief" node'):
        RunConfig(environ=env({"chief": ["a:1", "b:2"]}, {"type": "chief", "index": 0}))
    config = RunConfig(environ=env({"chief": ["a:1"]}, {"type": "chief", "index": 0}))
    assert (config.master, config.num_worker_replicas, config.num_ps_replicas) == ("", 1, 0)


def test_core_task_validation():  # 8.4.12
    with pytest.raises(ValueError, match="task index must be set"):
        RunConfig(environ=env(CHIEF_CLUSTER, {"type": "worker"}))
    with pytest.raises(ValueError, match="is not a valid task_id"):
        RunConfig(environ=env({"chief": ["a:1"]}, {"type": "chief", "index": 1}))
    with pytest.raises(ValueError, match="Task index must be non-negative number."):
        RunConfig(environ=env(CHIEF_CLUSTER, {"type": "chief", "index": -1}))
    with pytest.raises(ValueError, match="is not a valid task_type"):
        RunConfig(environ=env({"chief": ["a:1"], "ps": ["p:1"]}, {"type": "worker", "index": 0}))
    with pytest.raises(ValueError, match='must have only one "master" node'):
        RunConfig(environ=env({"master": ["a:1", "b:2"]}, {"type": "master", "index": 0}))


def test_core_worker_and_ps():  # 8.4.13
    worker = RunConfig(environ=env(CHIEF_CLUSTER, {"type": "worker", "index": 1}))
    assert worker.master == "grpc://host4:4" and not worker.is_chief
    assert (worker.num_worker_replicas, worker.num_ps_replicas) == (4, 2)
    ps = RunConfig(environ=env(CHIEF_CLUSTER, {"type": "ps", "index": 0}))
    assert ps.master == "grpc://host1:1" and not ps.is_chief and ps.rank is None


def test_core_evaluator():  # 8.4.14 (learnrun keeps the cluster spec, see module doc)
    config = RunConfig(
        environ=env(CHIEF_CLUSTER, {"type": "evaluator", "index": 12}, eval_session_master="_e")
    )
    assert (config.master, config.evaluation_master, config.is_chief) == ("", "_e", False)
    assert config.global_id_in_cluster is None and config.rank is None
    assert config.cluster_spec == CHIEF_CLUSTER
    with pytest.raises(ValueError, match="non-negative"):
        RunConfig(environ=env(CHIEF_CLUSTER, {"type": "evaluator", "index": -1}))


def test_core_global_ids():  # 8.4.15
    def gid(cluster, task_type, index):
        return RunConfig(
            environ=env(cluster, {"type": task_type, "index": index})
        ).global_id_in_cluster

    assert gid(CHIEF_CLUSTER, "chief", 0) == 0
    assert gid(CHIEF_CLUSTER, "worker", 2) == 3
    assert gid(CHIEF_CLUSTER, "ps", 1) == 5
    assert gid({**CHIEF_CLUSTER, "other_type": ["o:1", "o:2"]}, "other_type", 1) == 2
    assert gid(MASTER_CLUSTER, "master", 0) == 0
    assert gid(MASTER_CLUSTER, "worker", 2) == 3
    assert gid(MASTER_CLUSTER, "ps", 1) == 5


def test_core_master_cluster():  # 8.4.16
    config = RunConfig(environ=env(MASTER_CLUSTER, {"type": "master", "index": 0}))
    assert config.is_chief and config.master == "grpc://host0:0" and config.num_worker_replicas == 4
    with pytest.raises(ValueError, match="task_type `evaluator` is not supported"):
        RunConfig(environ=env(MASTER_CLUSTER, {"type": "evaluator", "index": 0}))
    with pytest.raises(ValueError, match="job `chief` is not supported"):
        RunConfig(environ=env({**MASTER_CLUSTER, "chief": ["c:1"]}, {"type": "chief", "index": 0}))


def test_core_save_checkpoints():  # 8.4.17
    config = RunConfig(environ={})
    assert (config.save_checkpoints_secs, config.save_checkpoints_steps) == (600, None)
    steps = config.replace(save_checkpoints_steps=100)
    assert (steps.save_checkpoints_secs, steps.save_checkpoints_steps) == (None, 100)
    secs = steps.replace(save_checkpoints_secs=200)
    assert (secs.save_checkpoints_secs, secs.save_checkpoints_steps) == (200, None)
    with pytest.raises(ValueError, match="cannot be both set"):
        config.replace(save_checkpoints_steps=1, save_checkpoints_secs=2)
    both_none = config.replace(save_checkpoints_steps=None, save_checkpoints_secs=None)
    assert (both_none.save_checkpoints_secs, both_none.save_checkpoints_steps) == (None, None)
    assert steps.replace(save_checkpoints_steps=None).save_checkpoints_steps is None
    assert config.replace(save_checkpoints_secs=None).save_checkpoints_secs is None
    # contrib: explicit 0 secs is "use the default"; steps given -> no time-based saving
    assert RunConfig(save_checkpoints_secs=0, environ={}).save_checkpoints_secs == 600
    assert RunConfig(save_checkpoints_steps=5, environ={}).save_checkpoints_secs is None


def test_core_service():  # 8.4.18
    service = {"my_service": {"key": "value"}}
    assert RunConfig(environ=env(service=service)).service == service
    assert RunConfig(environ=env()).service is None
    with pytest.raises(
        TypeError, match='If "service" is set in TF_CONFIG, it must be a dict. Given'
    ):
        RunConfig(environ=env(service=789))


def test_core_model_dir():  # 8.4.19
    with pytest.raises(ValueError, match="model_dir should be non-empty"):
        RunConfig(model_dir="", environ={})
    with pytest.raises(ValueError, match="model_dir in TF_CONFIG should be non-empty"):
        RunConfig(environ=env(model_dir=""))
    assert RunConfig(model_dir=os.path.join("a", "b"), environ={}).model_dir == os.path.join(
        "a", "b"
    )


def test_model_dir_accepts_path_objects(tmp_path):
    assert RunConfig(model_dir=tmp_path, environ={}).model_dir == str(tmp_path)
    assert RunConfig(environ={}).replace(model_dir=tmp_path).model_dir == str(tmp_path)


# -- learnrun fields and environment ---------------------------------------------------------


def test_learnrun_fields_defaults_and_replace():
    config = RunConfig(environ={})
    assert (
        config.device,
        config.precision,
        config.gradient_clip_norm,
        config.distributed_timeout_secs,
    ) == (
        None,
        None,
        None,
        300,
    )
    new = config.replace(
        device="cuda:1", precision="bf16-mixed", gradient_clip_norm=1.5, distributed_timeout_secs=30
    )
    assert (new.device, new.precision, new.gradient_clip_norm, new.distributed_timeout_secs) == (
        "cuda:1",
        "bf16-mixed",
        1.5,
        30,
    )
    assert config.device is None
    assert new.uid() != config.uid()  # learnrun fields are not on the uid whitelist
    for precision in ("32", "16-mixed", None):
        assert RunConfig(precision=precision, environ={}).precision == precision


def test_replace_environ_rereads_the_role():
    config = RunConfig(model_dir="/m", environ={})
    worker = config.replace(environ=env(CHIEF_CLUSTER, {"type": "worker", "index": 0}))
    assert (worker.task_type, worker.rank, worker.world_size, worker.model_dir) == (
        "worker",
        1,
        4,
        "/m",
    )
    assert config.task_type is None and config.rank == 0
    with pytest.raises(ValueError, match="must have the same value"):
        config.replace(environ=env(model_dir="/other"))


def test_torchrun_role():
    environ = {
        "RANK": "2",
        "WORLD_SIZE": "3",
        "MASTER_ADDR": "10.1.1.1",
        "MASTER_PORT": "4000",
        "LOCAL_RANK": "0",
    }
    config = RunConfig(environ=environ)
    assert (
        config.cluster_source,
        config.task_type,
        config.task_id,
        config.rank,
        config.world_size,
    ) == (
        "torchrun",
        "worker",
        1,
        2,
        3,
    )
    assert (config.master_addr, config.master_port, config.local_rank) == ("10.1.1.1", 4000, 0)
    assert not config.is_chief and config.num_worker_replicas == 3
    chief = RunConfig(environ={**environ, "RANK": "0"})
    assert chief.is_chief and chief.task_type == "chief" and chief.global_id_in_cluster == 0


def test_slurm_role():
    environ = {"SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_NODELIST": "n[1-2]"}
    config = RunConfig(environ=environ)
    assert (
        config.cluster_source,
        config.task_type,
        config.rank,
        config.world_size,
        config.master_addr,
    ) == (
        "slurm",
        "chief",
        0,
        2,
        "n1",
    )


def test_contradictory_environment_fails_at_construction():
    with pytest.raises(ValueError, match="RANK=3 is out of range for WORLD_SIZE=2"):
        RunConfig(environ={"RANK": "3", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    with pytest.raises(ValueError, match="WORLD_SIZE=2 contradicts TF_CONFIG"):
        RunConfig(environ={**env(CHIEF_CLUSTER, {"type": "chief", "index": 0}), "WORLD_SIZE": "2"})


def test_get_task_id():
    assert RunConfig.get_task_id({}) == 0
    assert RunConfig.get_task_id(env(CLUSTER, {"type": "worker", "index": "2"})) == 2


def test_reads_os_environ_when_environ_is_none(monkeypatch):
    monkeypatch.setenv(
        TF_CONFIG_ENV, json.dumps({"cluster": CLUSTER, "task": {"type": "worker", "index": 2}})
    )
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert RunConfig().task_id == 2


def test_tf_config_property_and_repr():
    config = RunConfig(num_cores=3, log_device_placement=True, gpu_memory_fraction=0.5, environ={})
    assert config.tf_config == SessionConfig(
        log_device_placement=True,
        inter_op_parallelism_threads=3,
        intra_op_parallelism_threads=3,
        gpu_memory_fraction=0.5,
    )
    text = repr(RunConfig(model_dir="/m", environ=env(CLUSTER, {"type": "worker", "index": 1})))
    assert text.startswith(
        "RunConfig(model_dir='/m', cluster_source='TF_CONFIG', task_type='worker', task_id=1,"
    )


# -- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["master", "evaluation_master"])
def test_master_must_be_a_string(name):
    with pytest.raises(
        TypeError, match=rf"`{name}` must be a string such as 'grpc://host:2222'.*got 3"
    ):
        RunConfig(environ={}, **{name: 3})


@pytest.mark.parametrize("whitelist", ["model_dir", b"model_dir", 3])
def test_uid_whitelist_must_be_a_list_of_names(whitelist):
    with pytest.raises(TypeError, match=r"`whitelist` must be a list of property names"):
        RunConfig(environ={}).uid(whitelist=whitelist)


def test_uid_whitelist_accepts_any_iterable_of_names():
    a = RunConfig(model_dir="a", environ={})
    b = RunConfig(model_dir="b", environ={})
    assert a.uid(("model_dir",)) == b.uid({"model_dir"})


def test_device_accepts_torch_device_in_constructor_and_replace():
    import torch

    config = RunConfig(device=torch.device("cpu"), environ={})
    assert config.device == "cpu"
    assert config.replace(device=torch.device("cuda", 1)).device == "cuda:1"
    with pytest.raises(ValueError, match="device should be a torch device string"):
        config.replace(device="tpu")


def test_compile_is_a_validated_keyword_only_bool_that_replace_changes():
    assert RunConfig().compile is False
    config = RunConfig(compile=True)
    assert config.compile is True and config.replace(compile=False).compile is False
    assert config.uid() != RunConfig().uid()
    for bad in (None, 1, "yes"):
        with pytest.raises(ValueError, match="compile should be True or False"):
            RunConfig(compile=bad)
    with pytest.raises(ValueError, match="compile should be True or False"):
        config.replace(compile="no")
