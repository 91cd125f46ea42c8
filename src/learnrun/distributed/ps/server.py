"""Asynchronous parameter servers: the ``serve`` schedule of a ``ps`` task.

A ps task hosts one shard of the model's parameters together with their optimizer state and
applies every gradient push as it arrives (TF's between-graph replication). ps 0 also holds
the global step: one push to ps 0 is one step. The chief sends the initial (or restored)
parameters, optimizer class, hyper-parameters and optimizer state when it starts, so a ps
never builds the model itself; trainers then pull parameters before each step and push
gradients after it (see :mod:`learnrun.distributed.ps.trainer`); a push answers with the
shard's new values, so a step costs one round trip per ps.

No overshoot: trainers push concurrently, so without a limit the global step can pass
``train_steps`` by one push per trainer (31 of 30). When the chief knows its last step
(``ParameterServerStrategy.set_last_step``, sent with the initial shard or right after it),
every shard counts pushes against it and refuses (does not apply, does not count) any push
that arrives once the target is reached, answering ``STOP_DONE``: the final global step is
exactly the target. Each shard counts on its own, as TF's independent variable updates do,
so with several shards the last accepted push of two shards may come from different trainers.

The messages travel through :class:`~learnrun.distributed.ps.transport.SocketTransport`
(plain TCP sockets; its docstring says why not ``torch.distributed.rpc`` or gloo): requests
run on one thread per connection, so every public method of :class:`ShardServer` takes its
lock, and a dead worker fails only the calls to it.

Ending without hanging ("goodbye" protocol): leaving never waits for the others (a barrier
would hang on a dead peer). Each trainer sends heartbeats while it
runs and a goodbye when it ends. A ps returns when every trainer said goodbye, or when the
chief said goodbye and the others are silent (presumed dead, logged); it raises
:class:`DistributedError` naming the task when the chief goes silent for
``distributed_timeout_secs`` or reports a failure, or when the chief never sends the initial
parameters. Before raising, it answers ``STOP_FAILED`` to every call for a short grace period
(three heartbeat intervals), so that the workers learn that the chief failed and end with an
error naming it instead of a bare "the call to ps:0 failed". ps 0 hosts the rendezvous store,
and is the longest-lived role.

Execution trace of ``serve(experiment)`` in a ps task::

    transport.start("ps:<i>")           # joins ps + chief + workers (evaluator stays out)
    wait: chief's init -> pushes/pulls served on connection threads -> goodbyes or timeouts
    transport.shutdown()                # at once, no barrier
    return None                         # the process exits 0; DistributedError otherwise
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from learnrun.clock import Clock, get_clock
from learnrun.config.cluster import split_address
from learnrun.distributed.ps.transport import SocketTransport
from learnrun.errors import DistributedError

logger = logging.getLogger(__name__)

__all__ = ["ShardServer", "serve", "serve_config", "STOP_NONE", "STOP_DONE", "STOP_PREEMPTED",
           "STOP_FAILED"]

#: Stop codes, in increasing precedence: go on, training done, a trainer was preempted
#: (everyone saves and exits 143), the chief failed (everyone ends with an error).
STOP_NONE, STOP_DONE, STOP_PREEMPTED, STOP_FAILED = 0, 1, 2, 3


def heartbeat_interval(timeout: float) -> float:
    """Seconds between a trainer's heartbeats to each ps."""
    return max(0.05, min(2.0, timeout / 5.0))


class ShardServer:
    """One ps task's shard: parameters, optimizer, version and (on ps 0) the global step.

    Every public method is called on a connection thread with the caller's task name and is
    thread-safe. :meth:`check` decides, from the clock, whether serving is over.
    """

    def __init__(self, index: int, trainers: list[str], timeout: float,
                 clock: Clock | None = None) -> None:
        if not trainers:
            raise DistributedError(
                f"ps:{index} found no chief, master or worker task in the cluster spec; a "
                "parameter server needs trainers. Add them to TF_CONFIG['cluster']."
            )
        self.index = index
        self.name = f"ps:{index}"
        self.trainers = list(trainers)
        self.chief = self.trainers[0]
        self.timeout = float(timeout)
        self.grace = max(3.0 * heartbeat_interval(self.timeout), 1.0)
        self.clock = get_clock(clock)
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.params: dict[str, Any] = {}
        self.optimizer: Any = None
        self.version = 0
        self.global_step = 0
        self.last_step: int | None = None
        self.refused = 0
        self.initialized = False
        self.stop = STOP_NONE
        self.started = self.clock.monotonic()
        self.last_seen: dict[str, float] = {}
        self.goodbyes: dict[str, bool] = {}
        self.chief_goodbye_at: float | None = None
        self.presumed_dead: set[str] = set()
        self.failure: str | None = None
        self.failed_at: float | None = None

    def _seen(self, sender: str) -> None:
        self.last_seen[sender] = self.clock.monotonic()

    # -- requests from trainers --------------------------------------------------------------
    def init(self, sender: str, spec: dict[str, Any]) -> int:
        """Take the chief's shard: params, optimizer class/groups/state, global step."""
        import torch

        with self.changed:
            self._seen(sender)
            params = {n: torch.nn.Parameter(t.detach().clone()) for n, t in spec["params"].items()}
            groups = []
            for gi, options in enumerate(spec["groups"]):
                members = [params[n] for n in params if spec["group_of"][n] == gi]
                if members:
                    groups.append({**options, "params": members, "learnrun_group": gi})
            if groups:
                self.optimizer = spec["optimizer_class"](groups)
                for name, state in spec["state"].items():
                    self.optimizer.state[params[name]] = {
                        k: (v.clone() if torch.is_tensor(v) else v) for k, v in state.items()}
            self.params = params
            self._order = flat_order(params)
            self.global_step = int(spec["global_step"])
            self.version = int(spec.get("version", 0))
            self.initialized = True
            if spec.get("last_step") is not None:
                self._set_last_step(int(spec["last_step"]))
            self.changed.notify_all()
            logger.info("%s: holds %d parameters from %s at global step %d", self.name,
                        len(params), sender, self.global_step)
            return self.global_step

    def set_last_step(self, sender: str, last_step: int) -> int:
        """The chief's last step: pushes past it are refused. Return the global step."""
        with self.changed:
            self._seen(sender)
            if sender != self.chief:
                raise DistributedError(
                    f"{self.name}: only {self.chief} sets the last step of training; "
                    f"{sender} sent last_step={last_step}.")
            self._set_last_step(int(last_step))
            self.changed.notify_all()
            return self.global_step

    def _set_last_step(self, last_step: int) -> None:
        self.last_step = last_step
        if self.global_step >= last_step and not self.stop:
            self.stop = STOP_DONE

    def heartbeat(self, sender: str) -> tuple[int, int, bool]:
        """``(global_step, stop code, initialized)``."""
        with self.lock:
            self._seen(sender)
            return self.global_step, self.stop, self.initialized

    def pull(self, sender: str) -> tuple[int, dict[str, Any]]:
        """``(version, {name: tensor})`` — a consistent copy of the shard."""
        with self.lock:
            self._seen(sender)
            self._require_init(sender)
            return self.version, {n: p.detach().clone() for n, p in self.params.items()}

    def push(self, sender: str, grads: dict[str, Any], lrs: list[float]) -> tuple[int, int]:
        """Apply one gradient update; return ``(global_step, stop code)``.

        Refused (neither applied nor counted) once a stop is decided or the global step has
        reached the chief's last step.
        """
        import torch

        with self.lock:  # re-entrant: push_pull holds it too
            self._seen(sender)
            self._require_init(sender)
            if self.last_step is not None and self.global_step >= self.last_step:
                self.stop = self.stop or STOP_DONE
            if self.stop:
                self.refused += 1
                return self.global_step, self.stop
            if torch.is_tensor(grads):  # flat: every parameter's gradient, in name order
                grads = dict(zip(self._order, unflatten(grads, [self.params[n] for n in self._order]),
                                 strict=True))
            if self.optimizer is not None and grads:
                for name, param in self.params.items():
                    param.grad = grads.get(name)
                for group in self.optimizer.param_groups:
                    gi = group["learnrun_group"]
                    if gi < len(lrs) and lrs[gi] is not None:
                        group["lr"] = lrs[gi]
                self.optimizer.step()
                for param in self.params.values():
                    param.grad = None
            self.version += 1
            self.global_step += 1
            if self.last_step is not None and self.global_step >= self.last_step:
                self.stop = STOP_DONE
            return self.global_step, self.stop

    def push_pull(self, sender: str, grads: Any, lrs: list[float]) -> tuple[int, int, int, Any]:
        """:meth:`push`, then :meth:`pull` under the same lock: one round trip per step.

        ``grads``: ``{name: tensor}``, or one flat tensor of every parameter's gradient in
        name order (:func:`flatten`: one buffer on the wire instead of one per parameter).
        Returns ``(global_step, stop code, version, values)``: the shard as it is right after
        this push (applied or refused), in the form the gradients came in (flat or by name),
        which the trainer uses for its next step.
        """
        import torch

        with self.lock:
            step, stop = self.push(sender, grads, lrs)
            if torch.is_tensor(grads):
                values: Any = flatten([self.params[n].detach() for n in self._order])
            else:
                values = {n: p.detach().clone() for n, p in self.params.items()}
            return step, stop, self.version, values

    def state(self, sender: str) -> dict[str, Any]:
        """Params, optimizer state per name, version and global step (for checkpoints)."""
        import torch

        with self.lock:
            self._seen(sender)
            self._require_init(sender)
            opt_state = {}
            if self.optimizer is not None:
                for name, param in self.params.items():
                    st = self.optimizer.state.get(param)
                    if st:
                        opt_state[name] = {k: (v.detach().clone() if torch.is_tensor(v) else v)
                                           for k, v in st.items()}
            return {"params": {n: p.detach().clone() for n, p in self.params.items()},
                    "state": opt_state, "version": self.version,
                    "global_step": self.global_step}

    def request_stop(self, sender: str, code: int) -> int:
        """Stop applying pushes (``code`` STOP_PREEMPTED or STOP_DONE); return the stop step."""
        with self.changed:
            self._seen(sender)
            if not self.stop:
                self.stop = int(code)
                logger.warning("%s: %s asked every trainer to stop at global step %d (%s)",
                               self.name, sender, self.global_step,
                               "preemption" if code == STOP_PREEMPTED else "training done")
            self.changed.notify_all()
            return self.global_step

    def goodbye(self, sender: str, success: bool) -> None:
        """``sender`` has left (``success`` False: it failed)."""
        with self.changed:
            self._seen(sender)
            self.goodbyes[sender] = bool(success)
            if sender == self.chief:
                self.chief_goodbye_at = self.clock.monotonic()
                if not success:
                    self.stop = STOP_FAILED
                elif not self.stop:
                    self.stop = STOP_DONE
            self.changed.notify_all()

    def _require_init(self, sender: str) -> None:
        if not self.initialized:
            raise DistributedError(
                f"{self.name} has no parameters yet: {self.chief} has not sent them "
                f"({sender} called too early; wait on heartbeat()'s initialized flag)."
            )

    # -- the serving loop --------------------------------------------------------------------
    def _fail(self, message: str, now: float) -> None:
        """Record the chief's failure: answer STOP_FAILED for a grace period, then raise."""
        if self.failure is None:
            self.failure, self.failed_at = message, now
            self.stop = STOP_FAILED
            logger.error("%s", message)
            self.changed.notify_all()
        if now - self.failed_at >= self.grace:
            raise DistributedError(message)

    def check(self) -> bool:
        """True when serving is over; DistributedError when the chief failed or went silent.

        A failure of the chief is raised ``grace`` seconds after it is noticed; meanwhile
        every call is answered with ``STOP_FAILED`` so that the workers end too.
        """
        now = self.clock.monotonic()
        with self.changed:
            if self.failure is not None:
                self._fail(self.failure, now)
                return False
            if self.goodbyes.get(self.chief) is False:
                self._fail(
                    f"{self.name}: task {self.chief} reported a failure and left; ending the "
                    "parameter server. Restart the job to resume from the latest checkpoint.",
                    now)
                return False
            if not self.initialized and now - self.started > self.timeout:
                raise DistributedError(
                    f"{self.name}: task {self.chief} did not send the initial parameters within "
                    f"{self.timeout:g} s (RunConfig.distributed_timeout_secs). Is the chief "
                    "running with the same cluster spec?")
            if self.chief not in self.goodbyes:
                silent = now - self.last_seen.get(self.chief, self.started)
                if silent > self.timeout:
                    self._fail(
                        f"{self.name}: task {self.chief} has been silent for {silent:.1f} s "
                        f"(timeout {self.timeout:g} s, RunConfig.distributed_timeout_secs); "
                        "it has presumably died. Ending the parameter server.", now)
                return False
            for trainer in self.trainers:
                if trainer in self.goodbyes or trainer in self.presumed_dead:
                    continue
                silent = now - self.last_seen.get(trainer, self.started)
                if silent > self.grace:
                    self.presumed_dead.add(trainer)
                    logger.warning("%s: task %s has been silent for %.1f s without saying "
                                   "goodbye; presumed dead.", self.name, trainer, silent)
            missing = [t for t in self.trainers
                       if t not in self.goodbyes and t not in self.presumed_dead]
            if not missing:
                return True
            if self.chief_goodbye_at is not None and now - self.chief_goodbye_at > self.timeout:
                logger.warning("%s: training is done but %s did not leave within %g s; "
                               "stopping anyway.", self.name, ", ".join(missing), self.timeout)
                return True
            return False

    def wait(self, poll: float = 0.2) -> None:
        """Block until :meth:`check` says serving is over (or raises)."""
        while not self.check():
            with self.changed:
                self.changed.wait(poll)


def flat_order(names: Any) -> list[str]:
    """The order of a shard's parameters in its flat buffers (gradients and values): by name.

    The trainer and the ps each compute it from the names of the shard, so both agree.
    """
    return sorted(names)


def flatten(tensors: list[Any]) -> Any:
    """One flat tensor of ``tensors`` (a copy), in order: a shard's wire format."""
    import torch

    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(flat: Any, like: list[Any]) -> list[Any]:
    """Views of ``flat`` shaped as each of ``like``, in order (the inverse of :func:`flatten`)."""
    if flat.numel() != sum(t.numel() for t in like):
        raise DistributedError(
            f"a flat shard of {flat.numel()} values does not match the {len(like)} parameters "
            f"of {sum(t.numel() for t in like)} values it should hold; every trainer must build "
            "the same model.")
    return [piece.view_as(t) for piece, t in zip(flat.split([t.numel() for t in like]), like, strict=True)]


_SERVER: ShardServer | None = None
_LINGER_SECS = 1.0  # how long a finished ps keeps answering before it closes its connections


def _server() -> ShardServer:
    if _SERVER is None:
        raise DistributedError("This process hosts no parameter server (serve() is not running).")
    return _SERVER


# Module-level entry points called by trainers through the transport (importable by name).
def rpc_init(sender: str, spec: dict[str, Any]) -> int:
    return _server().init(sender, spec)


def rpc_set_last_step(sender: str, last_step: int) -> int:
    return _server().set_last_step(sender, last_step)


def rpc_heartbeat(sender: str) -> tuple[int, int, bool]:
    return _server().heartbeat(sender)


def rpc_pull(sender: str) -> tuple[int, dict[str, Any]]:
    return _server().pull(sender)


def rpc_push(sender: str, grads: dict[str, Any], lrs: list[float]) -> tuple[int, int]:
    return _server().push(sender, grads, lrs)


def rpc_push_pull(sender: str, grads: dict[str, Any],
                  lrs: list[float]) -> tuple[int, int, int, dict[str, Any]]:
    return _server().push_pull(sender, grads, lrs)


def rpc_state(sender: str) -> dict[str, Any]:
    return _server().state(sender)


def rpc_request_stop(sender: str, code: int) -> int:
    return _server().request_stop(sender, code)


def rpc_goodbye(sender: str, success: bool) -> None:
    _server().goodbye(sender, success)


def world_layout(config: Any) -> tuple[int, int, str, int]:
    """``(rank, world_size, rendezvous host, port)`` of this task in the ps+trainers world.

    ps ``i`` has rank ``i``; trainer rank ``r`` (chief 0, workers 1..) has ``num_ps + r``. The
    rendezvous store lives on ps 0 at its address in the cluster spec.
    """
    ps = config.cluster.job_addresses("ps")
    trainers = config.trainer_names
    if not ps:
        raise DistributedError("The cluster spec has no 'ps' job; parameter servers need one.")
    host, port = split_address(ps[0], "ps:0")
    if config.task_type == "ps":
        rank = int(config.task_id or 0)
    else:
        name = config.task_name
        if name not in trainers:
            raise DistributedError(
                f"Task {name} is not a trainer of the cluster {config.cluster_spec}; parameter-server "
                "training runs on chief/master and worker tasks.")
        rank = len(ps) + trainers.index(name)
    return rank, len(ps) + len(trainers), host, port


def serve_config(config: Any, transport: Any = None, clock: Clock | None = None) -> None:
    """Run this ps task (``config.task_type == 'ps'``) until training ends.

    Collective: every ps, chief and worker of the cluster must join.
    Raises DistributedError naming the failed task when the chief dies or times out.
    """
    global _SERVER
    if config.task_type != "ps":
        raise DistributedError(
            f"serve() runs parameter-server tasks, but this task is "
            f"{config.task_type!r}; use the 'ps' task type in TF_CONFIG.")
    import torch

    torch.set_num_threads(1)
    timeout = float(config.distributed_timeout_secs)
    rank, world, host, port = world_layout(config)
    server = ShardServer(rank, config.trainer_names, timeout, clock=clock)
    transport = transport or SocketTransport()
    _SERVER = server
    transport.start(server.name, rank, world, host, port, timeout)
    try:
        server.wait()
        logger.info("%s: training is over at global step %d (%d late pushes refused); "
                    "leaving.", server.name, server.global_step, server.refused)
        # The last goodbye was applied by a connection thread that still has to send its answer:
        # give it a moment, or the trainer sees the ps vanish ("could not say goodbye").
        server.clock.sleep(_LINGER_SECS)
    finally:
        transport.shutdown()
        _SERVER = None


def serve(experiment: Any) -> None:
    """The ``serve``/``run_std_server`` schedule: host this ps's shard until training ends.

    ``experiment`` is an Experiment (its ``estimator.config`` is used) or a RunConfig.
    """
    estimator = getattr(experiment, "estimator", None)
    config = getattr(estimator, "config", None) if estimator is not None else None
    if config is None:
        config = getattr(experiment, "config", None) or experiment
    serve_config(config)
