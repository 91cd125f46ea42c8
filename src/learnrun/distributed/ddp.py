"""Synchronous data parallel training: chief and workers in one process group, DDP-wrapped.

Execution trace, as the Estimator drives :class:`DDPStrategy`::

    setup()          one torch thread per rank; join the process group (gloo on CPU, nccl on
                     CUDA) through a TCP store at config.master_addr:master_port (rank 0, the
                     chief, hosts it); under torchrun the agent's store is used, prefixed by
                     TORCHELASTIC_RESTART_COUNT so that restarts never see stale keys
    prepare()        move to the device, wrap in DistributedDataParallel (averages gradients)
    after_restore()  broadcast the chief's parameters, buffers, optimizer state and step
    should_stop()    all_reduce MAX of (0 go on, 1 stop, 2 preempted) and of the NaN-loss
                     flag: every rank stops at the same step, all know whether it was a
                     preemption (exit 143), and all take the same on_nan_loss decision
    apply_update()   the optimizer step on the averaged gradients; global step + 1
    reduce_sum()     all_reduce SUM (evaluation metrics over every rank's shard)
    teardown()       destroy the process group (bounded: never hangs on a dead peer)

Losses equal single-process training on the same global batch up to float32 reduction order
(tests/distributed/test_estimator_cluster.py checks 1e-5 relative, 1e-6 absolute).

Resuming: every trainer's input position and RNG state are in each checkpoint
(``trainer-<rank>.pt``). Saves are agreed at step boundaries: the chief's saver requests one,
the request travels in ``should_stop``'s all_reduce, every rank then hands its state as it
was before that boundary's fetch to the chief (``gather_trainer_states``), which writes every
part before the commit marker. A restarted cluster of the same size resumes bit-identical;
one of another size restarts every shard from its beginning, with a warning.

After teardown a process should flush and leave with ``os._exit``
(:func:`learnrun.distributed.exit_process`): about 1 in 80 normal exits after
``destroy_process_group()`` aborted with SIGABRT on this platform.
"""

from __future__ import annotations

import datetime
import logging
import threading
from typing import Any

from learnrun.config.cluster import TRAINER_JOBS, split_address
from learnrun.distributed.base import InputContext, Strategy, compile_if_configured
from learnrun.errors import DistributedError

logger = logging.getLogger(__name__)

__all__ = ["DDPStrategy", "run_with_timeout"]

_GO, _STOP, _PREEMPTED = 0, 1, 2


def run_with_timeout(fn, timeout: float, what: str) -> bool:
    """Run ``fn()`` in a daemon thread; False (and a warning) when it is still running."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as err:  # reported below
            errors.append(err)

    thread = threading.Thread(target=target, name=f"learnrun-{what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        logger.warning("%s did not finish within %g s; leaving it behind.", what, timeout)
        return False
    if errors:
        logger.warning("%s failed: %s", what, errors[0])
        return False
    return True


class DDPStrategy(Strategy):
    """Synchronous data parallel over ``config.world_size`` trainers (chief + workers)."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.rank = int(config.rank)
        self.world_size = int(config.world_size)
        self.is_chief = bool(config.is_chief)
        self.timeout = float(config.distributed_timeout_secs)
        self.name = config.task_name if config.task_type else f"rank:{self.rank}"
        self._code = _GO
        self._group_ready = False
        if not 0 <= self.rank < self.world_size:
            raise DistributedError(
                f"{self.name}: rank {self.rank} is outside [0, {self.world_size}); check "
                "RANK/WORLD_SIZE or TF_CONFIG.")

    @property
    def backend(self) -> str:
        """``nccl`` on CUDA devices, ``gloo`` otherwise."""
        return "nccl" if self.device.type == "cuda" else "gloo"

    def input_context(self) -> InputContext:
        return InputContext(self.world_size, self.rank, self.world_size)

    def _store(self):
        import torch.distributed as dist

        timeout = datetime.timedelta(seconds=self.timeout)
        addr = self.config.master_addr
        port = self.config.master_port
        if self.config.cluster_source == "torchrun":
            store, _, _ = next(dist.rendezvous("env://", rank=self.rank,
                                               world_size=self.world_size, timeout=timeout))
            # torchrun's own variable (pytorch#135712: the agent's store outlives attempts).
            return dist.PrefixStore(f"learnrun/{self.config.restart_count}", store)
        if not addr or not port:  # a one-task cluster: the chief's own address
            first = next((a for job in TRAINER_JOBS
                          for a in self.config.cluster.job_addresses(job)), None)
            if first:
                addr, port = split_address(first, "chief")
        if not addr or not port:
            raise DistributedError(
                f"{self.name}: no rendezvous address (master_addr={addr!r}, master_port="
                f"{port!r}); set the chief in TF_CONFIG or MASTER_ADDR/MASTER_PORT.")
        try:
            return dist.TCPStore(str(addr), int(port), self.world_size,
                                 is_master=(self.rank == 0), timeout=timeout)
        except Exception as err:
            raise DistributedError(
                f"{self.name}: could not reach the rendezvous store at {addr}:{port} "
                f"within {self.timeout:g} s: {err}. Is the chief (rank 0) running?") from err

    def setup(self) -> None:
        """Collective: join the process group of every trainer."""
        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        store = self._store()
        try:
            dist.init_process_group(self.backend, store=store, rank=self.rank,
                                    world_size=self.world_size,
                                    timeout=datetime.timedelta(seconds=self.timeout))
        except Exception as err:
            raise DistributedError(
                f"{self.name}: joining the {self.backend} process group of {self.world_size} "
                f"trainers failed: {err}") from err
        self._group_ready = True

    def prepare(self, module, optimizer):
        from torch.nn.parallel import DistributedDataParallel

        module = compile_if_configured(module.to(self.device), self.config)
        if not any(p.requires_grad for p in module.parameters()):
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def after_restore(self, module, optimizer, global_step: int) -> int:
        """Collective: every rank takes the chief's weights, optimizer state and step."""
        import torch
        import torch.distributed as dist

        inner = getattr(module, "module", module)
        with torch.no_grad():
            for tensor in list(inner.parameters()) + list(inner.buffers()):
                dist.broadcast(tensor.data, src=0)
        box = [optimizer.state_dict() if optimizer is not None else None, int(global_step)]
        dist.broadcast_object_list(box, src=0, device=self._object_device())
        if optimizer is not None and self.rank != 0:
            optimizer.load_state_dict(box[0])
        return int(box[1])

    def _object_device(self):
        return self.device if self.device.type == "cuda" else None

    def notify_preempted(self) -> None:
        super().notify_preempted()
        self._code = max(self._code, _PREEMPTED)

    @property
    def preempted(self) -> bool:
        return self._code == _PREEMPTED

    def should_stop(self, local_stop: bool) -> bool:
        """Collective: all_reduce MAX of the stop and non-finite-loss flags.

        True on every rank if any stops or saw a NaN loss (then :meth:`nan_agreed` is True on
        every rank: they all take the same ``on_nan_loss`` decision). A stop or a preemption
        is remembered; a NaN is not (training may go on after a rollback). The chief's save
        request (:meth:`request_save`) travels in the same all_reduce.
        """
        import torch
        import torch.distributed as dist

        code = max(self._code, _STOP if local_stop else _GO)
        flag = torch.tensor([code, int(bool(getattr(self, "_nan", False))),
                             int(bool(getattr(self, "_save", False)))], dtype=torch.int32,
                            device=self.device)
        try:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        except Exception as err:
            raise DistributedError(
                f"{self.name}: agreeing on the stop step with the other {self.world_size - 1} "
                f"trainers failed: {err}. A trainer has probably died; restart the job (it "
                "resumes from the latest checkpoint).") from err
        code, nan, save = (int(v) for v in flag.tolist())
        self._code, self._nan, self._save = code, bool(nan), bool(save)
        return self._code != _GO or self._nan

    @property
    def gathers_trainer_states(self) -> bool:
        return self.world_size > 1

    def gather_trainer_states(self, state: Any) -> list | None:
        """Collective: every rank's ``state`` (a small dict), in rank order, on the chief."""
        import torch.distributed as dist

        gathered: list | None = [None] * self.world_size if self.rank == 0 else None
        try:
            dist.gather_object(state, gathered, dst=0)
        except Exception as err:
            raise DistributedError(
                f"{self.name}: gathering the trainers' input positions for a checkpoint "
                f"failed: {err}. A trainer has probably died; restart the job.") from err
        return gathered

    def reduce_sum(self, value: float) -> float:
        """Collective: the sum of ``value`` over every trainer."""
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return float(tensor.item())

    def teardown(self, success: bool = True) -> None:
        """Leave the process group; bounded by ``distributed_timeout_secs``."""
        import torch.distributed as dist

        if not self._group_ready:
            return
        self._group_ready = False
        if dist.is_initialized():
            run_with_timeout(dist.destroy_process_group, min(self.timeout, 30.0),
                             f"{self.name} destroy_process_group")
