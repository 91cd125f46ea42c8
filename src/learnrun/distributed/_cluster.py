"""Small helpers that read the cluster layout of a ``RunConfig`` (no torch import)."""

from __future__ import annotations

from typing import Any

from learnrun.errors import DistributedError

TRAINER_JOBS = ("chief", "master", "worker")


def cluster_dict(config: Any) -> dict[str, list[str]]:
    """``{job: [address, ...]}`` of ``config.cluster_spec`` (a ClusterSpec, dict or None)."""
    spec = getattr(config, "cluster_spec", None)
    if not spec:
        return {}
    raw = spec.as_dict() if hasattr(spec, "as_dict") else dict(spec)
    out: dict[str, list[str]] = {}
    for job, tasks in raw.items():
        if isinstance(tasks, dict):
            out[job] = [tasks[k] for k in sorted(tasks, key=int)]
        else:
            out[job] = list(tasks)
    return out


def task_name(config: Any) -> str:
    """``"<task_type>:<task_id>"`` of this process, e.g. ``worker:1``."""
    return f"{config.task_type}:{int(config.task_id or 0)}"


def trainer_names(config: Any) -> list[str]:
    """Names of every trainer task (chief/master, then workers) in the cluster."""
    cluster = cluster_dict(config)
    return [f"{job}:{i}" for job in TRAINER_JOBS for i in range(len(cluster.get(job, [])))]


def split_address(address: str, what: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``; a clear error for anything else."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DistributedError(
            f"{what} address {address!r} is not of the form 'host:port'; fix the cluster "
            "spec (TF_CONFIG) or MASTER_ADDR/MASTER_PORT."
        )
    return host, int(port)


def timeout_of(config: Any) -> float:
    """``config.distributed_timeout_secs`` (300 when the config has none)."""
    value = getattr(config, "distributed_timeout_secs", None)
    return float(300 if value is None else value)
