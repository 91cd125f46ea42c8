"""Tests of learnrun.distributed.ps.trainer: shard planning and ParameterServerStrategy.

The strategy runs against in-process ShardServers through a fake transport (no sockets).
"""

from __future__ import annotations

import json
import types

import pytest
import torch

from learnrun.clock import FakeClock
from learnrun.config.run_config import RunConfig
from learnrun.distributed.ps.server import STOP_DONE, ShardServer
from learnrun.distributed.ps.trainer import ParameterServerStrategy, plan_shards
from learnrun.errors import DistributedError
from learnrun.hooks import GlobalStepWaiterHook

pytestmark = pytest.mark.timeout(30)

CLUSTER = {"chief": ["h:1"], "worker": ["h:2"], "ps": ["h:3", "h:4"]}


class _Done:
    def __init__(self, value):
        self.value = value

    def wait(self):
        return self.value

    def done(self):
        return True


class FakeTransport:
    """Calls ``ShardServer.<name>`` for ``rpc_<name>`` directly (what a ps connection thread runs)."""

    def __init__(self, servers: dict[str, ShardServer]) -> None:
        self.servers = servers
        self.calls: list[tuple[str, str]] = []

    def start(self, *args) -> None:
        pass

    def call(self, to, fn, *args, timeout=None):
        self.calls.append((to, fn.__name__))
        return getattr(self.servers[to], fn.__name__.removeprefix("rpc_"))(*args)

    def call_async(self, to, fn, *args):
        return _Done(self.call(to, fn, *args))

    def shutdown(self) -> None:
        pass


def _strategy(task_type: str, servers) -> ParameterServerStrategy:
    tf_config = {"cluster": CLUSTER, "task": {"type": task_type, "index": 0}}
    config = RunConfig(environ={"TF_CONFIG": json.dumps(tf_config)}, distributed_timeout_secs=10,
                       device="cpu")
    return ParameterServerStrategy(config, transport=FakeTransport(servers))


def _model():
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 1)
    return module, torch.optim.SGD(module.parameters(), lr=0.1)


def _servers():
    clock = FakeClock()
    trainers = ["chief:0", "worker:0"]
    return {f"ps:{i}": ShardServer(i, trainers, 10.0, clock=clock) for i in range(2)}


def _step(strategy, module, optimizer, step: int) -> int:
    strategy.before_step(module)
    optimizer.zero_grad()
    module(torch.ones(2, 3)).sum().backward()
    return strategy.apply_update(module, optimizer, global_step=step)


def test_last_step_travels_with_the_initial_shards_and_stops_pushes_exactly_there():
    servers = _servers()
    chief = _strategy("chief", servers)
    module, optimizer = _model()
    chief.set_last_step(2)  # before after_restore: sent with the initial shard
    module = chief.prepare(module, optimizer)
    assert chief.after_restore(module, optimizer, 0) == 0
    assert [s.last_step for s in servers.values()] == [2, 2]
    worker = _strategy("worker", servers)
    wmodule, woptimizer = _model()
    wmodule = worker.prepare(wmodule, woptimizer)
    assert worker.after_restore(wmodule, woptimizer, 0) == 0
    assert _step(chief, module, optimizer, 0) == 1
    assert _step(worker, wmodule, woptimizer, 0) == 2
    assert worker.should_stop(False)  # ps 0 answered STOP_DONE with the last push
    assert _step(chief, module, optimizer, 1) == 2  # refused: not applied, not counted
    assert chief.should_stop(False) and not chief.preempted
    assert [(s.global_step, s.version, s.refused) for s in servers.values()] == [(2, 2, 1)] * 2


def test_last_step_set_after_the_shards_is_sent_once_by_the_chief():
    servers = _servers()
    chief = _strategy("chief", servers)
    module, optimizer = _model()
    module = chief.prepare(module, optimizer)
    chief.after_restore(module, optimizer, 5)
    assert [s.last_step for s in servers.values()] == [None, None]
    chief.set_last_step(8)
    chief.set_last_step(8)  # idempotent: no second call
    assert [s.last_step for s in servers.values()] == [8, 8]
    assert [c for c in chief.transport.calls if c[1] == "rpc_set_last_step"] == [
        ("ps:0", "rpc_set_last_step"), ("ps:1", "rpc_set_last_step")]
    worker = _strategy("worker", servers)
    worker.set_last_step(100)  # a worker only keeps its own target
    assert servers["ps:0"].last_step == 8
    with pytest.raises(ValueError, match="last_step must be a non-negative int or None; got -1"):
        chief.set_last_step(-1)


def test_waiter_hook_waits_on_the_global_step_of_ps0():
    """What delay_workers_by_global_step gives a worker, with a small wait_until_step."""
    servers = _servers()
    chief = _strategy("chief", servers)
    cmodule, coptimizer = _model()
    cmodule = chief.prepare(cmodule, coptimizer)
    chief.after_restore(cmodule, coptimizer, 0)
    worker = _strategy("worker", servers)
    worker.prepare(*_model())
    chief_steps = []

    def chief_trains(_secs) -> None:  # the chief makes one step while the worker sleeps
        chief_steps.append(_step(chief, cmodule, coptimizer, len(chief_steps)))

    clock = FakeClock(on_sleep=chief_trains)
    hook = GlobalStepWaiterHook(wait_until_step=3, clock=clock, poll_secs=1.0)
    session = types.SimpleNamespace(shared_global_step=lambda: worker.shared_global_step(0))
    hook.begin()
    hook.before_run(types.SimpleNamespace(session=session))
    assert chief_steps == [1, 2, 3] and clock.sleeps == [1.0, 1.0, 1.0]
    assert servers["ps:0"].global_step == 3 and servers["ps:0"].stop != STOP_DONE


def test_worker_ends_with_an_error_naming_the_chief_when_a_ps_reports_its_failure():
    servers = _servers()
    chief = _strategy("chief", servers)
    module, optimizer = _model()
    module = chief.prepare(module, optimizer)
    chief.after_restore(module, optimizer, 0)
    worker = _strategy("worker", servers)
    servers["ps:0"].goodbye("chief:0", False)
    with pytest.raises(DistributedError, match="ps:0 reports that task chief:0 failed"):
        worker.shared_global_step(0)
    with pytest.raises(DistributedError, match="chief:0 failed or went silent"):
        worker.should_stop(False)
    assert not worker.preempted


def test_plan_shards_balances_largest_first_and_is_deterministic():
    sizes = {"a": 100, "b": 60, "c": 50, "d": 5}
    assert plan_shards(sizes, 2) == {"a": 0, "b": 1, "c": 1, "d": 0}
    assert set(plan_shards(sizes, 1).values()) == {0}


def test_a_push_answers_with_the_new_shards_so_a_step_is_one_round_trip_per_ps():
    servers = _servers()
    chief = _strategy("chief", servers)
    module, optimizer = _model()
    module = chief.prepare(module, optimizer)
    chief.after_restore(module, optimizer, 0)
    assert _step(chief, module, optimizer, 0) == 1  # the first step pulls
    assert [c[1] for c in chief.transport.calls].count("rpc_pull") >= 2
    chief.transport.calls.clear()
    for step in range(1, 4):
        assert _step(chief, module, optimizer, step) == step + 1
    assert sorted({c[1] for c in chief.transport.calls}) == ["rpc_push_pull"]
    assert len(chief.transport.calls) == 3 * 2
    chief.before_step(module)  # loads what the last push answered: the servers' values
    for server in servers.values():
        _, values = server.pull("chief:0")
        for name, value in values.items():
            torch.testing.assert_close(dict(module.named_parameters())[name].detach(), value)


def test_pushes_travel_as_one_flat_buffer_per_shard_unless_a_parameter_has_no_gradient():
    servers = _servers()
    chief = _strategy("chief", servers)
    torch.manual_seed(0)
    module = torch.nn.ModuleDict({"used": torch.nn.Linear(3, 2), "unused": torch.nn.Linear(2, 1)})
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    module = chief.prepare(module, optimizer)
    chief.after_restore(module, optimizer, 0)
    sent = []
    push_pull = ShardServer.push_pull

    def spy(server, sender, grads, lrs):
        sent.append(type(grads).__name__)
        return push_pull(server, sender, grads, lrs)

    for server in servers.values():
        server.push_pull = types.MethodType(spy, server)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    chief.before_step(module)
    optimizer.zero_grad()
    module["used"](torch.ones(2, 3)).sum().backward()  # "unused" gets no gradient
    assert chief.apply_update(module, optimizer, global_step=0) == 1
    chief.before_step(module)
    after = dict(module.named_parameters())
    for name, value in before.items():  # SGD moved the used parameters only
        assert torch.equal(after[name].detach(), value) == name.startswith("unused"), name
    assert "dict" in sent  # the shard holding an unused parameter went by name
    sent.clear()
    optimizer.zero_grad()
    module["used"](torch.ones(2, 3)).sum().backward()
    module["unused"](torch.ones(2, 2)).sum().backward()
    chief.apply_update(module, optimizer, global_step=1)
    assert sent == ["Tensor", "Tensor"]  # every gradient present: one flat buffer per shard
    chief.before_step(module)
    for server in servers.values():
        _, values = server.pull("chief:0")
        for name, value in values.items():
            torch.testing.assert_close(dict(module.named_parameters())[name].detach(), value)


class _Held:
    """A push answered by the servers but not yet arrived: ``wait`` before ``arrive`` fails."""

    def __init__(self, value):
        self.value, self.arrived = value, False

    def done(self):
        return self.arrived

    def wait(self):
        assert self.arrived, "the trainer waited for an answer that has not arrived"
        return self.value


class _SlowTransport(FakeTransport):
    """Every ``push_pull`` answer arrives only when the test says so."""

    def __init__(self, servers):
        super().__init__(servers)
        self.held: list[_Held] = []

    def call_async(self, to, fn, *args):
        if fn.__name__ != "rpc_push_pull":
            return super().call_async(to, fn, *args)
        self.held.append(_Held(self.call(to, fn, *args)))
        return self.held[-1]


def test_steps_overlap_the_push_in_flight_without_waiting_for_its_answer():
    servers = _servers()
    chief = _strategy("chief", servers)
    chief.transport = slow = _SlowTransport(servers)
    module, optimizer = _model()
    module = chief.prepare(module, optimizer)
    chief.after_restore(module, optimizer, 0)

    def on_servers():
        return {n: v for server in servers.values() for n, v in server.pull("chief:0")[1].items()}

    def in_module():
        return {n: p.detach().clone() for n, p in module.named_parameters()}

    after_push = []
    for step in range(3):
        chief.before_step(module)  # never waits: the module keeps the newest values received
        optimizer.zero_grad()
        module(torch.ones(2, 3)).sum().backward()
        for held in slow.held:  # every push but the one about to go has been answered
            held.arrived = True
        chief.apply_update(module, optimizer, global_step=step)
        after_push.append(on_servers())
    chief.before_step(module)
    # the third push is in flight: the module holds the values the second one answered
    assert len(slow.held) == 3 * len(servers) and not slow.held[-1].arrived
    for name, value in in_module().items():
        torch.testing.assert_close(value, after_push[1][name])
        assert not torch.equal(value, after_push[2][name])
    for held in slow.held:
        held.arrived = True
    chief.before_step(module)  # answered now: loaded at once, as fresh as a pull
    for name, value in in_module().items():
        torch.testing.assert_close(value, after_push[2][name])
