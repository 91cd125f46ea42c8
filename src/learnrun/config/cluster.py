"""The cluster and this process's place in it: ``ClusterSpec``, ``TaskType``, ``ClusterInfo``.

``ClusterSpec`` is TF's ``tf.train.ClusterSpec``; ``TaskType`` names the jobs; ``ClusterInfo``
is what the environment says about this process (built by
:func:`learnrun.config.environment.resolve_cluster`) and owns every role fact derived from it:
``is_chief``, ``is_distributed``, ``is_trainer``, ``trainer_names``, ... ``RunConfig`` exposes
them as properties. :func:`split_address` is the one parser of ``"host:port"`` addresses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["TaskType", "ClusterSpec", "ClusterInfo", "TRAINER_JOBS", "split_address"]


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


#: The jobs whose tasks train, in rank order (chief or master first, then the workers).
TRAINER_JOBS = (TaskType.CHIEF, TaskType.MASTER, TaskType.WORKER)


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    """What the environment says about this process's role (see the module docstring)."""

    task_type: str | None = None
    task_id: int = 0
    cluster_spec: ClusterSpec = dataclasses.field(default_factory=ClusterSpec)
    environment: str = "local"
    tf_config_model_dir: str | None = None
    source: str | None = None
    rank: int | None = 0
    world_size: int = 1
    master_addr: str | None = None
    master_port: int | None = None
    global_id_in_cluster: int | None = 0
    local_rank: int | None = None
    #: torchrun's ``TORCHELASTIC_RESTART_COUNT``: how often the agent restarted the job.
    restart_count: int = 0
    session_master: str | None = None
    eval_session_master: str | None = None
    service: dict | None = None

    @property
    def chief_job(self) -> str | None:
        """The job whose task 0 is the chief: ``chief``, else ``master``, else ``worker``."""
        for job in TRAINER_JOBS:
            if job in self.cluster_spec.jobs:
                return job
        return None

    @property
    def is_chief(self) -> bool:
        """True for the one task that writes checkpoints and summaries."""
        if self.task_type is None or not self.cluster_spec:
            return self.task_id == 0
        return self.task_type == self.chief_job and self.task_id == 0

    @property
    def num_ps_replicas(self) -> int:
        jobs = self.cluster_spec.jobs
        return self.cluster_spec.num_tasks(TaskType.PS) if TaskType.PS in jobs else 0

    @property
    def num_worker_replicas(self) -> int:
        """Tasks of the ``worker``, ``master`` and ``chief`` jobs."""
        spec = self.cluster_spec
        return sum(spec.num_tasks(j) for j in TRAINER_JOBS if j in spec.jobs)

    @property
    def derived_master(self) -> str:
        """TF contrib's ``_get_master``: ``''`` locally, else ``grpc://<this task's address>``."""
        spec = self.cluster_spec
        if not spec or self.task_type is None or self.task_type == TaskType.EVALUATOR:
            return ""
        if len(spec.jobs) == 1 and spec.num_tasks(spec.jobs[0]) == 1:
            return ""
        if self.task_type not in spec.jobs or self.task_id not in spec.task_indices(self.task_type):
            return ""
        return "grpc://" + spec.task_address(self.task_type, self.task_id)

    @property
    def is_distributed(self) -> bool:
        """True when this process is one task of a cluster of more than one task."""
        spec = self.cluster_spec  # a sparse job counts its holes too, as TF does
        return bool(spec) and sum(len(spec.job_tasks(job)) for job in spec.jobs) > 1

    @property
    def is_trainer(self) -> bool:
        """True for a task that trains: local, chief, master or worker (not ps, not evaluator)."""
        return self.task_type not in (TaskType.PS, TaskType.EVALUATOR)

    @property
    def is_distributed_trainer(self) -> bool:
        """True for a trainer that must coordinate with others (several trainers or ps tasks)."""
        return (self.task_type is not None and self.is_trainer
                and (self.world_size > 1 or self.num_ps_replicas > 0))

    @property
    def task_name(self) -> str:
        """``"<task_type>:<task_id>"`` of this process, e.g. ``worker:1``."""
        return f"{self.task_type}:{self.task_id}"

    @property
    def trainer_names(self) -> list[str]:
        """Names of every trainer task (chief/master, then workers) in the cluster."""
        spec = self.cluster_spec
        return [f"{job}:{i}" for job in TRAINER_JOBS if job in spec.jobs
                for i in spec.task_indices(job)]

    def job_addresses(self, job: str) -> list[str]:
        """The addresses of ``job``'s tasks in index order (empty when the job is absent)."""
        spec = self.cluster_spec
        return [spec.task_address(job, i) for i in spec.task_indices(job)] if job in spec.jobs else []


def split_address(address: str, what: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``; ValueError naming ``what`` for anything else."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdecimal() or not 0 <= int(port) < 65536:
        raise ValueError(
            f"{what} address {address!r} must be 'host:port' with a port in 0..65535; it is "
            "where the trainers meet (MASTER_ADDR/MASTER_PORT); fix the cluster spec (TF_CONFIG) "
            "or MASTER_ADDR/MASTER_PORT."
        )
    return host.strip("[]"), int(port)
