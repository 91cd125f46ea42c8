"""The model server: one handler over both protocols, learnrun's HTTP/1.1 server and its drain.

Execution trace of :meth:`ModelServer.run` (the command line):

1. every model loads its versions (:meth:`ModelManager.start`); polling continues in the
   background;
2. the listening socket binds ``host:port`` (port 0: any free port; :attr:`ModelServer.port`
   tells which) and :class:`~learnrun.serving.http1.HttpServer` serves it on uvloop (asyncio's
   loop when uvloop is not installed);
3. on SIGTERM or SIGINT the socket closes, requests in flight finish (up to
   ``drain_timeout_seconds``), idle connections close, and polling stops; the batchers finish
   their queued requests, the versions unload and :meth:`run` returns 0. A second SIGINT
   closes every connection at once.

The hot path, measured on the digits export with benchmarks/bench_serving.py: httptools'
parser calls the one handler (:func:`build_handler`; no router or request objects) from the
callback that read the request, without an asyncio Task; the answer (head and body) goes
out in one write; model calls run on the event loop's thread, batched by a
:class:`~learnrun.serving.batching.LoopBatcher` with ``--enable_batching``: no thread
hand-off per request. ``--num_batch_threads N`` moves model calls (batches, or single
requests without batching) to a pool of N threads, for models slow enough that the event
loop should keep reading requests meanwhile.

Every answer is JSON. A client's mistake gets a 4xx with ``{"error": ...}`` and never stops
the server; only a failure inside the server gives a 500, logged with its traceback. Request
bodies over ``max_request_bytes`` get a 413.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from learnrun._version import __version__
from learnrun.serving import kserve_v2, tf_rest
from learnrun.serving.batching import BatcherClosed, LoopBatcher, ThreadRunner
from learnrun.serving.http1 import HttpServer, new_event_loop, require_httptools
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
    num_batch_threads: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--rest_api_port must be in 0..65535, got {self.port}")
        if self.max_batch_size < 1:
            raise ConfigError(f"--max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.batch_timeout_micros < 0:
            raise ConfigError(f"--batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")
        if self.max_request_bytes < 1:
            raise ConfigError(f"--max_request_bytes must be >= 1, got {self.max_request_bytes}")
        if self.num_batch_threads < 0:
            raise ConfigError(f"--num_batch_threads must be >= 0, got {self.num_batch_threads}")


def require_serving_stack() -> None:
    """Raise :class:`ConfigError` with the install line when httptools is missing.

    uvloop (in the extra too) is used when installed; without it the server runs on
    asyncio's own event loop, which works at a higher CPU cost per request.
    """
    try:
        require_httptools()
    except ImportError:
        raise ConfigError(MISSING_EXTRA) from None


def runner_factory(options: ServingOptions) -> Any:
    """``make_runner(predictor)`` for :class:`ServedModel`: how a version runs its requests.

    With ``enable_batching``, versions whose batch dimension is dynamic and whose outputs
    all have it first get a :class:`LoopBatcher`; other versions run each request on its
    own: on the event loop (None), or, with ``num_batch_threads``, in a thread of one pool
    the whole server shares (the batchers run their batches there too).
    """
    executor = None
    if options.num_batch_threads > 0:
        executor = concurrent.futures.ThreadPoolExecutor(options.num_batch_threads,
                                                         thread_name_prefix="learnrun-model")

    def make_runner(predictor: Any) -> LoopBatcher | ThreadRunner | None:
        signature = predictor.signature
        batchable = signature.get("dynamic_batch") and all(
            spec["shape"] and spec["shape"][0] is None for spec in signature["outputs"])
        if options.enable_batching and batchable:
            return LoopBatcher(predictor, options.max_batch_size, options.batch_timeout_micros,
                               name=f"batcher-{predictor.path.rstrip('/').rsplit('/', 1)[-1]}",
                               executor=executor)
        return ThreadRunner(predictor, executor) if executor is not None else None
    return make_runner


async def infer(state: Any, features: dict) -> Mapping[str, Any]:
    """Run one request on a version: through its runner (a batcher or a thread), else inline.

    Inline is the default: for the small models served here a thread hand-off per request
    costs more than the call (measured: the unbatched digits server used ~2.1 ms of CPU per
    request through a thread pool, ~1.0 ms inline).
    """
    runner = state.runner
    if runner is not None:
        try:
            future = runner.submit(features)
        except BatcherClosed:
            pass
        else:
            return await future
    return state.predictor(features)


def build_handler(manager: ModelManager) -> Any:
    """The one handler of every request: ``/v1`` (TF Serving REST) and ``/v2`` (KServe v2).

    ``handler(method, path, headers, body)`` returns ``(status, JSON bytes)``; see
    :mod:`learnrun.serving.http1` for how it is driven.
    """

    async def handle(method: str, path: str, headers: Mapping[str, str],
                     body: bytes) -> tuple[int, bytes]:
        try:
            if method not in ("GET", "POST"):
                raise RequestError(f"method {method} is not supported; use GET or POST", 405)
            if path[:4].lower() == "/v1/":
                status, payload = await tf_rest.handle(manager, infer, method, path, body)
            elif path == "/v2" or path.startswith("/v2/"):
                status, payload = await kserve_v2.handle(
                    manager, infer, method, path, body, headers, __version__)
            else:
                raise RequestError(f"Not found: {path} (the APIs are /v1/models/... and "
                                   "/v2/...)", 404)
        except RequestError as exc:
            status, payload = exc.status, {"error": exc.message}
        except Exception as exc:  # noqa: BLE001 - answered as JSON; the server keeps serving
            logger.exception("internal error answering %s %s", method, path)
            status, payload = 500, {"error": f"internal error: {type(exc).__name__}: {exc}"}
        return status, dumps(payload)

    return handle


class ModelServer:
    """Serves a :class:`ModelManager`'s models over HTTP (see the module docstring)."""

    def __init__(self, manager: ModelManager, options: ServingOptions) -> None:
        require_serving_stack()
        self.manager = manager
        self.options = options
        self.port: int | None = None
        self.http: HttpServer | None = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._force = False

    def listen(self) -> None:
        """Bind the socket and load the models (done by :meth:`run` / :meth:`start` if not yet)."""
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
        self.http = HttpServer(build_handler(self.manager), self.options.max_request_bytes)

    @property
    def url(self) -> str:
        """``http://host:port`` of the listening socket."""
        host = f"[{self.options.host}]" if ":" in self.options.host else self.options.host
        return f"http://{host}:{self.port}"

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT, drain, unload; return 0 (call from the main thread)."""
        if self.http is None:
            self.listen()
        try:
            self._run_loop(signals=threading.current_thread() is threading.main_thread())
        finally:
            self.manager.close()
        logger.info("learnrun model-server: drained and stopped")
        return 0

    def start(self, timeout: float = 60.0) -> ModelServer:
        """Serve from a background thread (for tests and embedding); returns once listening."""
        self.listen()
        self._thread = threading.Thread(target=self._run_loop, kwargs={"signals": False},
                                        name="learnrun-model-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._started.is_set() and self._thread.is_alive():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the model server did not start within {timeout} s")
            self._started.wait(0.01)
        if not self._started.is_set():
            raise RuntimeError("the model server stopped before listening; see the log")
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Drain and stop a server started with :meth:`start`."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
                loop.call_soon_threadsafe(self._request_stop)
        if self._thread is not None:
            self._thread.join(timeout)
        self.manager.close()

    def _request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def _on_signal(self, sig: int) -> None:
        if self._stop.is_set() and sig == signal.SIGINT:
            logger.info("learnrun model-server: second SIGINT, closing every connection now")
            self._force = True
            self.http.abort()
        logger.info("learnrun model-server: %s received, draining", signal.Signals(sig).name)
        self._stop.set()

    def _run_loop(self, signals: bool) -> None:
        loop = new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(signals))
        finally:
            self._loop = None
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, signals: bool) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self.http.serve(self._socket)
            self._started.set()
            await self._stop.wait()
            if not self._force:
                await self.http.drain(self.options.drain_timeout_seconds)
            self.http.abort()
        finally:
            if signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
