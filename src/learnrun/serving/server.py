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

Every answer is JSON. A client's mistake gets a 4xx with ``{"error": ...}`` and never stops
the server; only a failure inside the server gives a 500, logged with its traceback. Request
bodies over ``max_request_bytes`` get a 413.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from learnrun.serving.batching import Batcher, BatcherClosed
from learnrun.serving.tensors import RequestError, dumps
from learnrun.serving.versions import ConfigError, ModelManager

logger = logging.getLogger(__name__)

_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")
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
    """Raise :class:`ConfigError` with the install line when starlette or uvicorn is missing."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError(MISSING_EXTRA) from None


def runner_factory(options: ServingOptions) -> Any:
    """``make_runner(predictor)`` for :class:`ServedModel`: a Batcher when batching applies.

    Batching applies with ``enable_batching`` to exports whose batch dimension is dynamic and
    whose outputs all have it first; other versions run each request on its own.
    """
    def make_runner(predictor: Any) -> Batcher | None:
        signature = predictor.signature
        batchable = signature.get("dynamic_batch") and all(
            spec["shape"] and spec["shape"][0] is None for spec in signature["outputs"])
        if not (options.enable_batching and batchable):
            return None
        return Batcher(predictor, options.max_batch_size, options.batch_timeout_micros,
                       name=f"batcher-{predictor.path.rstrip('/').rsplit('/', 1)[-1]}")
    return make_runner


async def infer(state: Any, features: dict) -> Mapping[str, Any]:
    """Run one request on a version: through its batcher, else on a worker thread."""
    from starlette.concurrency import run_in_threadpool

    runner = state.runner
    if runner is not None:
        try:
            future = runner.submit(features)
        except BatcherClosed:
            pass
        else:
            return await asyncio.wrap_future(future)
    return await run_in_threadpool(state.predictor, features)


async def _read_body(request: Any, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"request body of {declared} bytes is over the limit of {limit} "
                           "bytes (--max_request_bytes)", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"request body is over the limit of {limit} bytes "
                               "(--max_request_bytes)", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(manager: ModelManager, options: ServingOptions) -> Any:
    """The starlette app answering ``/v1`` (TF Serving REST) and ``/v2`` (KServe v2)."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def endpoint(request: Any) -> Any:
        method, path = request.method, request.url.path
        try:
            if method not in ("GET", "POST"):
                raise RequestError(f"method {method} is not supported; use GET or POST", 405)
            body = await _read_body(request, options.max_request_bytes) if method == "POST" else b""
            if path.lower().startswith("/v1/"):
                status, payload = await tf_rest.handle(manager, infer, method, path, body)
            elif path == "/v2" or path.startswith("/v2/"):
                status, payload = await kserve_v2.handle(
                    manager, infer, method, path, body, request.headers, __version__)
            else:
                raise RequestError(f"Not found: {path} (the APIs are /v1/models/... and "
                                   "/v2/...)", 404)
        except RequestError as exc:
            status, payload = exc.status, {"error": exc.message}
        except Exception as exc:  # noqa: BLE001 - answered as JSON; the server keeps serving
            logger.exception("internal error answering %s %s", method, path)
            status, payload = 500, {"error": f"internal error: {type(exc).__name__}: {exc}"}
        return Response(dumps(payload), status, media_type="application/json")

    return Starlette(routes=[Route("/{rest:path}", endpoint, methods=list(_METHODS))])


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
                                access_log=False, lifespan="off",
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
