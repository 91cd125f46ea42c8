"""The role of this process in a cluster, read from the environment (the only module that does).

:func:`resolve_cluster` looks, in this order, at:

1. ``TF_CONFIG`` (TFJob, Vertex AI, ``learnrun launch``): a JSON object with ``cluster``,
   ``task``, ``environment``, ``model_dir`` (and core's ``session_master``,
   ``eval_session_master``, ``service``). A missing or blank ``TF_CONFIG`` counts as ``{}``;
   one with neither a cluster nor a task type only contributes ``model_dir``/``environment``.
2. torchrun / Kubeflow PyTorchJob: ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``,
   ``LOCAL_RANK``. Rank 0 becomes task ``chief`` 0, rank r > 0 task ``worker`` r-1, and a
   cluster spec of ``WORLD_SIZE`` tasks is synthesised (``chief`` at ``MASTER_ADDR:MASTER_PORT``;
   worker addresses are placeholders ``torchrun-rank-<r>``).
3. SLURM (``srun``): only when ``SLURM_NTASKS`` > 1 and the job is not an interactive shell
   (``SLURM_JOB_NAME`` ``bash``/``interactive``). Rank = ``SLURM_PROCID``, world =
   ``SLURM_NTASKS``, address = ``MASTER_ADDR`` or the first host of ``SLURM_NODELIST``, port =
   ``MASTER_PORT`` or 29500, ``LOCAL_RANK`` from ``SLURM_LOCALID``. Roles as for torchrun.

Rank convention for TF_CONFIG clusters. The *trainers* are the ``chief`` (or legacy ``master``)
task first, rank 0, then the ``worker`` tasks in index order; ``world_size`` is the number of
trainers. ``ps`` and ``evaluator`` tasks (and any other job) are not trainers: their ``rank``
is None. ``global_id_in_cluster`` follows TF's rule: chief/master 0, then the other jobs
except ``ps`` and ``evaluator`` in alphabetical order (task index ascending), ``ps`` last; the
evaluator gets None. ``master_addr``/``master_port`` are the host and port of the chief's (else
master's, else worker 0's) address. The chief of the cluster (``ClusterInfo.is_chief``) is
task 0 of the ``chief`` or ``master`` job, or worker 0 when neither job exists.

Contradictions fail here, at start-up, with a ``ValueError`` naming the variable: two chief or
master tasks, both ``chief`` and ``master`` jobs, a task type or index not in the cluster, a
negative index, ``RANK`` outside ``[0, WORLD_SIZE)``, non-integer numbers, and ``RANK`` /
``WORLD_SIZE`` set next to a TF_CONFIG cluster but disagreeing with the trainer rank and count
it implies (a launcher must set both consistently or leave them unset). Values of the wrong
JSON type raise ``TypeError``. Every TF_CONFIG error ends with TF's note "Note that these
values may be coming from the TF_CONFIG environment variable."
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from learnrun.config.cluster import ClusterInfo, ClusterSpec, TaskType, split_address

__all__ = [
    "TaskType",
    "ClusterSpec",
    "ClusterInfo",
    "resolve_cluster",
    "parse_tf_config",
    "first_slurm_host",
    "DEFAULT_MASTER_PORT",
]

DEFAULT_MASTER_PORT = 29500
_NOTE = "\n\nNote that these values may be coming from the TF_CONFIG environment variable."


def parse_tf_config(text: str | None) -> dict:
    """Decode a TF_CONFIG value; None or blank means ``{}``.

    Raises:
      ValueError: the text is not valid JSON (the message names TF_CONFIG and shows the text).
      TypeError: the JSON is not an object.
    """
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ValueError(
            f"TF_CONFIG is not valid JSON ({e}): {text!r}. Set it to a JSON object such as "
            '{"cluster": {"worker": ["host:2222"]}, "task": {"type": "worker", "index": 0}}.'
        ) from None
    if not isinstance(value, dict):
        raise TypeError(f"TF_CONFIG must be a JSON object, got {type(value).__name__}: {text!r}")
    return value


def _optional_str(tf_config: dict, key: str) -> str | None:
    value = tf_config.get(key)
    if value is not None and not isinstance(value, str):
        raise TypeError(f'TF_CONFIG["{key}"] must be a string, got {value!r}.{_NOTE}')
    return value


def _parse_task_index(index: Any) -> int | None:
    if index is None:
        return None
    if isinstance(index, str) and re.fullmatch(r"\s*[+-]?\d{1,18}\s*", index):
        return int(index)
    if isinstance(index, int) and not isinstance(index, bool):
        return index
    raise TypeError(f'TF_CONFIG["task"]["index"] must be an integer, got {index!r}.{_NOTE}')


def _tf_config_address(address: str, where: str) -> tuple[str, int]:
    try:
        return split_address(address, where)
    except ValueError as e:
        raise ValueError(f"{e}{_NOTE}") from None


def _from_tf_config(tf_config: dict, validate_task: bool) -> dict[str, Any]:
    """Return ClusterInfo fields for a TF_CONFIG that has a cluster or a task type."""
    cluster_raw = tf_config.get("cluster") or {}
    task = tf_config.get("task") or {}
    if not isinstance(task, dict):
        raise TypeError(f'TF_CONFIG["task"] must be a JSON object, got {task!r}.{_NOTE}')
    task_type = task.get("type") or None
    if task_type is not None and not isinstance(task_type, str):
        raise TypeError(f'TF_CONFIG["task"]["type"] must be a string, got {task_type!r}.{_NOTE}')
    task_id = _parse_task_index(task.get("index"))
    try:
        spec = ClusterSpec(cluster_raw)
    except (TypeError, ValueError) as e:
        raise type(e)(f'{e} (in TF_CONFIG["cluster"] = {cluster_raw!r}).{_NOTE}') from None

    fields: dict[str, Any] = {"source": "TF_CONFIG", "cluster_spec": spec, "task_type": task_type}
    if not spec:
        if task_type is not None and task_type != TaskType.WORKER:
            raise ValueError('If "cluster" is not set in TF_CONFIG, task type must be WORKER.')
        if task_id not in (None, 0):
            raise ValueError('If "cluster" is not set in TF_CONFIG, task index must be 0.')
        fields.update(task_id=0, rank=0, world_size=1, global_id_in_cluster=0)
        return fields

    jobs = spec.jobs
    for job in jobs:
        if not spec.task_indices(job):
            raise ValueError(
                f'TF_CONFIG["cluster"][{job!r}] has no tasks: list at least one "host:port" '
                f"address for it, or leave the job out.{_NOTE}"
            )
    if TaskType.MASTER in jobs and TaskType.CHIEF in jobs:
        raise ValueError("If `master` node exists in `cluster`, job `chief` is not supported.")
    chief_type = TaskType.MASTER if TaskType.MASTER in jobs else TaskType.CHIEF
    if chief_type in jobs and spec.num_tasks(chief_type) > 1:
        raise ValueError(f'The "cluster" in TF_CONFIG must have only one "{chief_type}" node.')
    if chief_type == TaskType.MASTER and task_type == TaskType.EVALUATOR:
        raise ValueError(
            "If `master` node exists in `cluster`, task_type `evaluator` is not supported."
        )
    if task_type is not None:
        if task_id is None:
            raise ValueError('If "cluster" is set in TF_CONFIG, task index must be set.')
        if task_id < 0:
            raise ValueError("Task index must be non-negative number.")
        if validate_task and task_type != TaskType.EVALUATOR:
            if task_type not in jobs:
                raise ValueError(
                    f"{task_type} is not a valid task_type in the cluster_spec:\n{spec}{_NOTE}"
                )
            if task_id not in spec.task_indices(task_type):
                raise ValueError(
                    f"{task_id} is not a valid task_id for task_type {task_type} in the "
                    f"cluster_spec:\n{spec}{_NOTE}"
                )
    task_id = task_id or 0

    trainer_jobs = [j for j in (chief_type, TaskType.WORKER) if j in jobs]
    trainers = [(j, i) for j in trainer_jobs for i in spec.task_indices(j)]
    fields.update(task_id=task_id, world_size=len(trainers))
    fields["rank"] = (
        trainers.index((task_type, task_id)) if (task_type, task_id) in trainers else None
    )
    fields["global_id_in_cluster"] = _global_id(spec, task_type, task_id, chief_type)
    if trainer_jobs:
        lead = trainer_jobs[0]
        address = spec.task_address(lead, spec.task_indices(lead)[0])
        total = sum(spec.num_tasks(j) for j in jobs)
        if total > 1:
            fields["master_addr"], fields["master_port"] = _tf_config_address(
                address, f"The {lead} task's"
            )
    return fields


def _global_id(
    spec: ClusterSpec, task_type: str | None, task_id: int, chief_type: str
) -> int | None:
    if task_type is None or task_type == TaskType.EVALUATOR or task_type not in spec.jobs:
        return None
    if task_id not in spec.task_indices(task_type):
        return None
    skip = (chief_type, TaskType.PS, TaskType.EVALUATOR)
    order = [chief_type] + [j for j in spec.jobs if j not in skip] + [TaskType.PS]
    next_id = 0
    for job in order:
        if job not in spec.jobs:
            continue
        if job == task_type:
            return next_id + task_id
        next_id += len(spec.job_tasks(job))
    return None  # pragma: no cover - task_type is one of the jobs


def _env_int(env: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}.") from None


def _rank_world(
    rank: int | None, world: int | None, rank_var: str, world_var: str
) -> tuple[int, int]:
    if rank is None or world is None:
        missing = rank_var if rank is None else world_var
        present = world_var if rank is None else rank_var
        raise ValueError(
            f"{present} is set but {missing} is not: set both (torchrun and srun set both) or "
            "neither."
        )
    if world < 1:
        raise ValueError(f"{world_var} must be >= 1, got {world}.")
    if not 0 <= rank < world:
        raise ValueError(
            f"{rank_var}={rank} is out of range for {world_var}={world}: it must be "
            f"in [0, {world})."
        )
    return rank, world


def _trainer_group(source: str, rank: int, world: int, addr: str, port: int) -> dict[str, Any]:
    host = f"[{addr}]" if ":" in addr else addr
    cluster: dict[str, list[str]] = {TaskType.CHIEF: [f"{host}:{port}"]}
    if world > 1:
        cluster[TaskType.WORKER] = [f"{source}-rank-{r}" for r in range(1, world)]
    return {
        "source": source,
        "cluster_spec": ClusterSpec(cluster),
        "task_type": TaskType.CHIEF if rank == 0 else TaskType.WORKER,
        "task_id": 0 if rank == 0 else rank - 1,
        "rank": rank,
        "world_size": world,
        "global_id_in_cluster": rank,
        "master_addr": addr,
        "master_port": port,
    }


def _master_port(env: Mapping[str, str]) -> int:
    port = _env_int(env, "MASTER_PORT", DEFAULT_MASTER_PORT)
    if not 0 < port < 65536:
        raise ValueError(f"MASTER_PORT must be in 1..65535, got {port}.")
    return port


def _from_torchrun(env: Mapping[str, str]) -> dict[str, Any]:
    rank, world = _rank_world(
        _env_int(env, "RANK"), _env_int(env, "WORLD_SIZE"), "RANK", "WORLD_SIZE"
    )
    addr = env.get("MASTER_ADDR") or None
    if world > 1:
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if not env.get(name):
                raise ValueError(
                    f"WORLD_SIZE={world} but {name} is not set: torchrun sets it; a launcher "
                    "that sets RANK and WORLD_SIZE must set MASTER_ADDR and MASTER_PORT too."
                )
    fields = _trainer_group("torchrun", rank, world, addr or "127.0.0.1", _master_port(env))
    fields["local_rank"] = _local_rank(env, "LOCAL_RANK")
    fields["restart_count"] = _env_int(env, "TORCHELASTIC_RESTART_COUNT", 0) or 0
    return fields


def _local_rank(env: Mapping[str, str], name: str) -> int | None:
    value = _env_int(env, name)
    if value is not None and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}.")
    return value


def first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list: ``"node[03-05,9],gpu1"`` -> ``"node03"``."""
    depth, first = 0, nodelist
    for i, ch in enumerate(nodelist):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            first = nodelist[:i]
            break
    while "[" in first:
        prefix, _, rest = first.partition("[")
        inner, _, suffix = rest.partition("]")
        first = prefix + inner.split(",")[0].split("-")[0] + suffix
    return first.strip()


def _slurm_applies(env: Mapping[str, str]) -> bool:
    if "SLURM_NTASKS" not in env or env.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return False
    return (_env_int(env, "SLURM_NTASKS") or 0) > 1


def _from_slurm(env: Mapping[str, str]) -> dict[str, Any]:
    rank, world = _rank_world(
        _env_int(env, "SLURM_PROCID"), _env_int(env, "SLURM_NTASKS"), "SLURM_PROCID", "SLURM_NTASKS"
    )
    addr = env.get("MASTER_ADDR") or None
    if addr is None:
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_NODELIST") or ""
        addr = first_slurm_host(nodelist) or None
    if not addr:
        raise ValueError(
            "SLURM_NTASKS > 1 but neither MASTER_ADDR nor SLURM_NODELIST is set: cannot tell "
            "where the trainers meet. Export MASTER_ADDR=<first node> in the batch script."
        )
    fields = _trainer_group("slurm", rank, world, addr, _master_port(env))
    fields["local_rank"] = _local_rank(env, "SLURM_LOCALID")
    return fields


def _check_torchrun_agrees(env: Mapping[str, str], fields: dict[str, Any]) -> None:
    """RANK / WORLD_SIZE next to a TF_CONFIG cluster must match the trainer rank it implies."""
    if fields.get("rank") is None or not fields["cluster_spec"]:
        return
    world = _env_int(env, "WORLD_SIZE")
    if world is not None and world != fields["world_size"]:
        raise ValueError(
            f"WORLD_SIZE={world} contradicts TF_CONFIG, whose cluster has "
            f"{fields['world_size']} trainers (chief/master + workers). Unset WORLD_SIZE or fix it."
        )
    rank = _env_int(env, "RANK")
    if rank is not None and rank != fields["rank"]:
        raise ValueError(
            f"RANK={rank} contradicts TF_CONFIG, where task {fields['task_type']}:"
            f"{fields['task_id']} has trainer rank {fields['rank']}. Unset RANK or fix it."
        )


def resolve_cluster(
    environ: Mapping[str, str] | None = None, *, validate_task: bool = True
) -> ClusterInfo:
    """Read this process's role from ``environ`` (default ``os.environ``).

    ``validate_task=False`` skips the "task type / index not in the cluster" checks (TF
    contrib skips them when ``RunConfig(master=...)`` is given explicitly).

    Raises:
      ValueError: malformed or contradictory settings (the message names the variable).
      TypeError: a TF_CONFIG value of the wrong JSON type.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    tf_config = parse_tf_config(env.get("TF_CONFIG"))
    environment = tf_config.get("environment") or "local"
    if not isinstance(environment, str):
        raise TypeError(f'TF_CONFIG["environment"] must be a string, got {environment!r}.{_NOTE}')
    model_dir = _optional_str(tf_config, "model_dir")
    if model_dir == "":
        raise ValueError("model_dir in TF_CONFIG should be non-empty.")
    service = tf_config.get("service")
    if service is not None and not isinstance(service, dict):
        raise TypeError(
            f'If "service" is set in TF_CONFIG, it must be a dict. Given {type(service)}'
        )
    common = {
        "environment": environment,
        "tf_config_model_dir": model_dir,
        "service": service,
        "session_master": _optional_str(tf_config, "session_master"),
        "eval_session_master": _optional_str(tf_config, "eval_session_master"),
    }
    task = tf_config.get("task")
    has_task_type = isinstance(task, dict) and bool(task.get("type"))
    if tf_config.get("cluster") or has_task_type or (task and not isinstance(task, dict)):
        fields = _from_tf_config(tf_config, validate_task)
        _check_torchrun_agrees(env, fields)
    elif "RANK" in env or "WORLD_SIZE" in env:
        fields = _from_torchrun(env)
    elif _slurm_applies(env):
        fields = _from_slurm(env)
    else:
        fields = {}
        if isinstance(task, dict) and task.get("index") is not None:
            # {"task": {"index": i}} without a cluster: TF contrib takes the index.
            index = _parse_task_index(task.get("index"))
            if index != 0:
                raise ValueError('If "cluster" is not set in TF_CONFIG, task index must be 0.')
    return ClusterInfo(**common, **fields)
