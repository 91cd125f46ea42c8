"""Tests of learnrun.distributed.ps.transport: SocketTransport over real sockets on 127.0.0.1.

Two (or three) transports in this process join one world through a real TCPStore; the
functions they call are this module's (pickled by qualified name, as between processes).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
import torch

from learnrun.distributed.launch import free_port
from learnrun.distributed.ps.transport import SocketTransport
from learnrun.errors import DistributedError

pytestmark = pytest.mark.timeout(60)


def echo(value):
    return value


def fail_with_value_error(text):
    raise ValueError(text)


def fail_with_distributed_error(text):
    raise DistributedError(text)


def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


def whoami():
    return threading.current_thread().name


def _cannot_import():
    raise ImportError("No module named 'only_on_the_caller'")


class Unreadable:
    """Pickles, but unpickling it fails (as a class the other process cannot import would)."""

    def __reduce__(self):
        return _cannot_import, ()


def make_unreadable():
    return Unreadable()


def _world(names, timeout=20.0):
    """Start one transport per name (rank = position) in threads; return them once joined."""
    port = free_port()
    transports = [SocketTransport() for _ in names]
    errors = []

    def join(rank):
        try:
            transports[rank].start(names[rank], rank, len(names), "127.0.0.1", port, timeout)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=join, args=(r,)) for r in range(len(names))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return transports


@pytest.fixture
def pair():
    ps, trainer = _world(["ps:0", "chief:0"])
    yield ps, trainer
    trainer.shutdown()
    ps.shutdown()


def test_tensors_of_every_kind_travel_exactly(pair):
    _, trainer = pair
    value = {
        "f32": torch.randn(3, 4),
        "bf16": torch.randn(5).to(torch.bfloat16),
        "bool": torch.tensor([True, False, True]),
        "i64": torch.arange(7),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.empty(0, 3),
        "strided": torch.arange(12.0).reshape(3, 4).t(),
        "leaf": torch.ones(2, requires_grad=True),
        "nested": [1, "two", (3.0, None)],
        "param": torch.nn.Parameter(torch.zeros(2)),
        "conj": torch.tensor([1 + 2j, 3 - 1j]).conj(),
    }
    got = trainer.call("ps:0", echo, value)
    assert set(got) == set(value)
    for name in ("f32", "bf16", "bool", "i64", "scalar", "empty", "strided", "leaf", "conj"):
        assert got[name].dtype == value[name].dtype and got[name].shape == value[name].shape
        assert torch.equal(got[name].detach(), value[name].detach()), name
    assert got["leaf"].requires_grad and not got["f32"].requires_grad
    assert got["nested"] == [1, "two", (3.0, None)]
    assert isinstance(got["param"], torch.nn.Parameter)  # other types pickle as torch does
    got["f32"].add_(1)  # a received tensor is writable memory of its own
    assert not torch.equal(got["f32"], value["f32"])


def test_async_calls_overlap_and_reuse_connections(pair):
    _, trainer = pair
    slow = trainer.call_async("ps:0", sleep_then, 1.0, "slow")
    fast = trainer.call_async("ps:0", echo, "fast")  # a second connection: not behind the slow one
    assert fast.wait() == "fast"
    assert not slow.done()
    deadline = time.monotonic() + 5
    while not slow.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert slow.done() and slow.wait() == "slow"
    assert slow.wait() == "slow"  # waiting again gives the same answer
    names = {trainer.call("ps:0", whoami) for _ in range(5)}
    assert len(names) <= 2  # served by the pooled connections' threads, not one per call


def test_remote_errors_name_the_peer_and_keep_the_connection_usable(pair):
    _, trainer = pair
    with pytest.raises(DistributedError, match=r"chief:0: ps:0 raised ValueError in "
                                               r"fail_with_value_error: bad shape 3"):
        trainer.call("ps:0", fail_with_value_error, "bad shape 3")
    with pytest.raises(DistributedError, match=r"^not initialised yet$"):
        trainer.call("ps:0", fail_with_distributed_error, "not initialised yet")
    assert trainer.call("ps:0", echo, 5) == 5


def test_requests_and_answers_that_cannot_travel_fail_clearly_and_spare_the_connection(pair):
    _, trainer = pair
    with pytest.raises(DistributedError, match=r"ps:0 raised ImportError in echo: No module "
                                               r"named 'only_on_the_caller'"):
        trainer.call("ps:0", echo, Unreadable())
    with pytest.raises(DistributedError, match=r"ps:0 raised RuntimeError in make_unreadable: "
                                               r"its answer cannot be read here"):
        trainer.call_async("ps:0", make_unreadable).wait()
    with pytest.raises(TypeError, match=r"the call of .*<locals>.* to ps:0 cannot be sent: .*"
                                        r"defined at module level"):
        trainer.call("ps:0", lambda: 1)
    assert trainer.call("ps:0", echo, "fine") == "fine"


def test_a_dead_peer_fails_calls_at_once_with_an_error_naming_it(pair):
    ps, trainer = pair
    assert trainer.call("ps:0", echo, 1) == 1  # a pooled connection to a peer that then dies
    ps.shutdown()
    started = time.monotonic()
    for _ in range(2):  # the pooled connection, then a new one (refused)
        with pytest.raises(DistributedError, match=r"chief:0: the call to ps:0 failed: .*"
                                                   r"Task ps:0 has probably died"):
            trainer.call("ps:0", echo, 1)
    assert time.monotonic() - started < 5


def test_a_call_past_its_timeout_fails(pair):
    _, trainer = pair
    with pytest.raises(DistributedError, match=r"the call to ps:0 failed: timed out"):
        trainer.call("ps:0", sleep_then, 2.0, "late", timeout=0.2)
    assert trainer.call("ps:0", echo, "after") == "after"


def test_unknown_peers_and_calls_after_shutdown_are_refused_clearly(pair):
    _, trainer = pair
    with pytest.raises(DistributedError, match=r"no task 'ps:7'.*\['chief:0', 'ps:0'\]"):
        trainer.call("ps:7", echo, 1)
    trainer.shutdown()
    with pytest.raises(DistributedError, match=r"the transport is shut down"):
        trainer.call("ps:0", echo, 1)


def test_garbage_on_the_port_closes_that_connection_only(pair):
    ps, trainer = pair
    with socket.create_connection(ps.address, timeout=5) as stray:
        stray.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            assert stray.recv(10) == b""  # closed by the server ...
        except ConnectionResetError:  # ... with the rest of the request unread
            pass
    assert trainer.call("ps:0", echo, "still serving") == "still serving"


def test_three_processes_find_each_other_by_name():
    world = _world(["ps:0", "ps:1", "worker:0"])
    try:
        assert world[2].call("ps:1", echo, "b") == "b"
        assert world[1].call("worker:0", echo, "c") == "c"
    finally:
        for transport in world:
            transport.shutdown()


def test_a_world_that_never_fills_up_fails_within_the_timeout():
    port = free_port()
    lonely = SocketTransport()
    started = time.monotonic()
    with pytest.raises(DistributedError, match=r"ps:0 could not join the parameter-server "
                                               r"cluster of 2 processes at 127.0.0.1:\d+ within 1 s"):
        lonely.start("ps:0", 0, 2, "127.0.0.1", port, 1.0)
    assert time.monotonic() - started < 10
