"""RunConfig: where and how an Estimator runs (TF 1.15 contrib ``RunConfig``, pure Python).

The constructor is TF contrib's, plus core's distribution keywords and learnrun's own
keyword-only fields (``device``, ``precision``, ``gradient_clip_norm``, ``compile``,
``distributed_timeout_secs``, ``environ``). The process's role (task type and index, cluster,
rank, rendezvous address) comes from :func:`learnrun.config.environment.resolve_cluster`, which reads
``TF_CONFIG``, then torchrun, then SLURM variables from ``environ`` (default ``os.environ``).

Behaviour, and where it departs from TF:

* Every value is validated at construction **and** in :meth:`RunConfig.replace` with TF
  core's texts (TF contrib validated nothing). Both ``save_checkpoints_steps`` and
  ``save_checkpoints_secs`` may be given to the constructor (contrib), but not to ``replace``.
  ``save_checkpoints_secs=0`` (the default) means 600 s when no step interval is set.
* ``is_chief``: when the cluster has a ``chief`` or ``master`` job, its task 0 is the chief;
  with neither, worker 0 is; with no cluster (or no task type) task 0 is. This replaces TF
  contrib's rule for the ``'local'`` environment (worker 0 was chief even beside a master) and
  is used for every ``environment``, ``'cloud'`` included (where TF chose master 0: the same).
* Core-RunConfig rules adopted: ``model_dir=''`` and an empty TF_CONFIG ``model_dir`` are
  errors, a cluster-less TF_CONFIG task must be worker 0, a cluster task needs an index, one
  chief at most, no ``chief`` beside ``master``, no evaluator in a ``master`` cluster;
  ``service``, ``session_master`` and ``eval_session_master`` are read. Contrib wins where the
  two disagree: clusters without a chief and tasks without a type are accepted, a task type
  missing from TF_CONFIG stays None, ``RunConfig(master=...)`` skips the task checks, the
  evaluator keeps the cluster spec (so the runner sees a distributed role) with
  ``master ''`` and ``global_id_in_cluster`` None, and no default ``session_config`` with
  device filters is made.
* ``session_config`` is a :class:`SessionConfig` record (there is no ConfigProto).
* ``uid()`` compares configuration, never the ``environ`` mapping itself.
"""

from __future__ import annotations

import copy
import logging
import math
import numbers
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from learnrun.config.environment import ClusterInfo, ClusterSpec, TaskType, resolve_cluster
from learnrun.signatures import parameter_names

__all__ = ["RunConfig", "SessionConfig", "TaskType", "ClusterSpec", "PRECISIONS"]

logger = logging.getLogger(__name__)

_USE_DEFAULT = 0
_SAVE_CKPT_ERR = "`save_checkpoints_steps` and `save_checkpoints_secs` cannot be both set."
PRECISIONS = (None, "32", "bf16-mixed", "16-mixed")
NAN_POLICIES = ("raise", "stop", "rollback")
_DEVICE_RE = re.compile(r"^(cpu|cuda|mps|xpu|hpu|npu|meta)(:\d+)?$")

_DEFAULT_UID_WHITE_LIST = [
    "tf_random_seed",
    "save_summary_steps",
    "save_checkpoints_steps",
    "save_checkpoints_secs",
    "session_config",
    "keep_checkpoint_max",
    "keep_checkpoint_every_n_hours",
    "log_step_count_steps",
]
_DEFAULT_REPLACEABLE_LIST = [
    "model_dir",
    *_DEFAULT_UID_WHITE_LIST,  # TF 1.15's list holds these in this order after model_dir
    "train_distribute",
    "device_fn",
    "protocol",
    "eval_distribute",
    "experimental_distribute",
    "experimental_max_worker_delay_secs",
    "session_creation_timeout_secs",
    # learnrun
    "device",
    "precision",
    "gradient_clip_norm",
    "compile",
    "distributed_timeout_secs",
    "async_checkpoint",
    "on_nan_loss",
    "max_nan_rollbacks",
    "environ",
]


@dataclass(frozen=True)
class SessionConfig:
    """Plain record standing in for TF's ConfigProto (threads, placement logging, GPU share)."""

    log_device_placement: bool = False
    inter_op_parallelism_threads: int = 0
    intra_op_parallelism_threads: int = 0
    gpu_memory_fraction: float = 1.0
    allow_soft_placement: bool = False
    device_filters: tuple[str, ...] = ()


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and not math.isnan(v)


def _device_fn_ok(fn: Any) -> bool:
    return callable(fn) and list(parameter_names(fn)) == ["op"]


# name -> (predicate on a non-None value, TF message)
_CHECKS: dict[str, tuple[Any, str]] = {
    "model_dir": (lambda v: isinstance(v, str) and v != "", "model_dir should be non-empty"),
    "save_summary_steps": (lambda v: _is_int(v) and v >= 0, "save_summary_steps should be >= 0"),
    "save_checkpoints_steps": (
        lambda v: _is_int(v) and v >= 0,
        "save_checkpoints_steps should be >= 0",
    ),
    "save_checkpoints_secs": (
        lambda v: _is_num(v) and v >= 0,
        "save_checkpoints_secs should be >= 0",
    ),
    "session_config": (
        lambda v: isinstance(v, SessionConfig),
        "session_config must be instance of ConfigProto (learnrun.config.run_config.SessionConfig)",
    ),
    "keep_checkpoint_max": (lambda v: _is_int(v) and v >= 0, "keep_checkpoint_max should be >= 0"),
    "keep_checkpoint_every_n_hours": (
        lambda v: _is_num(v) and v > 0,
        "keep_checkpoint_every_n_hours should be > 0",
    ),
    "log_step_count_steps": (lambda v: _is_int(v) and v > 0, "log_step_count_steps should be > 0"),
    "tf_random_seed": (_is_int, "tf_random_seed must be integer."),
    "experimental_max_worker_delay_secs": (
        _is_int,
        "experimental_max_worker_delay_secs must be an integer if set.",
    ),
    "session_creation_timeout_secs": (
        lambda v: _is_num(v) and v > 0,
        "session_creation_timeout_secs should be > 0",
    ),
    "device_fn": (_device_fn_ok, 'device_fn must be callable with exactly one argument "op".'),
    "protocol": (lambda v: v in ("grpc", "grpc+verbs"), "protocol should be grpc or grpc+verbs"),
    "device": (
        lambda v: isinstance(v, str) and bool(_DEVICE_RE.match(v)),
        'device should be a torch device string such as "cpu", "cuda" or "cuda:1", or None '
        "for CUDA when available",
    ),
    "precision": (lambda v: v in PRECISIONS, f"precision should be one of {PRECISIONS}"),
    "gradient_clip_norm": (
        lambda v: _is_num(v) and 0 < v < math.inf,
        "gradient_clip_norm should be a number > 0 (the max global L2 norm), or None",
    ),
    "compile": (lambda v: isinstance(v, bool), "compile should be True or False"),
    "distributed_timeout_secs": (
        lambda v: _is_num(v) and 0 < v < math.inf,
        "distributed_timeout_secs should be a number > 0",
    ),
    "num_cores": (lambda v: _is_int(v) and v >= 0, "num_cores should be an integer >= 0"),
    "gpu_memory_fraction": (
        lambda v: _is_num(v) and 0 < v <= 1,
        "gpu_memory_fraction should be in (0, 1]",
    ),
    "environ": (lambda v: isinstance(v, Mapping), "environ should be a mapping of str to str"),
    "async_checkpoint": (
        lambda v: isinstance(v, bool),
        "async_checkpoint should be True, False or None (write checkpoints in a background "
        "thread; None: on for a remote model_dir, off for a local one)",
    ),
    "on_nan_loss": (
        lambda v: v in NAN_POLICIES,
        f"on_nan_loss should be one of {', '.join(map(repr, NAN_POLICIES))} (what training does "
        "when the loss is NaN or infinite)",
    ),
    "max_nan_rollbacks": (
        lambda v: _is_int(v) and v >= 0,
        "max_nan_rollbacks should be an integer >= 0 (rollbacks before on_nan_loss='rollback' "
        "raises NanLossDuringTrainingError)",
    ),
}
_NOT_NONE = ("distributed_timeout_secs", "num_cores", "gpu_memory_fraction", "compile",
             "on_nan_loss", "max_nan_rollbacks")


def _normalised(name: str, value: Any) -> Any:
    """The stored form of a constructor / ``replace`` value: paths and devices as str, environ copied."""
    if name == "model_dir" and isinstance(value, os.PathLike):
        return os.fspath(value)
    if name == "device" and value is not None and type(value).__module__ == "torch":
        return str(value)  # a torch.device
    if name == "environ" and isinstance(value, Mapping):
        return dict(value)
    return value


def _canonical(value: Any) -> Any:
    """A repr-stable form: dicts sorted by key (for uid)."""
    if isinstance(value, dict):
        return [(k, _canonical(value[k])) for k in sorted(value, key=str)]
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


class RunConfig:
    """Where and how an Estimator runs; the role comes from the environment (see module doc).

    Args (TF contrib): ``master`` (None: derived, ``grpc://<this task>`` in a multi-node
    cluster), ``num_cores``, ``log_device_placement``, ``gpu_memory_fraction`` (make
    ``tf_config``), ``tf_random_seed``, ``save_summary_steps``, ``save_checkpoints_secs``
    (0: 600 s unless steps are set), ``save_checkpoints_steps``, ``keep_checkpoint_max``,
    ``keep_checkpoint_every_n_hours``, ``log_step_count_steps``, ``protocol``,
    ``evaluation_master``, ``model_dir``, ``session_config`` (a :class:`SessionConfig`),
    ``session_creation_timeout_secs``. Keyword-only (TF core): ``train_distribute``,
    ``eval_distribute``, ``device_fn``, ``experimental_distribute``,
    ``experimental_max_worker_delay_secs``. Keyword-only (learnrun): ``device`` ("cpu",
    "cuda", "cuda:1"; None = CUDA when available), ``precision`` (None, "32", "bf16-mixed",
    "16-mixed"), ``gradient_clip_norm`` (None or > 0), ``compile`` (bool, default False:
    ``torch.compile`` the module the training loop calls; see ``docs/benchmarks.md``),
    ``distributed_timeout_secs`` (> 0, every distributed wait), ``async_checkpoint`` (True: a
    save copies the state to CPU memory and writes it in a background thread, training goes
    on; see :mod:`learnrun.model_dir.checkpoints`; None, the default: on when ``model_dir`` is
    a remote URL such as ``s3://``, off otherwise), ``on_nan_loss`` (what training does when
    the loss is NaN or infinite: "raise" (default) ``NanLossDuringTrainingError``; "stop"
    training, keeping the last good checkpoint; "rollback" to the newest checkpoint, skipping
    the batches consumed since, the bad one included; see :mod:`learnrun.estimator.train_loop`),
    ``max_nan_rollbacks`` (int >= 0, default 3: one more non-finite loss raises), ``environ``
    (mapping read instead of ``os.environ``).

    Raises:
      ValueError: an invalid value (TF texts) or a contradictory environment.
      TypeError: a TF_CONFIG value of the wrong JSON type.
    """

    def __init__(
        self,
        master: str | None = None,
        num_cores: int = 0,
        log_device_placement: bool = False,
        gpu_memory_fraction: float = 1,
        tf_random_seed: int | None = None,
        save_summary_steps: int | None = 100,
        save_checkpoints_secs: float | None = _USE_DEFAULT,
        save_checkpoints_steps: int | None = None,
        keep_checkpoint_max: int | None = 5,
        keep_checkpoint_every_n_hours: float | None = 10000,
        log_step_count_steps: int | None = 100,
        protocol: str | None = None,
        evaluation_master: str | None = "",
        model_dir: str | os.PathLike | None = None,
        session_config: SessionConfig | None = None,
        session_creation_timeout_secs: float | None = 7200,
        *,
        train_distribute: Any = None,
        eval_distribute: Any = None,
        device_fn: Any = None,
        experimental_distribute: Any = None,
        experimental_max_worker_delay_secs: int | None = None,
        device: str | None = None,
        precision: str | None = None,
        gradient_clip_norm: float | None = None,
        compile: bool = False,  # noqa: A002 (the field's name)
        distributed_timeout_secs: float = 300,
        environ: Mapping[str, str] | None = None,
        async_checkpoint: bool | None = None,
        on_nan_loss: str = "raise",
        max_nan_rollbacks: int = 3,
    ) -> None:
        if save_checkpoints_secs == _USE_DEFAULT and not isinstance(save_checkpoints_secs, bool):
            save_checkpoints_secs = 600 if save_checkpoints_steps is None else None
        model_dir = _normalised("model_dir", model_dir)
        self._num_cores = num_cores
        self._log_device_placement = log_device_placement
        self._gpu_memory_fraction = gpu_memory_fraction
        self._tf_random_seed = tf_random_seed
        self._save_summary_steps = save_summary_steps
        self._save_checkpoints_secs = save_checkpoints_secs
        self._save_checkpoints_steps = save_checkpoints_steps
        self._keep_checkpoint_max = keep_checkpoint_max
        self._keep_checkpoint_every_n_hours = keep_checkpoint_every_n_hours
        self._log_step_count_steps = log_step_count_steps
        self._protocol = protocol
        self._session_config = session_config
        self._session_creation_timeout_secs = session_creation_timeout_secs
        self._train_distribute = train_distribute
        self._eval_distribute = eval_distribute
        self._device_fn = device_fn
        self._experimental_distribute = experimental_distribute
        self._experimental_max_worker_delay_secs = experimental_max_worker_delay_secs
        self._device = _normalised("device", device)
        self._precision = precision
        self._gradient_clip_norm = gradient_clip_norm
        self._compile = compile
        self._distributed_timeout_secs = distributed_timeout_secs
        self._environ = _normalised("environ", environ)
        self._async_checkpoint = async_checkpoint
        self._on_nan_loss = on_nan_loss
        self._max_nan_rollbacks = max_nan_rollbacks
        for name, value in (("master", master), ("evaluation_master", evaluation_master)):
            if value is not None and not isinstance(value, str):
                raise TypeError(
                    f"`{name}` must be a string such as 'grpc://host:2222' (or None), got {value!r}."
                )
        self._master_arg = master
        self._evaluation_master_arg = evaluation_master
        self._model_dir = self._model_dir_arg = model_dir  # until _apply_environment resolves it
        self._validate(list(_CHECKS))
        self._apply_environment()

    # -- environment ------------------------------------------------------------------------
    def _apply_environment(self) -> None:
        """Resolve the cluster role and the values derived from it (master, model_dir)."""
        info = resolve_cluster(self._environ, validate_task=self._master_arg is None)
        self._cluster: ClusterInfo = info
        if self._master_arg is not None:
            self._master = self._master_arg
        elif info.session_master is not None:
            self._master = info.session_master
        else:
            self._master = info.derived_master
        if self._evaluation_master_arg:
            self._evaluation_master = self._evaluation_master_arg
        else:
            self._evaluation_master = info.eval_session_master or ""
        self._model_dir = self._resolve_model_dir(self._model_dir_arg)

    def _resolve_model_dir(self, model_dir: str | None) -> str | None:
        tf_dir = self._cluster.tf_config_model_dir
        if tf_dir is None:
            return model_dir
        if model_dir and model_dir != tf_dir:
            raise ValueError(
                "`model_dir` provided in RunConfig construct, if set, must have the same value "
                f'as the model_dir in TF_CONFIG. model_dir: {model_dir}\nTF_CONFIG["model_dir"]: {tf_dir}.\n'
            )
        logger.info("Using model_dir in TF_CONFIG: %s", tf_dir)
        return tf_dir

    @staticmethod
    def get_task_id(environ: Mapping[str, str] | None = None) -> int:
        """The task index in TF_CONFIG (or implied by torchrun/SLURM); 0 when none."""
        return resolve_cluster(environ, validate_task=False).task_id

    # -- validation / replace ----------------------------------------------------------------
    def _validate(self, names: list[str]) -> None:
        for name in names:
            value = getattr(self, "_" + name)
            if value is None and name not in _NOT_NONE:
                continue
            ok, message = _CHECKS[name]
            if not ok(value):
                raise ValueError(f"{message.rstrip('.')}; got {value!r}.")

    def replace(self, **kwargs: Any) -> RunConfig:
        """Return a copy with the given properties replaced; this config is unchanged.

        Replaceable: TF 1.15's list (``model_dir``, ``tf_random_seed``, the save/keep/log
        settings, ``session_config``, ``train_distribute``, ``device_fn``, ``protocol``, ...)
        plus learnrun's ``device``, ``precision``, ``gradient_clip_norm``, ``compile``,
        ``distributed_timeout_secs``, ``async_checkpoint``, ``on_nan_loss``,
        ``max_nan_rollbacks`` and ``environ`` (which re-reads the role).
        Replacing one save interval with a value clears the other.

        Raises:
          ValueError: a name that cannot be replaced, both save intervals set, or an invalid value.
        """
        for key in kwargs:
            if key not in _DEFAULT_REPLACEABLE_LIST:
                raise ValueError(
                    f"Replacing {key} is not supported. Allowed properties are {_DEFAULT_REPLACEABLE_LIST}."
                )
        steps = kwargs.get("save_checkpoints_steps")
        secs = kwargs.get("save_checkpoints_secs")
        if steps is not None and secs is not None:
            raise ValueError(_SAVE_CKPT_ERR)
        new = copy.copy(self)
        for key, value in kwargs.items():
            setattr(new, "_" + key, _normalised(key, value))
        if steps is not None:
            new._save_checkpoints_secs = None
        elif secs is not None:
            new._save_checkpoints_steps = None
        if "model_dir" in kwargs:
            new._model_dir_arg = new._model_dir
        new._validate(list(kwargs))
        if "environ" in kwargs:
            new._apply_environment()
        return new

    # -- uid ---------------------------------------------------------------------------------
    def _uid_state(self) -> dict[str, Any]:
        info = self._cluster
        state = {name: getattr(self, "_" + name) for name in _DEFAULT_REPLACEABLE_LIST}
        del state["environ"]
        state.update(
            master=self._master,
            evaluation_master=self._evaluation_master,
            num_cores=self._num_cores,
            log_device_placement=self._log_device_placement,
            gpu_memory_fraction=self._gpu_memory_fraction,
            cluster_spec=_canonical(info.cluster_spec.as_dict()),
            task_type=info.task_type,
            task_id=info.task_id,
            environment=info.environment,
            is_chief=self.is_chief,
            rank=info.rank,
            world_size=info.world_size,
            master_addr=info.master_addr,
            master_port=info.master_port,
            global_id_in_cluster=info.global_id_in_cluster,
            cluster_source=info.source,
            service=_canonical(info.service),
        )
        return state

    def uid(self, whitelist: list[str] | None = None) -> str:
        """A string that is equal for two configs unless a non-whitelisted property differs.

        ``whitelist`` (default: the TF list of seed, summary, checkpoint, session and logging
        settings) names properties to ignore; ``uid([])`` compares everything.
        """
        if whitelist is None:
            whitelist = _DEFAULT_UID_WHITE_LIST
        elif isinstance(whitelist, (str, bytes)) or not hasattr(whitelist, "__iter__"):
            raise TypeError(
                f"`whitelist` must be a list of property names such as ['model_dir'], got {whitelist!r}."
            )
        state = self._uid_state()
        for name in whitelist:
            state.pop(name, None)
        return ", ".join(f"{k}={state[k]!r}" for k in sorted(state))

    def __repr__(self) -> str:
        shown = {
            "model_dir": self.model_dir,
            "cluster_source": self.cluster_source,
            "task_type": self.task_type,
            "task_id": self.task_id,
            "rank": self.rank,
            "world_size": self.world_size,
            "is_chief": self.is_chief,
            "save_checkpoints_steps": self.save_checkpoints_steps,
            "save_checkpoints_secs": self.save_checkpoints_secs,
            "device": self.device,
            "precision": self.precision,
        }
        return "RunConfig(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    # -- derived properties (the cluster role ones are added below the class) ---------------
    @property
    def tf_config(self) -> SessionConfig:
        """The session record made from ``num_cores``, placement logging and GPU fraction."""
        return SessionConfig(
            log_device_placement=self._log_device_placement,
            inter_op_parallelism_threads=self._num_cores,
            intra_op_parallelism_threads=self._num_cores,
            gpu_memory_fraction=self._gpu_memory_fraction,
        )

    # -- the cluster role (owned by ClusterInfo) --------------------------------------------
    @property
    def cluster(self) -> ClusterInfo:
        """Everything the environment says about this process's role."""
        return self._cluster

    @property
    def cluster_spec(self) -> ClusterSpec:
        """The cluster's jobs (a :class:`ClusterSpec`)."""
        return self._cluster.cluster_spec

    @property
    def task_type(self) -> str | None:
        """This task's job name, or None."""
        return self._cluster.task_type

    @property
    def task_id(self) -> int:
        """This task's index in its job."""
        return self._cluster.task_id

    @property
    def environment(self) -> str:
        """TF_CONFIG's ``environment`` ("local" by default)."""
        return self._cluster.environment

    @property
    def is_chief(self) -> bool:
        """True for the task that writes checkpoints, summaries and exports."""
        return self._cluster.is_chief

    @property
    def num_ps_replicas(self) -> int:
        """Tasks of the ``ps`` job."""
        return self._cluster.num_ps_replicas

    @property
    def num_worker_replicas(self) -> int:
        """Tasks of the worker, master and chief jobs."""
        return self._cluster.num_worker_replicas

    @property
    def rank(self) -> int | None:
        """Rank among the trainers (chief/master first, then workers); None for ps/evaluator."""
        return self._cluster.rank

    @property
    def world_size(self) -> int:
        """Number of trainers (chief/master + workers); 1 when not distributed."""
        return self._cluster.world_size

    @property
    def master_addr(self) -> str | None:
        """Host where the trainers meet (the chief's)."""
        return self._cluster.master_addr

    @property
    def master_port(self) -> int | None:
        """Port where the trainers meet."""
        return self._cluster.master_port

    @property
    def local_rank(self) -> int | None:
        """``LOCAL_RANK`` / ``SLURM_LOCALID`` when set."""
        return self._cluster.local_rank

    @property
    def global_id_in_cluster(self) -> int | None:
        """TF's id of this task across all jobs."""
        return self._cluster.global_id_in_cluster

    @property
    def cluster_source(self) -> str | None:
        """Where the role came from: "TF_CONFIG", "torchrun", "slurm" or None."""
        return self._cluster.source

    @property
    def restart_count(self) -> int:
        """How often torchrun restarted this job (``TORCHELASTIC_RESTART_COUNT``; 0 otherwise)."""
        return self._cluster.restart_count

    @property
    def service(self) -> dict | None:
        """TF_CONFIG's ``service`` dict, or None."""
        return self._cluster.service

    @property
    def is_distributed(self) -> bool:
        """True when this process is one task of a cluster of more than one task."""
        return self._cluster.is_distributed

    @property
    def is_trainer(self) -> bool:
        """True for a task that trains (not ps, not evaluator)."""
        return self._cluster.is_trainer

    @property
    def is_distributed_trainer(self) -> bool:
        """True for a trainer that coordinates with others (several trainers or ps tasks)."""
        return self._cluster.is_distributed_trainer

    @property
    def task_name(self) -> str:
        """``"<task_type>:<task_id>"`` of this process, e.g. ``worker:1``."""
        return self._cluster.task_name

    @property
    def trainer_names(self) -> list[str]:
        """Names of every trainer task (chief/master, then workers)."""
        return self._cluster.trainer_names

    # -- stored settings --------------------------------------------------------------------
    @property
    def master(self) -> str:
        """The master address (TF contrib), derived from the cluster when not given."""
        return self._master

    @property
    def evaluation_master(self) -> str:
        """The evaluation master address (TF contrib)."""
        return self._evaluation_master

    @property
    def model_dir(self) -> str | None:
        """Where checkpoints, summaries and exports go."""
        return self._model_dir

    @property
    def num_cores(self) -> int:
        """The ``num_cores`` setting."""
        return self._num_cores

    @property
    def log_device_placement(self) -> bool:
        """The ``log_device_placement`` setting."""
        return self._log_device_placement

    @property
    def gpu_memory_fraction(self) -> float:
        """The ``gpu_memory_fraction`` setting."""
        return self._gpu_memory_fraction

    @property
    def tf_random_seed(self) -> int | None:
        """Seed of torch, numpy and Python's random (None: not seeded)."""
        return self._tf_random_seed

    @property
    def save_summary_steps(self) -> int | None:
        """The ``save_summary_steps`` setting."""
        return self._save_summary_steps

    @property
    def save_checkpoints_secs(self) -> float | None:
        """The ``save_checkpoints_secs`` setting."""
        return self._save_checkpoints_secs

    @property
    def save_checkpoints_steps(self) -> int | None:
        """The ``save_checkpoints_steps`` setting."""
        return self._save_checkpoints_steps

    @property
    def keep_checkpoint_max(self) -> int | None:
        """The ``keep_checkpoint_max`` setting."""
        return self._keep_checkpoint_max

    @property
    def keep_checkpoint_every_n_hours(self) -> float | None:
        """The ``keep_checkpoint_every_n_hours`` setting."""
        return self._keep_checkpoint_every_n_hours

    @property
    def log_step_count_steps(self) -> int | None:
        """The ``log_step_count_steps`` setting."""
        return self._log_step_count_steps

    @property
    def async_checkpoint(self) -> bool | None:
        """True: checkpoints are written in a background thread (at most one in flight).

        None (the default): the Estimator writes asynchronously when ``model_dir`` is a remote
        URL (uploads overlap training) and synchronously for a local directory.
        """
        return self._async_checkpoint

    @property
    def on_nan_loss(self) -> str:
        """What training does on a NaN or infinite loss: "raise", "stop" or "rollback"."""
        return self._on_nan_loss

    @property
    def max_nan_rollbacks(self) -> int:
        """With ``on_nan_loss="rollback"``: rollbacks allowed before training raises."""
        return self._max_nan_rollbacks

    @property
    def protocol(self) -> str | None:
        """The ``protocol`` setting."""
        return self._protocol

    @property
    def session_config(self) -> SessionConfig | None:
        """The ``session_config`` setting."""
        return self._session_config

    @property
    def session_creation_timeout_secs(self) -> float | None:
        """The ``session_creation_timeout_secs`` setting."""
        return self._session_creation_timeout_secs

    @property
    def train_distribute(self) -> Any:
        """The ``train_distribute`` setting."""
        return self._train_distribute

    @property
    def eval_distribute(self) -> Any:
        """The ``eval_distribute`` setting."""
        return self._eval_distribute

    @property
    def device_fn(self) -> Any:
        """The ``device_fn`` setting."""
        return self._device_fn

    @property
    def experimental_distribute(self) -> Any:
        """The ``experimental_distribute`` setting."""
        return self._experimental_distribute

    @property
    def experimental_max_worker_delay_secs(self) -> int | None:
        """The ``experimental_max_worker_delay_secs`` setting."""
        return self._experimental_max_worker_delay_secs

    @property
    def device(self) -> str | None:
        """The torch device ("cpu", "cuda", "cuda:1"; None = CUDA when available)."""
        return self._device

    @property
    def precision(self) -> str | None:
        """None/"32", "bf16-mixed" or "16-mixed"."""
        return self._precision

    @property
    def gradient_clip_norm(self) -> float | None:
        """Clip the gradients' global norm to this (None: no clipping)."""
        return self._gradient_clip_norm

    @property
    def compile(self) -> bool:
        """``torch.compile`` the module the training loop calls (default False)."""
        return self._compile

    @property
    def distributed_timeout_secs(self) -> float:
        """Every distributed wait times out after this many seconds."""
        return self._distributed_timeout_secs
