"""The trainer side of asynchronous parameter-server training (chief, master and workers).

Execution trace, as the Estimator drives :class:`ParameterServerStrategy`::

    setup()          join the ps + trainers world (transport); start a heartbeat thread to every ps
    prepare()        plan the shards: each trainable parameter goes to one ps (largest first,
                     onto the least loaded ps; every trainer computes the same plan)
    set_last_step()  the target global step (train_steps), when the loop knows it: before
                     after_restore it travels with the initial shard, after it in its own call
    after_restore()  chief: send each ps its shard, the optimizer class, hyper-parameters and
                     (restored) optimizer state, the global step and the last step.
                     worker: wait (timeout) until every ps has its shard. Both pull parameters.
    before_step()    load the parameters every shard sent with its answers to the push in
                     flight when they have arrived, else to the push before (the step then
                     overlaps the push in flight); pull them when there was none (first step)
    apply_update()   clip locally; collect the answers to the push in flight; push gradients
                     (+ current learning rates) to every ps without waiting: the ps applies
                     them and answers with the new global step (ps 0's counts) and its
                     shard's new values. One round trip per ps and step, each way one flat
                     buffer per shard (by name when a parameter has no gradient), at most
                     one push in flight; nothing is pushed once a ps said stop. The local
                     optimizer never steps: it only carries hyper-parameters and the
                     scheduler's lr.
    should_stop()    True when this trainer stops or ps 0 says training is done / preempted;
                     DistributedError naming the chief when a ps reports that it failed
    state_for_checkpoint()  chief: gather every shard (params + optimizer state + version)
    teardown()       goodbye to every ps, then leave at once (transport.shutdown)

Buffers (e.g. BatchNorm statistics) stay local to each trainer; the chief's are checkpointed.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from learnrun.distributed.base import InputContext, Strategy, compile_if_configured
from learnrun.distributed.ps import server as ps_mod
from learnrun.distributed.ps.transport import SocketTransport
from learnrun.errors import DistributedError

logger = logging.getLogger(__name__)

__all__ = ["ParameterServerStrategy", "plan_shards"]


def plan_shards(sizes: dict[str, int], num_ps: int) -> dict[str, int]:
    """Assign each parameter name to a ps: largest first onto the least loaded (stable)."""
    load = [0] * num_ps
    plan: dict[str, int] = {}
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        target = min(range(num_ps), key=lambda i: (load[i], i))
        plan[name] = target
        load[target] += sizes[name]
    return plan


class ParameterServerStrategy(Strategy):
    """Asynchronous training against the ps tasks of ``config.cluster_spec``."""

    can_roll_back = False  # the parameters live on the ps tasks

    def __init__(self, config: Any, transport: Any = None) -> None:
        super().__init__(config)
        self.is_chief = bool(config.is_chief)
        self.name = config.task_name
        self.ps_names = [f"ps:{i}" for i in range(int(config.num_ps_replicas))]
        self.trainers = config.trainer_names
        self.timeout = float(config.distributed_timeout_secs)
        self.transport = transport or SocketTransport()
        self._plan: dict[str, int] = {}
        self._params: dict[str, Any] = {}
        self._stop_code = ps_mod.STOP_NONE
        self._failed_by: str | None = None
        self._stop_sent = False
        self._beat_stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._started = False
        self._initialized = False
        self._last_step: int | None = None
        self._fresh: list[Any] | None = None  # shards sent with the last collected answers
        self._pending: list[Any] | None = None  # the push in flight (one call per ps)
        self._known_step = 0  # ps 0's global step in the last answer collected
        self.last_checkpoint_versions: list[int] = []

    # -- lifecycle ------------------------------------------------------------------------
    def input_context(self) -> InputContext:
        index = self.trainers.index(self.name) if self.name in self.trainers else 0
        return InputContext(len(self.trainers), index, 1)

    def setup(self) -> None:
        """Collective: join the ps + trainers world and start heartbeats."""
        import torch

        torch.set_num_threads(1)
        rank, world, host, port = ps_mod.world_layout(self.config)
        self.transport.start(self.name, rank, world, host, port, self.timeout)
        self._started = True
        self._beat = threading.Thread(target=self._heartbeats, name="learnrun-ps-heartbeat",
                                      daemon=True)
        self._beat.start()

    def _heartbeats(self) -> None:
        interval = ps_mod.heartbeat_interval(self.timeout)
        while not self._beat_stop.wait(interval):
            for ps in self.ps_names:
                try:
                    step, stop, _ = self.transport.call(ps, ps_mod.rpc_heartbeat, self.name,
                                                        timeout=max(interval * 2, 1.0))
                    self._note_stop(stop, ps, raise_failure=False)
                    if ps == self.ps_names[0]:  # other trainers' pushes move the estimate too
                        self._known_step = max(self._known_step, int(step))
                except DistributedError as err:  # the training thread reports it on its next call
                    logger.debug("heartbeat to %s failed: %s", ps, err)

    def teardown(self, success: bool = True) -> None:
        """Say goodbye to every ps (dead ones are skipped) and leave the world at once."""
        self._beat_stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        if not self._started:
            return
        try:
            self._collect()
        except DistributedError as err:  # the ps is gone: say goodbye to the others anyway
            logger.warning("%s: the last push was not answered: %s", self.name, err)
        for ps in self.ps_names:
            try:
                self.transport.call(ps, ps_mod.rpc_goodbye, self.name, bool(success), timeout=5)
            except DistributedError as err:
                logger.warning("%s: could not say goodbye to %s: %s", self.name, ps, err)
        self.transport.shutdown()
        self._started = False

    # -- training -------------------------------------------------------------------------
    def prepare(self, module, optimizer):
        module = compile_if_configured(module.to(self.device), self.config)
        self._params = {n: p for n, p in module.named_parameters() if p.requires_grad}
        self._plan = plan_shards({n: p.numel() for n, p in self._params.items()},
                                 len(self.ps_names))
        # each shard's names in the order of its flat buffers
        self._shard_names = [ps_mod.flat_order(n for n in self._params if self._plan[n] == i)
                             for i in range(len(self.ps_names))]
        self._group_of: dict[str, int] = {}
        if optimizer is not None:
            by_id = {id(p): gi for gi, g in enumerate(optimizer.param_groups) for p in g["params"]}
            for name, p in self._params.items():
                if id(p) not in by_id:
                    raise DistributedError(
                        f"Parameter {name!r} requires grad but is not in the optimizer; the "
                        "parameter servers cannot update it. Give the optimizer all trainable "
                        "parameters or set requires_grad=False.")
                self._group_of[name] = by_id[id(p)]
        return module

    def set_last_step(self, last_step: int | None) -> None:
        """The global step at which training ends (``max_steps``), once the loop knows it.

        On the chief the ps tasks then refuse pushes past it, so the final global step is
        exactly ``last_step`` (not one push per trainer more). Called before
        :meth:`after_restore` it travels with the initial shard; after it, in a call of its
        own. Idempotent; None (no target) does nothing; workers only keep it.
        """
        if last_step is None:
            return
        if isinstance(last_step, bool) or not isinstance(last_step, int) or last_step < 0:
            raise ValueError(f"last_step must be a non-negative int or None; got {last_step!r}.")
        changed = last_step != self._last_step
        self._last_step = int(last_step)
        if changed and self.is_chief and self._initialized:
            for ps in self.ps_names:
                self.transport.call(ps, ps_mod.rpc_set_last_step, self.name, self._last_step)

    def after_restore(self, module, optimizer, global_step: int) -> int:
        """Chief: initialise every ps from this process's (restored) state. Worker: wait."""
        if self.is_chief:
            if optimizer is None:
                raise DistributedError("Parameter-server training needs an optimizer in the "
                                       "EstimatorSpec; got optimizer=None.")
            groups = [{k: v for k, v in g.items() if k != "params"}
                      for g in optimizer.param_groups]
            pending = []
            for i, ps in enumerate(self.ps_names):
                names = [n for n in self._params if self._plan[n] == i]
                spec = {
                    "params": {n: self._params[n].detach().cpu() for n in names},
                    "optimizer_class": type(optimizer),
                    "groups": groups,
                    "group_of": {n: self._group_of[n] for n in names},
                    "state": {n: dict(optimizer.state[self._params[n]]) for n in names
                              if optimizer.state.get(self._params[n])},
                    "global_step": int(global_step),
                    "last_step": self._last_step,
                }
                pending.append(self.transport.call_async(ps, ps_mod.rpc_init, self.name, spec))
            step = [p.wait() for p in pending][0]
        else:
            step = self._wait_for_servers()
        self._initialized = True
        self._known_step = int(step)
        self.before_step(module)
        return int(step)

    def _wait_for_servers(self) -> int:
        import time

        deadline = time.monotonic() + self.timeout
        step = 0
        for ps in self.ps_names:
            while True:
                got, stop, ready = self.transport.call(ps, ps_mod.rpc_heartbeat, self.name)
                self._note_stop(stop, ps)
                if ready:
                    step = got if ps == self.ps_names[0] else step
                    break
                if time.monotonic() > deadline:
                    raise DistributedError(
                        f"{self.name}: {ps} did not receive its parameters from "
                        f"{self.trainers[0]} within {self.timeout:g} s "
                        "(RunConfig.distributed_timeout_secs). Is the chief running?")
                time.sleep(0.05)
        return step

    def before_step(self, module) -> None:
        """Copy the current parameters of every shard into ``module``.

        They come with the answers to a push. When the answers to the push in flight have
        arrived they are used (as fresh as a pull now); otherwise the answers to the push
        before it (already loaded when this trainer did not wait for them), so that this
        step's forward and backward overlap the push in flight (the gradient then misses one
        update: asynchronous training's staleness). Without any push (the first step, or
        once a ps said stop) every shard is pulled.
        """
        import torch

        if self._pending is not None and all(call.done() for call in self._pending):
            self._collect()
        shards, self._fresh = self._fresh, None
        if shards is None and self._pending is not None:
            return  # the module holds the newest values received: overlap the push in flight
        if shards is None:
            pending = [self.transport.call_async(ps, ps_mod.rpc_pull, self.name)
                       for ps in self.ps_names]
            shards = [call.wait()[1] for call in pending]
        with torch.no_grad():
            for i, values in enumerate(shards):
                if torch.is_tensor(values):  # flat, in the shard's name order
                    params = [self._params[n] for n in self._shard_names[i]]
                    for param, value in zip(params, ps_mod.unflatten(values, params), strict=True):
                        param.copy_(value)
                    continue
                for name, value in values.items():
                    self._params[name].copy_(value)

    def apply_update(self, module, optimizer, scheduler=None, clip_norm: float | None = None,
                     global_step: int = 0, scaler=None) -> int:
        """Push this trainer's gradients to every ps without waiting for the answers.

        First the answers to the previous push are collected (at most one push is in flight).
        Returns the global step this push makes (ps 0's count after the previous push, plus
        one, never past the last step); the exact count comes with the answers. Once a ps has
        said that training stops, nothing more is pushed.
        """
        import torch

        if scaler is not None:
            raise DistributedError("Mixed precision with a GradScaler is not supported with "
                                   "parameter servers; use precision='32' or 'bf16-mixed'.")
        if clip_norm:
            torch.nn.utils.clip_grad_norm_(list(self._params.values()), clip_norm)
        lrs = [g.get("lr") for g in optimizer.param_groups] if optimizer is not None else []
        shards: list[Any] = []
        for names in self._shard_names:
            grads = [self._params[n].grad for n in names]
            if names and all(g is not None for g in grads):  # one buffer on the wire (a copy)
                shards.append(ps_mod.flatten([g.detach().cpu() for g in grads]))
            else:  # a parameter without a gradient is left alone by the ps: by name (copies)
                shards.append({n: g.detach().cpu().clone() for n, g in zip(names, grads, strict=True)
                               if g is not None})
        self._collect()
        if scheduler is not None:
            scheduler.step()
        if self._stop_code != ps_mod.STOP_NONE:  # the ps refuse pushes now: send none
            return self._known_step
        self._pending = [self.transport.call_async(ps, ps_mod.rpc_push_pull, self.name,
                                                   shards[i], lrs)
                         for i, ps in enumerate(self.ps_names)]
        if all(call.done() for call in self._pending):  # answered already: the exact step
            self._collect()
            return self._known_step
        step = self._known_step + 1
        return step if self._last_step is None else min(step, self._last_step)

    def _collect(self) -> None:
        """Wait for the answers to the push in flight, if any: stop codes, ps 0's global step
        and the new values (loaded by the next :meth:`before_step`)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        replies = [call.wait() for call in pending]
        for ps, (_, stop, _, _) in zip(self.ps_names, replies, strict=True):
            self._note_stop(stop, ps, raise_failure=False)
        self._fresh = [values for _, _, _, values in replies]
        self._known_step = max(self._known_step, int(replies[0][0]))

    def _note_stop(self, stop: int, ps: str, raise_failure: bool = True) -> None:
        """Merge a stop code from ``ps``; raise when it says the chief failed."""
        self._stop_code = max(self._stop_code, int(stop))
        if stop == ps_mod.STOP_FAILED and self._failed_by is None:
            self._failed_by = ps
        if raise_failure:
            self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._stop_code == ps_mod.STOP_FAILED:
            raise DistributedError(
                f"{self.name}: {self._failed_by or 'a ps task'} reports that task "
                f"{self.trainers[0]} failed or went silent (RunConfig.distributed_timeout_secs="
                f"{self.timeout:g}); parameter-server training cannot go on without the chief. "
                "Restart the job to resume from the latest checkpoint.")

    def notify_preempted(self) -> None:
        """This trainer got SIGTERM/SIGINT: the next ``should_stop`` stops every trainer."""
        super().notify_preempted()
        self._stop_code = max(self._stop_code, ps_mod.STOP_PREEMPTED)

    @property
    def preempted(self) -> bool:
        """True when this trainer or any other was preempted (then exit 143)."""
        return self._stop_code == ps_mod.STOP_PREEMPTED

    def should_stop(self, local_stop: bool) -> bool:
        self._raise_if_failed()
        if self._stop_code == ps_mod.STOP_PREEMPTED and not self._stop_sent:
            self._stop_sent = True
            for ps in self.ps_names:
                self.transport.call(ps, ps_mod.rpc_request_stop, self.name,
                                    ps_mod.STOP_PREEMPTED)
        stop = bool(local_stop) or self._stop_code != ps_mod.STOP_NONE
        if stop:
            self._collect()  # the last push is answered before anything is saved or said
        return stop

    def shared_global_step(self, local_step: int) -> int:
        self._collect()
        step, stop, _ = self.transport.call(self.ps_names[0], ps_mod.rpc_heartbeat, self.name)
        self._note_stop(stop, self.ps_names[0])
        self._known_step = max(self._known_step, int(step))
        return int(step)

    def state_for_checkpoint(self, module, optimizer) -> tuple[dict, dict | None]:
        """Gather every shard: weights (ps values + local buffers) and optimizer state."""
        self._collect()  # this trainer's last push is in the state
        pending = [self.transport.call_async(ps, ps_mod.rpc_state, self.name)
                   for ps in self.ps_names]
        states = [call.wait() for call in pending]
        inner = getattr(module, "module", module)
        weights = {k: v.detach().cpu().clone() for k, v in inner.state_dict().items()}
        opt_state: dict[str, Any] = {}
        for shard in states:
            weights.update(shard["params"])
            opt_state.update(shard["state"])
        self.last_checkpoint_versions = [s["version"] for s in states]
        if optimizer is None:
            return weights, None
        full = optimizer.state_dict()
        index = {id(p): i for i, p in enumerate(
            p for g in optimizer.param_groups for p in g["params"])}
        full["state"] = {index[id(self._params[n])]: st for n, st in opt_state.items()}
        full["learnrun_ps_versions"] = list(self.last_checkpoint_versions)
        return weights, full
