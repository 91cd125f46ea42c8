"""How the training loop talks to the execution engine: one process, DDP, or parameter servers.

The Estimator never calls ``torch.distributed`` itself. It asks a ``Strategy`` (built from the
``RunConfig`` by :func:`learnrun.distributed.make_strategy`) to set up, to prepare the module, to apply each update
and to agree on when to stop. ``LocalStrategy`` is the single-process engine; the synchronous
(DDP) and parameter-server engines live in ``learnrun.distributed`` and subclass ``Strategy``.

Execution trace of one training run, as the Estimator drives it::

    strategy.setup()                          # Collective: join the process group / ps world
    module = strategy.prepare(module, optimizer)       # move to device, wrap (DDP) ...
    step = strategy.after_restore(module, optimizer, restored_step)   # sync/PS: agree on state
    loop:
        if strategy.should_stop(local_stop):  # Collective in sync mode (all_reduce MAX)
            break
        strategy.before_step(module)          # PS: pull fresh parameters
        outputs = module(features); loss = loss_fn(outputs, labels); loss.backward()
        step = strategy.apply_update(module, optimizer, scheduler, clip_norm)
        if strategy.is_chief and time to save:
            weights, opt_state = strategy.state_for_checkpoint(module, optimizer)
    strategy.teardown(success)                # leave the group without hanging on dead peers
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class InputContext:
    """What an ``input_fn`` that accepts ``input_context`` learns about its shard.

    Attributes:
      num_input_pipelines: how many trainers read data (1 when not distributed).
      input_pipeline_id: this trainer's index in ``[0, num_input_pipelines)``.
      num_replicas_in_sync: replicas that average gradients each step (1 in PS mode).
    """

    num_input_pipelines: int = 1
    input_pipeline_id: int = 0
    num_replicas_in_sync: int = 1


def compile_if_configured(module, config: Any):
    """``module`` compiled in place (``nn.Module.compile``) when ``config.compile`` is True.

    In place, so the state dict, the checkpoints and the exported program keep the module's
    own names; only calls through ``module(...)`` run the compiled code.
    """
    if config is not None and config.compile:
        module.compile()
    return module


def _clip(optimizer, clip_norm: float) -> None:
    """Clip the gradients of every parameter ``optimizer`` updates to a global norm."""
    import torch

    params = [p for group in optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, clip_norm)


class Strategy:
    """Base class; subclasses override what differs from one process."""

    #: True where this process writes checkpoints, summaries and exports.
    is_chief: bool = True
    #: True where the model's state lives in this process, so that a checkpoint can be loaded
    #: back into it mid-run (``RunConfig(on_nan_loss="rollback")``); False with parameter servers.
    can_roll_back: bool = True

    def __init__(self, config: Any = None) -> None:
        self.config = config
        self._device = None

    # -- placement -----------------------------------------------------------------------
    @property
    def device(self):
        """The torch.device this process computes on (RunConfig.device, else CUDA if present)."""
        if self._device is None:
            import torch

            wanted = self.config.device if self.config is not None else None
            if wanted:
                self._device = torch.device(wanted)
            else:
                self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return self._device

    def input_context(self) -> InputContext:
        """The shard of the input that this process reads."""
        return InputContext()

    # -- lifecycle -------------------------------------------------------------------------
    def setup(self) -> None:
        """Collective: join the cluster (no-op for one process)."""

    def teardown(self, success: bool = True) -> None:
        """Leave the cluster; never blocks forever on a dead peer."""

    # -- training ------------------------------------------------------------------------
    def prepare(self, module, optimizer):
        """Return the module to call in the training loop (moved to ``device``, maybe wrapped)."""
        return compile_if_configured(module.to(self.device), self.config)

    def after_restore(self, module, optimizer, global_step: int) -> int:
        """Collective: make every process start from the same state; return the global step."""
        return global_step

    def before_step(self, module) -> None:
        """Called before each forward pass (PS mode pulls parameters here)."""

    def apply_update(self, module, optimizer, scheduler=None, clip_norm: float | None = None,
                     global_step: int = 0, scaler=None) -> int:
        """Apply the gradients now in ``module``'s parameters; return the new global step."""
        if scaler is not None:
            if clip_norm:
                scaler.unscale_(optimizer)
                _clip(optimizer, clip_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            if clip_norm:
                _clip(optimizer, clip_norm)
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        return global_step + 1

    def should_stop(self, local_stop: bool) -> bool:
        """Collective in sync mode: True when any process wants to stop at this boundary."""
        return bool(local_stop)

    def set_last_step(self, last_step: int | None) -> None:
        """The global step at which this training run ends, once known (PS: no overshoot)."""

    def shared_global_step(self, local_step: int) -> int:
        """The cluster's global step (PS mode reads it from ps 0)."""
        return local_step

    def state_for_checkpoint(self, module, optimizer) -> tuple[dict, dict | None]:
        """``(weights state_dict, optimizer state_dict)`` to write into a checkpoint."""
        inner = getattr(module, "module", module)  # unwrap DDP
        return inner.state_dict(), (optimizer.state_dict() if optimizer is not None else None)

    # -- preemption (added for learnrun.distributed) --------------------------------------
    def notify_preempted(self) -> None:
        """Record that this process got SIGTERM/SIGINT; the next ``should_stop`` shares it.

        Call it from the loop at the step boundary (never from the signal handler), then
        call ``should_stop(True)``; afterwards ``preempted`` tells every process to exit 143.
        """
        self._local_preempted = True

    @property
    def preempted(self) -> bool:
        """True when this process or (after ``should_stop``) any peer was preempted."""
        return bool(getattr(self, "_local_preempted", False))

    # -- checkpoints of every trainer -----------------------------------------------------
    @property
    def gathers_trainer_states(self) -> bool:
        """True where every trainer's input position and RNG go into each checkpoint
        (synchronous training with more than one trainer): saves are then agreed at step
        boundaries (:meth:`request_save`) and the chief gathers the parts."""
        return False

    def gather_trainer_states(self, state: Any) -> list | None:
        """Collective: every trainer's ``state``, in rank order, on the chief (None elsewhere)."""
        return [state]

    def request_save(self) -> None:
        """The chief wants a checkpoint; the next ``should_stop`` shares it (see :meth:`save_agreed`)."""
        self._save = True

    def save_agreed(self) -> bool:
        """After ``should_stop``: True when the chief requested a save at that boundary.
        Reading it clears it."""
        save, self._save = bool(getattr(self, "_save", False)), False
        return save

    # -- non-finite losses ---------------------------------------------------------------
    def notify_nan(self) -> None:
        """Record that this process saw a NaN or infinite loss; the next ``should_stop`` shares it.

        Call it at the step boundary, then ``should_stop(True)``; afterwards :meth:`nan_agreed`.
        """
        self._nan = True

    def nan_agreed(self) -> bool:
        """After ``should_stop``: True when this process (in synchronous training: any trainer)
        reported a non-finite loss at that boundary. Reading it clears it."""
        nan, self._nan = bool(getattr(self, "_nan", False)), False
        return nan

    # -- evaluation -----------------------------------------------------------------------
    def reduce_sum(self, value: float) -> float:
        """Sum a host value over the processes that evaluate together (one process: itself)."""
        return value


class LocalStrategy(Strategy):
    """Training in this process alone."""
