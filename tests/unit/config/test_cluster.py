"""config/cluster.py: TaskType and ClusterSpec."""

from __future__ import annotations

import pytest

from learnrun.config.cluster import ClusterSpec, TaskType


def test_task_type_constants():
    assert (TaskType.MASTER, TaskType.PS, TaskType.WORKER, TaskType.CHIEF, TaskType.EVALUATOR) == (
        "master",
        "ps",
        "worker",
        "chief",
        "evaluator",
    )


# -- ClusterSpec -----------------------------------------------------------------------------


def test_cluster_spec_dense_and_sparse():
    spec = ClusterSpec({"worker": ["a:1", "b:2"], "ps": {"0": "p:1", 3: "q:2"}})
    assert spec.jobs == ["ps", "worker"]
    assert spec.num_tasks("ps") == 2
    assert spec.task_indices("ps") == [0, 3]
    assert spec.task_address("ps", 3) == "q:2"
    assert spec.job_tasks("ps") == ["p:1", None, None, "q:2"]
    assert spec.as_dict() == {"ps": {0: "p:1", 3: "q:2"}, "worker": ["a:1", "b:2"]}
    assert repr(spec) == "ClusterSpec({'ps': {0: 'p:1', 3: 'q:2'}, 'worker': ['a:1', 'b:2']})"
    assert (
        str(ClusterSpec({"worker": ["w"], "ps": ["p"]}))
        == "ClusterSpec({'ps': ['p'], 'worker': ['w']})"
    )
    with pytest.raises(ValueError, match="No such job in cluster: 'chief'"):
        spec.num_tasks("chief")
    with pytest.raises(ValueError, match="No task with index 1 in job 'ps'"):
        spec.task_address("ps", 1)


def test_cluster_spec_truthiness_and_equality():
    empty = ClusterSpec()
    assert not empty and empty == {} and ClusterSpec(None) == empty
    spec = ClusterSpec({"worker": ["a:1"]})
    assert spec and spec == {"worker": ["a:1"]} and spec == {"worker": {0: "a:1"}}
    assert spec == ClusterSpec(spec) and spec != {"worker": ["b:1"]} and spec != {"worker": 5}
    assert spec != "worker"


@pytest.mark.parametrize(
    "cluster, error, text",
    [
        ({"worker": "a:1"}, TypeError, "The tasks for job 'worker' must be a list or a dictionary"),
        ({"worker": [1]}, TypeError, "Task address 1 must be bytes or unicode"),
        ({"worker": {"x": "a:1"}}, TypeError, "Task index 'x' of job 'worker' must be an integer"),
        ({"worker": {-1: "a:1"}}, ValueError, "must be non-negative"),
        ({1: ["a:1"]}, TypeError, "Job name 1 must be bytes or unicode"),
        (["a:1"], TypeError, "must be a dictionary mapping one or more job names"),
    ],
)
def test_cluster_spec_errors(cluster, error, text):
    with pytest.raises(error, match=text):
        ClusterSpec(cluster)
