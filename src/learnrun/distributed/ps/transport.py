"""The message transport of the parameter-server engine, behind a small interface.

:class:`PSTransport` is all the parameter-server code needs: join a static world of named
processes, call a module-level function in another process (synchronously or not), and leave
without waiting for dead peers. :class:`RpcTransport` implements it on
``torch.distributed.rpc`` (TensorPipe over libuv sockets). TensorPipe is in maintenance mode
upstream; a replacement (for example point-to-point messages over a gloo group) only has to
implement this interface.

Functions sent through a transport are pickled by qualified name, so they must be defined at
module level in a module importable under the same path in every process (never ``__main__``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from learnrun.errors import DistributedError

logger = logging.getLogger(__name__)

__all__ = ["PSTransport", "PendingCall", "RpcTransport"]


class PendingCall(Protocol):
    """The result of an asynchronous call."""

    def wait(self) -> Any:
        """Block until the call returns; raise :class:`DistributedError` naming the peer."""

    def done(self) -> bool:
        """True once the call has returned (or failed): :meth:`wait` does not block."""


class PSTransport(Protocol):
    """What the parameter-server engine needs from a transport."""

    def start(self, name: str, rank: int, world_size: int, addr: str, port: int,
              timeout: float) -> None:
        """Join the world as ``name``; rank 0 hosts the rendezvous at ``addr:port``."""

    def call(self, to: str, fn: Callable[..., Any], *args: Any,
             timeout: float | None = None) -> Any:
        """Run ``fn(*args)`` in process ``to`` and return its value."""

    def call_async(self, to: str, fn: Callable[..., Any], *args: Any) -> PendingCall:
        """Start ``fn(*args)`` in process ``to``; ``.wait()`` on the result gives its value."""

    def shutdown(self) -> None:
        """Leave the world at once, without a barrier that a dead peer could hang."""


class _RpcPending:
    def __init__(self, future: Any, to: str, transport: RpcTransport) -> None:
        self._future = future
        self._to = to
        self._transport = transport

    def done(self) -> bool:
        return bool(self._future.done())

    def wait(self) -> Any:
        try:
            return self._future.wait()
        except Exception as err:  # RPC raises RuntimeError for eof, timeout, remote errors
            raise self._transport._error(self._to, err) from err


class RpcTransport:
    """:class:`PSTransport` on ``torch.distributed.rpc`` with TensorPipe's ``uv`` transport.

    ``uv`` (plain sockets) is used instead of the default shared-memory transport, which
    busy-polls and keeps a core busy while the process is idle. ``shutdown`` is
    ``rpc.shutdown(graceful=False)``: the graceful one is a barrier over every process with no
    timeout, which hangs forever on a dead worker; the parameter-server code runs its own
    "goodbye" protocol instead.
    """

    def __init__(self, num_worker_threads: int = 8) -> None:
        self.num_worker_threads = num_worker_threads
        self.name: str | None = None
        self._timeout = 60.0

    def start(self, name: str, rank: int, world_size: int, addr: str, port: int,
              timeout: float) -> None:
        from torch.distributed import rpc

        self.name = name
        self._timeout = float(timeout)
        options = rpc.TensorPipeRpcBackendOptions(
            num_worker_threads=self.num_worker_threads,
            rpc_timeout=float(timeout),
            init_method=f"tcp://{addr}:{port}",
            _transports=["uv"],
        )
        try:
            rpc.init_rpc(name, rank=rank, world_size=world_size, rpc_backend_options=options)
        except Exception as err:
            raise DistributedError(
                f"{name} could not join the parameter-server cluster of {world_size} processes "
                f"at {addr}:{port} within {timeout:g} s: {err}. Check that every ps, chief and "
                "worker task was started with the same cluster, or raise "
                "RunConfig(distributed_timeout_secs=...)."
            ) from err

    def _error(self, to: str, err: BaseException) -> DistributedError:
        return DistributedError(
            f"{self.name}: the call to {to} failed: {err}. Task {to} has probably died or "
            "timed out; the job must be restarted (it resumes from the latest checkpoint)."
        )

    def call(self, to: str, fn: Callable[..., Any], *args: Any,
             timeout: float | None = None) -> Any:
        from torch.distributed import rpc

        try:
            return rpc.rpc_sync(to, fn, args=args,
                                timeout=self._timeout if timeout is None else timeout)
        except DistributedError:
            raise
        except Exception as err:
            raise self._error(to, err) from err

    def call_async(self, to: str, fn: Callable[..., Any], *args: Any) -> PendingCall:
        from torch.distributed import rpc

        try:
            future = rpc.rpc_async(to, fn, args=args, timeout=self._timeout)
        except Exception as err:
            raise self._error(to, err) from err
        return _RpcPending(future, to, self)

    def shutdown(self) -> None:
        from torch.distributed import rpc

        try:
            rpc.shutdown(graceful=False)
        except Exception as err:  # already shut down or the agent died with a peer
            logger.warning("%s: rpc.shutdown(graceful=False) failed: %s", self.name, err)
