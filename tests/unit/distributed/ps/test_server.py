"""Fast in-process tests of learnrun.distributed.ps.server: the shard server (no cluster)."""

from __future__ import annotations

import pytest
import torch

from learnrun.clock import FakeClock
from learnrun.distributed.ps.server import STOP_DONE, STOP_FAILED, STOP_NONE, ShardServer
from learnrun.errors import DistributedError

pytestmark = pytest.mark.timeout(30)


def _server(clock, trainers=("chief:0", "worker:0")):
    server = ShardServer(0, list(trainers), timeout=10.0, clock=clock)
    w = torch.tensor([1.0, 2.0])
    server.init("chief:0", {"params": {"w": w}, "optimizer_class": torch.optim.SGD,
                            "groups": [{"lr": 0.5, "momentum": 0.0}], "group_of": {"w": 0},
                            "state": {}, "global_step": 7})
    return server


def test_shard_server_applies_pushes_like_the_optimizer_and_counts_steps():
    server = _server(FakeClock())
    step, stop = server.push("worker:0", {"w": torch.tensor([1.0, 1.0])}, [0.1])
    assert (step, stop) == (8, 0)
    version, params = server.pull("chief:0")
    assert version == 1
    torch.testing.assert_close(params["w"], torch.tensor([0.9, 1.9]))


def test_shard_server_refuses_calls_before_init():
    server = ShardServer(1, ["chief:0"], timeout=5.0, clock=FakeClock())
    with pytest.raises(DistributedError, match="chief:0 has not sent"):
        server.pull("worker:0")


def test_shard_server_ends_on_goodbyes_and_presumes_silent_workers_dead():
    clock = FakeClock()
    server = _server(clock, ("chief:0", "worker:0", "worker:1"))
    server.heartbeat("worker:0")
    server.goodbye("chief:0", True)
    server.goodbye("worker:0", True)
    assert server.stop == STOP_DONE
    assert server.check() is False  # worker:1 may still be alive
    clock.advance(server.grace + 1)
    assert server.check() is True
    assert server.presumed_dead == {"worker:1"}


def test_shard_server_fails_when_the_chief_is_silent_or_fails():
    clock = FakeClock()
    server = _server(clock)
    clock.advance(11)
    # First every caller is told that the chief failed (STOP_FAILED), then the ps raises.
    assert server.check() is False
    assert server.heartbeat("worker:0")[1] == STOP_FAILED
    assert server.push("worker:0", {"w": torch.ones(2)}, [0.1]) == (7, STOP_FAILED)
    clock.advance(server.grace)
    with pytest.raises(DistributedError, match="task chief:0 has been silent for 11.0 s"):
        server.check()
    server = _server(FakeClock())
    server.goodbye("chief:0", False)
    assert server.heartbeat("worker:0")[1] == STOP_FAILED
    server.clock.advance(server.grace)
    server.check()  # noticed now; raised after the grace period
    server.clock.advance(server.grace)
    with pytest.raises(DistributedError, match="chief:0 reported a failure"):
        server.check()


def test_shard_server_refuses_pushes_past_the_chiefs_last_step():
    server = _server(FakeClock())  # at global step 7
    assert server.set_last_step("chief:0", 9) == 7
    assert server.push("worker:0", {"w": torch.ones(2)}, [0.1]) == (8, STOP_NONE)
    assert server.push("chief:0", {"w": torch.ones(2)}, [0.1]) == (9, STOP_DONE)
    before = server.pull("worker:0")
    # a concurrent push that arrives after the target is neither applied nor counted
    assert server.push("worker:0", {"w": torch.ones(2)}, [0.1]) == (9, STOP_DONE)
    assert server.pull("worker:0")[0] == before[0] == 2 and server.refused == 1
    torch.testing.assert_close(server.pull("worker:0")[1]["w"], before[1]["w"])
    with pytest.raises(DistributedError, match="only chief:0 sets the last step.*worker:0"):
        server.set_last_step("worker:0", 100)


def test_shard_server_takes_the_last_step_with_the_initial_shard():
    server = ShardServer(0, ["chief:0"], timeout=5.0, clock=FakeClock())
    server.init("chief:0", {"params": {"w": torch.zeros(1)}, "optimizer_class": torch.optim.SGD,
                            "groups": [{"lr": 1.0}], "group_of": {"w": 0}, "state": {},
                            "global_step": 3, "last_step": 3})
    assert server.heartbeat("chief:0")[:2] == (3, STOP_DONE)  # restored at the target
    assert server.push("chief:0", {"w": torch.ones(1)}, [1.0]) == (3, STOP_DONE)


def test_shard_server_times_out_without_initial_parameters():
    clock = FakeClock()
    server = ShardServer(0, ["chief:0"], timeout=3.0, clock=clock)
    clock.advance(4)
    with pytest.raises(DistributedError, match="did not send the initial parameters within 3 s"):
        server.check()
