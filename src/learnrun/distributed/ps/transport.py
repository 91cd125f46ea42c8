"""The message transport of the parameter-server engine, behind a small interface.

:class:`PSTransport` is all the parameter-server code needs: join a static world of named
processes, call a module-level function in another process (synchronously or not), and leave
without waiting for dead peers. :class:`SocketTransport` implements it on plain TCP sockets.

Why not ``torch.distributed.rpc`` or gloo (the design's "learnrun adds no transport"): on the
parameter-server benchmark's step (one 340 KB flat gradient out, the shard's 340 KB values
back, loopback, one thread each) TensorPipe's RPC took 1.4-1.6 ms and 0.65 ms of the
trainer's CPU, gloo point-to-point between a pair of processes 2.0-2.3 ms, and a plain socket
carrying pickle protocol 5 with the tensors out of band 0.43-0.58 ms and 0.2-0.26 ms of CPU
(``docs/benchmarks.md``). Every step pays it, so the parameter servers could not reach half of
one process's speed through either. The socket also keeps RPC's failure behaviour (a dead peer
fails only the calls to it, a worker can die without stopping the others) without TensorPipe
(in maintenance mode upstream) and without gloo's one-context-for-all (a dead member breaks a
gloo group for everyone).

Execution trace::

    start(name, rank, world, addr, port)
        listen on an ephemeral port of the interface that reaches addr (never 0.0.0.0)
        rendezvous in a torch.distributed.TCPStore at addr:port (rank 0 hosts it): publish
        "name host:port", wait (timeout) until all world_size ranks have published
    call / call_async(to, fn, *args)
        take an idle connection to `to` (or connect), send one request: pickle of (fn, args)
        call: read the answer in this thread; call_async: a reader thread reads it as soon
        as it arrives (a large answer must not wait in the sender's socket buffer until the
        caller is free), then the connection goes back to the pool
    in every process, one thread per incoming connection: read a request, run fn(*args),
        send (True, value) or (False, exception)
    shutdown()  close the listener and every connection at once (no barrier)

Wire format of a message: ``b"LRPS"``, the number k of out-of-band buffers (uint32), the
sizes (uint64) of the pickle and of the k buffers, the pickle (protocol 5), the buffers. CPU
tensors travel as their raw bytes in those buffers (no copy into the pickle). Functions are
pickled by qualified name, so they must be defined at module level in a module importable
under the same path in every process (never ``__main__``). As with ``torch.distributed.rpc``
anyone who can reach these ports can run code in the process: cluster ports must only be
reachable from the cluster.
"""

from __future__ import annotations

import datetime
import io
import logging
import pickle
import socket
import struct
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from learnrun.errors import DistributedError

logger = logging.getLogger(__name__)

__all__ = ["PSTransport", "PendingCall", "SocketTransport", "dumps", "receive", "decode"]

_MAGIC = b"LRPS"
_HEAD = struct.Struct("!4sI")
_MAX_BUFFERS = 1 << 20
_STORE_KEY = "learnrun/ps/rank/{}"


class PendingCall(Protocol):
    """The result of an asynchronous call."""

    def wait(self) -> Any:
        """Block until the call returns; raise :class:`DistributedError` naming the peer."""

    def done(self) -> bool:
        """True once the answer has arrived (or the call failed): :meth:`wait` does not block."""


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


# -- messages ---------------------------------------------------------------------------------
def _tensor_from_bytes(data: Any, dtype: str, shape: tuple[int, ...], requires_grad: bool) -> Any:
    import torch

    kind = getattr(torch, dtype)
    if not shape or all(shape):  # at least one element: a view of the received bytes
        tensor = torch.frombuffer(data, dtype=torch.uint8).view(kind).reshape(shape)
    else:
        tensor = torch.empty(shape, dtype=kind)
    return tensor.requires_grad_(requires_grad)


class _Pickler(pickle.Pickler):
    """Pickle protocol 5 that sends a plain CPU tensor as its raw bytes, out of band."""

    def reducer_override(self, obj: Any) -> Any:
        torch = sys.modules.get("torch")
        if torch is None or type(obj) is not torch.Tensor or obj.device.type != "cpu" \
                or obj.layout != torch.strided or obj.is_quantized:
            return NotImplemented  # anything else pickles as usual (torch's own reduction)
        tensor = obj.detach().resolve_conj().resolve_neg().contiguous()
        shape = tuple(tensor.shape)
        data: Any = b""
        if tensor.numel():
            data = pickle.PickleBuffer(tensor.reshape(-1).view(torch.uint8).numpy())
        return _tensor_from_bytes, (data, str(tensor.dtype).removeprefix("torch."), shape,
                                    obj.requires_grad)


def dumps(obj: Any) -> list[Any]:
    """``obj`` as the parts of one message (header, pickle, raw buffers), ready to send."""
    buffers: list[pickle.PickleBuffer] = []
    stream = io.BytesIO()
    _Pickler(stream, protocol=5, buffer_callback=buffers.append).dump(obj)
    raws = [b.raw() for b in buffers]
    sizes = struct.pack(f"!{len(raws) + 1}Q", stream.getbuffer().nbytes, *(r.nbytes for r in raws))
    return [_HEAD.pack(_MAGIC, len(raws)) + sizes, stream.getbuffer(), *raws]


def _recv_exact(sock: socket.socket, size: int) -> bytearray:
    data = bytearray(size)
    view = memoryview(data)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if not n:
            raise EOFError("the connection was closed by the other side")
        got += n
    return data


def receive(sock: socket.socket) -> tuple[bytearray, list[bytearray]]:
    """Read one whole message from ``sock`` (blocking): its pickle and its raw buffers."""
    magic, count = _HEAD.unpack(_recv_exact(sock, _HEAD.size))
    if magic != _MAGIC or count > _MAX_BUFFERS:
        raise EOFError(f"not a learnrun parameter-server message (header {magic!r}, {count})")
    sizes = struct.unpack(f"!{count + 1}Q", _recv_exact(sock, 8 * (count + 1)))
    data = _recv_exact(sock, sizes[0])
    return data, [_recv_exact(sock, size) for size in sizes[1:]]


def decode(message: tuple[bytearray, list[bytearray]]) -> Any:
    """The object a message read by :func:`receive` carries (tensors view its buffers)."""
    data, buffers = message
    return pickle.loads(data, buffers=buffers)


def _send_parts(sock: socket.socket, parts: list[Any]) -> None:
    views = [memoryview(p).cast("B") for p in parts if memoryview(p).nbytes]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= views[0].nbytes:
            sent -= views[0].nbytes
            views.pop(0)
        if sent:
            views[0] = views[0][sent:]


def _portable(err: BaseException) -> BaseException:
    """``err`` if it survives pickling, else a RuntimeError with its type and text."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001 - any failure means: send its text instead
        return RuntimeError(f"{type(err).__name__}: {err}")


def _local_host(addr: str, port: int) -> str:
    """The address of this machine's interface that reaches ``addr`` (no packet is sent)."""
    family, kind, proto, _, target = socket.getaddrinfo(addr, port, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.connect(target)
        return probe.getsockname()[0]


# -- calls --------------------------------------------------------------------------------------
class _SocketPending:
    """An answer still to be read from a connection that :class:`SocketTransport` lent.

    With a ``reader`` (an executor) the answer is read as soon as it arrives, on the reader's
    thread, while the caller goes on: a large answer then never waits in the sender's socket
    buffer for the caller to start reading (a step would stall on it). Without one,
    :meth:`wait` reads it in the caller's thread.
    """

    def __init__(self, transport: SocketTransport, to: str, fn: Callable[..., Any],
                 sock: socket.socket, timeout: float, reader: Any = None) -> None:
        self._transport = transport
        self._to = to
        self._fn = fn
        self._sock: socket.socket | None = sock
        self._timeout = timeout
        self._outcome: tuple[bool, Any] | None = None
        self._future = reader.submit(self._read) if reader is not None else None

    def _read(self) -> tuple[bool, Any]:
        sock, self._sock = self._sock, None
        assert sock is not None
        try:
            sock.settimeout(self._timeout)
            message = receive(sock)
        except (OSError, EOFError) as err:
            self._transport.discard(sock)
            return False, self._transport.failed(self._to, err)
        self._transport.give_back(self._to, sock)  # the whole answer is read: reusable
        try:
            return decode(message)
        except Exception as err:  # noqa: BLE001 - e.g. a class this process cannot import
            return False, RuntimeError(f"its answer cannot be read here: {err}")

    def done(self) -> bool:
        if self._future is not None:
            return self._future.done()
        return self._outcome is not None

    def wait(self) -> Any:
        if self._outcome is None:
            self._outcome = self._future.result() if self._future is not None else self._read()
        ok, value = self._outcome
        if ok:
            return value
        if isinstance(value, DistributedError):
            raise value
        raise DistributedError(
            f"{self._transport.name}: {self._to} raised {type(value).__name__} in "
            f"{getattr(self._fn, '__name__', self._fn)}: {value}") from value


class SocketTransport:
    """:class:`PSTransport` on TCP sockets (see the module docstring for the protocol)."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.address: tuple[str, int] | None = None  # where this process listens, once started
        self._timeout = 60.0
        self._peers: dict[str, tuple[str, int]] = {}
        self._idle: dict[str, list[socket.socket]] = {}
        self._incoming: set[socket.socket] = set()
        self._lent: set[socket.socket] = set()  # connections of calls in flight
        self._reader: Any = None  # the executor that reads asynchronous calls' answers
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._store: Any = None
        self._closed = False

    # -- joining and leaving ------------------------------------------------------------------
    def start(self, name: str, rank: int, world_size: int, addr: str, port: int,
              timeout: float) -> None:
        self.name = name
        self._timeout = float(timeout)
        try:
            self._peers = self._rendezvous(name, rank, world_size, addr, port)
        except Exception as err:
            self.shutdown()
            raise DistributedError(
                f"{name} could not join the parameter-server cluster of {world_size} processes "
                f"at {addr}:{port} within {timeout:g} s: {err}. Check that every ps, chief and "
                "worker task was started with the same cluster, or raise "
                "RunConfig(distributed_timeout_secs=...)."
            ) from err

    def _rendezvous(self, name: str, rank: int, world_size: int, addr: str,
                    port: int) -> dict[str, tuple[str, int]]:
        from torch.distributed import TCPStore

        host = _local_host(addr, port)
        listener = socket.create_server((host, 0), family=socket.getaddrinfo(host, 0)[0][0])
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name=f"learnrun-ps-{name}",
                         daemon=True).start()
        wait = datetime.timedelta(seconds=self._timeout)
        self._store = TCPStore(addr, port, world_size, rank == 0, timeout=wait,
                               wait_for_workers=False)
        self.address = (host, int(listener.getsockname()[1]))
        self._store.set(_STORE_KEY.format(rank), f"{name} {host} {self.address[1]}")
        keys = [_STORE_KEY.format(r) for r in range(world_size)]
        self._store.wait(keys, wait)
        peers = {}
        for key in keys:
            peer, peer_host, peer_port = self._store.get(key).decode().split(" ")
            peers[peer] = (peer_host, int(peer_port))
        return peers

    def shutdown(self) -> None:
        """Close the listener and every connection now; answers in progress are cut."""
        with self._lock:
            self._closed = True
            sockets = [s for idle in self._idle.values() for s in idle]
            sockets += list(self._incoming) + list(self._lent)
            self._idle.clear()
            self._incoming.clear()
            self._lent.clear()
            listener, self._listener = self._listener, None
            reader, self._reader = self._reader, None
        for sock in ([listener] if listener is not None else []) + sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept/recv
            except OSError:
                pass
            sock.close()
        if reader is not None:
            reader.shutdown(wait=False)  # its reads end: their sockets were shut down above
        self._store = None

    # -- serving --------------------------------------------------------------------------------
    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # the listener was closed: shutdown
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self._incoming.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name=f"learnrun-ps-{self.name}",
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while True:
                try:
                    message = receive(conn)
                except (OSError, EOFError):  # the caller left (or shutdown)
                    return
                try:  # a request this process cannot decode is answered with the error
                    fn, args = decode(message)
                    reply: tuple[bool, Any] = (True, fn(*args))
                except BaseException as err:  # noqa: BLE001 - it goes back to the caller
                    reply = (False, _portable(err))
                try:
                    parts = dumps(reply)
                except Exception as err:  # noqa: BLE001 - an unpicklable answer
                    parts = dumps((False, RuntimeError(f"its answer cannot be sent: {err}")))
                _send_parts(conn, parts)
        except OSError as err:
            logger.debug("%s: a connection ended: %s", self.name, err)
        finally:
            with self._lock:
                self._incoming.discard(conn)
            conn.close()

    # -- calling --------------------------------------------------------------------------------
    def failed(self, to: str, err: BaseException) -> DistributedError:
        """The error of a call to ``to`` that got no answer (the peer died or timed out)."""
        return DistributedError(
            f"{self.name}: the call to {to} failed: {err}. Task {to} has probably died or "
            "timed out; the job must be restarted (it resumes from the latest checkpoint)."
        )

    def give_back(self, to: str, sock: socket.socket) -> None:
        """Return a connection whose answer was read to the pool (closed after shutdown)."""
        with self._lock:
            self._lent.discard(sock)
            if not self._closed:
                self._idle.setdefault(to, []).append(sock)
                return
        sock.close()

    def discard(self, sock: socket.socket) -> None:
        """Close a lent connection that failed (it is not reused)."""
        with self._lock:
            self._lent.discard(sock)
        sock.close()

    def _connection(self, to: str, timeout: float) -> socket.socket:
        with self._lock:
            if self._closed:
                raise DistributedError(f"{self.name}: cannot call {to}: the transport is shut down.")
            idle = self._idle.get(to)
            if idle:
                sock = idle.pop()
                self._lent.add(sock)
                return sock
            address = self._peers.get(to)
        if address is None:
            raise DistributedError(
                f"{self.name}: there is no task {to!r} in this parameter-server cluster; it has "
                f"{sorted(self._peers)}.")
        try:
            sock = socket.create_connection(address, timeout=timeout)
        except OSError as err:
            raise self.failed(to, err) from err
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._lent.add(sock)
        return sock

    def _send(self, to: str, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float,
              reader: Any) -> _SocketPending:
        try:
            parts = dumps((fn, args))
        except Exception as err:  # noqa: BLE001 - pickle raises several types
            raise TypeError(
                f"{self.name}: the call of {getattr(fn, '__qualname__', fn)!r} to {to} cannot be "
                f"sent: {err}. Its function must be defined at module level in a module every "
                "process imports under the same name, and its arguments must pickle.") from err
        sock = self._connection(to, timeout)
        try:
            sock.settimeout(timeout)
            _send_parts(sock, parts)
        except OSError as err:
            self.discard(sock)
            raise self.failed(to, err) from err
        return _SocketPending(self, to, fn, sock, timeout, reader)

    def call_async(self, to: str, fn: Callable[..., Any], *args: Any,
                   timeout: float | None = None) -> PendingCall:
        """Send the call now; its answer is read in the background as soon as it arrives."""
        with self._lock:
            if self._reader is None and not self._closed:
                # one reader per peer at least: every answer in flight is read as it arrives
                self._reader = ThreadPoolExecutor(max_workers=max(8, len(self._peers)),
                                                  thread_name_prefix=f"learnrun-ps-{self.name}")
            reader = self._reader
        return self._send(to, fn, args, self._timeout if timeout is None else float(timeout),
                          reader)

    def call(self, to: str, fn: Callable[..., Any], *args: Any,
             timeout: float | None = None) -> Any:
        """Send the call and read its answer in this thread."""
        return self._send(to, fn, args, self._timeout if timeout is None else float(timeout),
                          None).wait()
