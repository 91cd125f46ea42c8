"""``ClusterSpec`` (TF's ``tf.train.ClusterSpec``) and the ``TaskType`` job names.

Both are re-exported by :mod:`learnrun.cluster`, which reads a process's role from the
environment and builds these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["TaskType", "ClusterSpec"]


class TaskType:
    """Job names of a cluster."""

    MASTER = "master"
    PS = "ps"
    WORKER = "worker"
    CHIEF = "chief"
    EVALUATOR = "evaluator"


class ClusterSpec:
    """Jobs of a cluster, each a map ``task index -> "host:port"`` (TF's ``tf.train.ClusterSpec``).

    Built from ``{"job": ["host:port", ...]}`` (dense) or ``{"job": {index: "host:port"}}``
    (sparse; index keys may be ints or digit strings, as JSON gives them), another
    ``ClusterSpec``, or None (empty). Falsy when empty; equal to any mapping that builds the
    same spec (so ``spec == {}`` for an empty one).
    """

    def __init__(self, cluster: Any = None) -> None:
        if cluster is None:
            cluster = {}
        if isinstance(cluster, ClusterSpec):
            self._spec: dict[str, dict[int, str]] = {j: dict(t) for j, t in cluster._spec.items()}
            return
        if not isinstance(cluster, Mapping):
            raise TypeError(
                "`cluster` must be a dictionary mapping one or more job names to lists of "
                f"network addresses, got {cluster!r}"
            )
        self._spec = {}
        for job_name, tasks in cluster.items():
            if not isinstance(job_name, str):
                raise TypeError(f"Job name {job_name!r} must be bytes or unicode")
            if isinstance(tasks, (list, tuple)):
                job = dict(enumerate(tasks))
            elif isinstance(tasks, Mapping):
                job = {_task_index(job_name, i): a for i, a in tasks.items()}
            else:
                raise TypeError(
                    f"The tasks for job {job_name!r} must be a list or a dictionary from integers to "
                    "strings."
                )
            for address in job.values():
                if not isinstance(address, str):
                    raise TypeError(f"Task address {address!r} must be bytes or unicode")
            self._spec[job_name] = job

    @property
    def jobs(self) -> list[str]:
        """Job names, sorted."""
        return sorted(self._spec)

    def num_tasks(self, job_name: str) -> int:
        """Number of tasks in ``job_name`` (ValueError if there is no such job)."""
        return len(self._job(job_name))

    def task_indices(self, job_name: str) -> list[int]:
        """Sorted task indices of ``job_name``."""
        return sorted(self._job(job_name))

    def task_address(self, job_name: str, task_index: int) -> str:
        """Address of task ``task_index`` of ``job_name`` (ValueError if absent)."""
        job = self._job(job_name)
        if task_index not in job:
            raise ValueError(f"No task with index {task_index!r} in job {job_name!r}")
        return job[task_index]

    def job_tasks(self, job_name: str) -> list[str | None]:
        """Addresses of ``job_name`` as a list indexed by task index, None in the holes."""
        job = self._job(job_name)
        if not job:
            return []
        ret: list[str | None] = [None] * (max(job) + 1)
        for i, address in job.items():
            ret[i] = address
        return ret

    def as_dict(self) -> dict[str, list[str | None] | dict[int, str]]:
        """``{job: [addresses]}`` for dense jobs, ``{job: {index: address}}`` for sparse ones."""
        ret: dict[str, Any] = {}
        for job_name in self.jobs:
            indices = self.task_indices(job_name)
            if not indices:
                ret[job_name] = {}
            elif max(indices) + 1 == len(indices):
                ret[job_name] = self.job_tasks(job_name)
            else:
                ret[job_name] = {i: self._spec[job_name][i] for i in indices}
        return ret

    def _job(self, job_name: str) -> dict[int, str]:
        try:
            return self._spec[job_name]
        except (KeyError, TypeError):
            raise ValueError(f"No such job in cluster: {job_name!r}") from None

    def __bool__(self) -> bool:
        return bool(self._spec)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ClusterSpec):
            return self._spec == other._spec
        if isinstance(other, Mapping):
            try:
                return self._spec == ClusterSpec(other)._spec
            except (TypeError, ValueError):
                return False
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        d = self.as_dict()
        return "ClusterSpec({" + ", ".join(f"{k!r}: {d[k]!r}" for k in sorted(d)) + "})"

    __repr__ = __str__


def _task_index(job_name: str, index: Any) -> int:
    if isinstance(index, bool) or not isinstance(index, (int, str)):
        raise TypeError(f"Task index {index!r} of job {job_name!r} must be an integer")
    if isinstance(index, str):
        if not index.strip().isdecimal():
            raise TypeError(f"Task index {index!r} of job {job_name!r} must be an integer")
        index = int(index)
    if index < 0:
        raise ValueError(f"Task index {index!r} of job {job_name!r} must be non-negative")
    return index
