"""The model server: the HTTP app over both protocols, the uvicorn server and its drain.

Execution trace of :meth:`ModelServer.run` (the command line):

1. every model loads its versions (:meth:`ModelManager.start`); polling continues in the
   background;
2. the listening socket binds ``host:port`` (port 0: any free port; :attr:`ModelServer.port`
   tells which) and uvicorn serves the app;
3. on SIGTERM or SIGINT the socket closes, requests in flight finish (up to
   ``drain_timeout_seconds``), idle connections close, and polling stops; the batchers finish
   their queued requests, the versions unload and :meth:`run` returns 0. A second SIGINT
   exits at once.

The hot path, measured on the digits export with benchmarks/bench_serving.py: a plain ASGI
callable (one handler for every path, no router or request objects), uvicorn with httptools
and uvloop when installed, each response's head and body sent with one ``send``
(:class:`_CoalescingTransport`), and model calls on the event loop's thread, batched by a
:class:`~learnrun.serving.batching.LoopBatcher` with ``--enable_batching``: no thread
hand-off per request.

Every answer is JSON. A client's mistake gets a 4xx with ``{"error": ...}`` and never stops
the server; only a failure inside the server gives a 500, logged with its traceback. Request
bodies over ``max_request_bytes`` get a 413.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from learnrun._version import __version__
from learnrun.serving import kserve_v2, tf_rest
from learnrun.serving.batching import Arrivals, BatcherClosed, LoopBatcher
from learnrun.serving.tensors import RequestError, dumps
from learnrun.serving.versions import ConfigError, ModelManager

logger = logging.getLogger(__name__)

MISSING_EXTRA = "learnrun model-server needs the serving extra: pip install 'learnrun[serving]'"


@dataclass(frozen=True)
class ServingOptions:
    """How the server listens, batches and drains."""

    host: str = "127.0.0.1"
    port: int = 8501
    enable_batching: bool = False
    max_batch_size: int = 32
    batch_timeout_micros: int = 1000
    max_request_bytes: int = 32 * 1024 * 1024
    drain_timeout_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--rest_api_port must be in 0..65535, got {self.port}")
        if self.max_batch_size < 1:
            raise ConfigError(f"--max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.batch_timeout_micros < 0:
            raise ConfigError(f"--batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")
        if self.max_request_bytes < 1:
            raise ConfigError(f"--max_request_bytes must be >= 1, got {self.max_request_bytes}")


def require_serving_stack() -> None:
    """Raise :class:`ConfigError` with the install line when uvicorn is missing.

    httptools and uvloop (in the extra too) are used when installed; without them uvicorn
    falls back to h11 and asyncio's loop, which work, at about 4x the HTTP cost.
    """
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError(MISSING_EXTRA) from None


def runner_factory(options: ServingOptions) -> Any:
    """``make_runner(predictor)`` for :class:`ServedModel`: a Batcher when batching applies.

    Batching applies with ``enable_batching`` to exports whose batch dimension is dynamic and
    whose outputs all have it first; other versions run each request on its own.
    """
    def make_runner(predictor: Any) -> LoopBatcher | None:
        signature = predictor.signature
        batchable = signature.get("dynamic_batch") and all(
            spec["shape"] and spec["shape"][0] is None for spec in signature["outputs"])
        if not (options.enable_batching and batchable):
            return None
        return LoopBatcher(predictor, options.max_batch_size, options.batch_timeout_micros,
                           name=f"batcher-{predictor.path.rstrip('/').rsplit('/', 1)[-1]}",
                           arrivals=ARRIVALS)
    return make_runner


#: the received requests not yet handed to a batcher (see :class:`Arrivals`); the event
#: loop's thread is the only one that touches it
ARRIVALS = Arrivals()
_ARRIVED, _OPEN, _DONE = "learnrun.arrived", "learnrun.open", "learnrun.done"


def _settle(scope: dict) -> None:
    if scope.pop(_ARRIVED, False):
        ARRIVALS.settled()


async def infer(state: Any, features: dict, scope: dict | None = None) -> Mapping[str, Any]:
    """Run one request on a version: through its batcher, else on its own.

    Either way the model call runs on the event loop's thread: for the small models served
    here a thread hand-off per request costs more than the call (measured: the unbatched
    digits server used ~2.1 ms of CPU per request through a thread pool, ~1.0 ms inline).
    """
    runner = state.runner
    if runner is not None:
        try:
            future = runner.submit(features)
        except BatcherClosed:
            pass
        else:
            if scope is not None:
                _settle(scope)
            return await future
    if scope is not None:
        _settle(scope)
    return state.predictor(features)


async def _read_body(receive: Any, headers: Mapping[str, str], limit: int) -> bytes | None:
    """The request body (None when the client went away), or a 413 RequestError."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"request body of {declared} bytes is over the limit of {limit} "
                           "bytes (--max_request_bytes)", 413)
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestError(f"request body is over the limit of {limit} bytes "
                               "(--max_request_bytes)", 413)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


_JSON_HEADERS = [(b"content-type", b"application/json")]


def build_app(manager: ModelManager, options: ServingOptions) -> Any:
    """The ASGI app answering ``/v1`` (TF Serving REST) and ``/v2`` (KServe v2).

    A plain ASGI callable: every path goes to one handler, so a router and request/response
    objects would only add work to each request.
    """

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            await answer(scope, receive, send)
        finally:
            scope[_DONE] = True
            _settle(scope)

    async def answer(scope: dict, receive: Any, send: Any) -> None:
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        infer_here = functools.partial(infer, scope=scope)
        try:
            if method not in ("GET", "POST"):
                raise RequestError(f"method {method} is not supported; use GET or POST", 405)
            body = b""
            if method == "POST":
                body = await _read_body(receive, headers, options.max_request_bytes)
                if body is None:
                    return
            if path.lower().startswith("/v1/"):
                status, payload = await tf_rest.handle(manager, infer_here, method, path, body)
            elif path == "/v2" or path.startswith("/v2/"):
                status, payload = await kserve_v2.handle(
                    manager, infer_here, method, path, body, headers, __version__)
            else:
                raise RequestError(f"Not found: {path} (the APIs are /v1/models/... and "
                                   "/v2/...)", 404)
        except RequestError as exc:
            status, payload = exc.status, {"error": exc.message}
        except Exception as exc:  # noqa: BLE001 - answered as JSON; the server keeps serving
            logger.exception("internal error answering %s %s", method, path)
            status, payload = 500, {"error": f"internal error: {type(exc).__name__}: {exc}"}
        data = dumps(payload)
        await send({"type": "http.response.start", "status": status,
                    "headers": _JSON_HEADERS + [(b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    return app


class ModelServer:
    """Serves a :class:`ModelManager`'s models over HTTP (see the module docstring)."""

    def __init__(self, manager: ModelManager, options: ServingOptions) -> None:
        require_serving_stack()
        self.manager = manager
        self.options = options
        self.port: int | None = None
        self._server: Any = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def listen(self) -> None:
        """Bind the socket and load the models (done by :meth:`run` / :meth:`start` if not yet)."""
        import uvicorn

        family = socket.AF_INET6 if ":" in self.options.host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when
        # the socket's proto says TCP, and without it small responses wait for delayed ACKs.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.options.host, self.options.port))
            sock.listen(2048)
            self._socket = sock
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot listen on {self.options.host}:{self.options.port}: "
                              f"{exc.strerror or exc}; pick another --rest_api_port or "
                              "--host") from None
        self.port = self._socket.getsockname()[1]
        self.manager.start()
        config = uvicorn.Config(build_app(self.manager, self.options), log_config=None,
                                access_log=False, lifespan="off", proxy_headers=False,
                                http=_coalescing_protocol_class(),
                                timeout_graceful_shutdown=self.options.drain_timeout_seconds)
        self._server = _draining_server_class()(config)

    @property
    def url(self) -> str:
        """``http://host:port`` of the listening socket."""
        host = f"[{self.options.host}]" if ":" in self.options.host else self.options.host
        return f"http://{host}:{self.port}"

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT, drain, unload; return 0 (call from the main thread)."""
        if self._server is None:
            self.listen()
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self.manager.close()
        logger.info("learnrun model-server: drained and stopped")
        return 0

    def start(self, timeout: float = 60.0) -> ModelServer:
        """Serve from a background thread (for tests and embedding); returns once listening."""
        self.listen()
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="learnrun-model-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the model server did not start within {timeout} s")
            self._thread.join(0.01)
        if not self._server.started:
            raise RuntimeError("the model server stopped before listening; see the log")
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Drain and stop a server started with :meth:`start`."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self.manager.close()


class _CoalescingTransport:
    """A transport whose writes within one turn of the event loop go out as one ``send``.

    uvicorn writes a response's status line and headers, then its body, with two writes:
    two system calls and two TCP segments (two wake-ups of the client) for a small JSON
    answer. This proxy joins the writes made before the loop's next turn.
    """

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _coalescing_protocol_class() -> Any:
    """uvicorn's HTTP protocol (httptools when installed, else h11) for this server.

    Its transport joins each response's writes (:class:`_CoalescingTransport`). With
    httptools it also reports to :data:`ARRIVALS` each request whose body is complete and
    whose handler has started (a pipelined request starts once the one before it is
    answered), so that a batch closing at its deadline takes in the requests already read.
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class ServingProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(_CoalescingTransport(transport, self.loop))

    if not all(hasattr(AutoHTTPProtocol, name) for name in ("_start_asgi_task",
                                                            "on_message_complete")):
        return ServingProtocol

    def arrive(cycle: Any) -> None:
        scope = cycle.scope
        if not (scope.get(_DONE) or cycle.response_complete or scope.get(_ARRIVED)):
            scope[_ARRIVED] = True
            ARRIVALS.arrived()

    class CountingProtocol(ServingProtocol):
        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            if cycle.more_body:
                cycle.scope[_OPEN] = True  # started; arrives with the end of its body
            else:
                arrive(cycle)
            super()._start_asgi_task(cycle, app)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            cycle = self.cycle
            if cycle is not None and not cycle.more_body and cycle.scope.pop(_OPEN, False):
                arrive(cycle)

    return CountingProtocol


def _draining_server_class() -> Any:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn's server whose SIGTERM/SIGINT drain and then return (no re-raised signal)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return

            def on_signal(sig: int, frame: Any) -> None:
                if self.should_exit and sig == signal.SIGINT:
                    self.force_exit = True
                logger.info("learnrun model-server: %s received, draining",
                            signal.Signals(sig).name)
                self.should_exit = True

            originals = {sig: signal.signal(sig, on_signal)
                         for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in originals.items():
                    signal.signal(sig, handler)

    return DrainingServer
