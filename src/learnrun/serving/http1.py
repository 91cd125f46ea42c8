"""learnrun's HTTP/1.1 server: an asyncio protocol over httptools' parser, JSON answers only.

It replaces a general ASGI server on the model server's hot path: one handler answers every
request, ``handler(method, path, headers, body)``, a coroutine that returns ``(status, JSON
body bytes)``. What it does, per connection:

* **keep-alive**: the default for HTTP/1.1; ``Connection: close`` closes after the answer;
  HTTP/1.0 closes unless the request says ``Connection: keep-alive``;
* **bodies**: ``Content-Length`` and chunked bodies (httptools decodes them); a body
  declared or grown over ``max_request_bytes`` gets a 413 at once, then the connection
  closes; ``Expect: 100-continue`` gets its ``100 Continue`` when the request's turn comes;
* **pipelining**: requests are handled as they arrive and answered in their order, the
  answers ready at one time going out in one write;
* **errors**: unparsable HTTP gets a 400 and the connection closes; every error is JSON
  ``{"error": ...}``;
* **HEAD** gets the head of the handler's answer without its body; an ``Upgrade`` request
  (e.g. h2c) is answered as HTTP/1.1 and the connection closes (one with a body gets a 400);
* **flow control**: reading pauses while ``MAX_PIPELINE`` requests wait for their answers
  or while the client does not read its answers (the transport's high-water mark), so a
  connection buffers at most the answers to one read's worth of requests beyond that;
* **idle connections** close after ``keepalive_timeout`` seconds without a byte received
  and with nothing to answer (as uvicorn's default, 5 s).

The handler is driven without an asyncio Task: its coroutine runs at once, inside the
callback that parsed the request, and an answer computed without waiting is written in that
same callback. A handler that waits (e.g. for a batch) is resumed by its future's
callbacks, so it may ``await`` asyncio futures only (not ``asyncio.sleep`` or anything that
needs ``current_task()``). This saves a Task and a turn of the event loop per request.

:meth:`HttpServer.drain` is the SIGTERM path: stop accepting, close idle connections, let
the requests received in full get their answers (up to a timeout), then close the rest.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote

logger = logging.getLogger(__name__)

#: ``handler(method, path, headers, body) -> (status, JSON bytes)``; headers have lower-case
#: names
Handler = Callable[[str, str, Mapping[str, str], bytes], Awaitable[tuple[int, bytes]]]

#: unanswered requests per connection before it stops reading
MAX_PIPELINE = 8
#: the request line and headers of one request, in bytes, at most
MAX_HEAD_BYTES = 64 * 1024

REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 404: "Not Found",
           405: "Method Not Allowed", 413: "Content Too Large", 500: "Internal Server Error",
           503: "Service Unavailable"}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def error_body(message: str) -> bytes:
    """``{"error": message}`` as JSON bytes."""
    return json.dumps({"error": message}).encode()


def require_httptools() -> Any:
    """The httptools module, or ImportError (the model server names its extra)."""
    import httptools

    return httptools


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop when uvloop is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class _Request:
    __slots__ = ("method", "url", "headers", "head_bytes", "chunks", "size", "keep_alive",
                 "http10", "expect_continue", "response", "coro", "gone")

    def __init__(self) -> None:
        self.method = ""
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.chunks: list[bytes] = []
        self.size = 0
        self.keep_alive = True
        self.http10 = False
        self.expect_continue = False
        self.response: bytes | None = None  # set when answered
        self.coro: Any = None  # the handler's coroutine while it runs
        self.gone = False  # the connection was lost before the answer


class _Stop(Exception):
    """Raised from a parser callback to stop parsing this connection's input."""


class HttpProtocol(asyncio.Protocol):
    """One client connection (see the module docstring)."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.parser = server.httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.pending: collections.deque[_Request] = collections.deque()  # oldest first
        self.current: _Request | None = None  # the request being parsed
        self.closing = False  # read no more; close once the pending answers are out
        self.read_paused = False
        self.write_paused = False
        self.last_active = time.monotonic()

    # ---------------------------------------------------------------- transport callbacks
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.server.connections.add(self)
        if self.server.draining:
            self.closing = True
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True
        for request in self.pending:
            request.gone = True
            if request.coro is not None:
                request.coro.close()
                request.coro = None
        self.pending.clear()
        self.server.connection_closed()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_active = time.monotonic()
        try:
            self.parser.feed_data(data)
        except self.server.httptools.HttpParserUpgrade:
            # after an Upgrade request (e.g. h2c), answered as plain HTTP/1.1: read no more
            self._stop_reading()
        except self.server.httptools.HttpParserError as exc:
            if not self.closing:  # else a callback stopped the parser on purpose
                reason = str(exc.__context__ or exc) or type(exc).__name__
                self._refuse(400, f"malformed HTTP request: {reason}")
        self._flush()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._update_reading()

    # ------------------------------------------------------------------- parser callbacks
    def on_message_begin(self) -> None:
        if self.closing:  # after a request that closes the connection: read nothing more
            raise _Stop
        self.current = _Request()

    def on_url(self, url: bytes) -> None:
        request = self.current
        request.url += url
        request.head_bytes += len(url)
        if request.head_bytes > MAX_HEAD_BYTES:
            self._head_too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.current
        request.headers.append((name, value))
        request.head_bytes += len(name) + len(value) + 4
        if request.head_bytes > MAX_HEAD_BYTES:
            self._head_too_large()

    def on_headers_complete(self) -> None:
        request = self.current
        parser = self.parser
        request.method = parser.get_method().decode("ascii", "replace")
        request.keep_alive = parser.should_keep_alive()
        request.http10 = parser.get_http_version() == "1.0"
        request.headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                           for k, v in request.headers}
        self.pending.append(request)
        if parser.should_upgrade():  # answered as plain HTTP/1.1, then the connection closes
            request.keep_alive = False
            if request.headers.get("content-length", "0") != "0" or \
                    "transfer-encoding" in request.headers:
                self._refuse(400, "protocol upgrades are not supported; send the request "
                             "without an Upgrade header")
                raise _Stop
        limit = self.server.max_request_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            self._too_large(request, f"request body of {declared} bytes is over the limit of "
                            f"{limit} bytes (--max_request_bytes)")
        if request.headers.get("expect", "").lower() == "100-continue":
            request.expect_continue = True

    def on_body(self, body: bytes) -> None:
        request = self.current
        request.size += len(body)
        if request.size > self.server.max_request_bytes:
            self._too_large(request, f"request body is over the limit of "
                            f"{self.server.max_request_bytes} bytes (--max_request_bytes)")
        request.chunks.append(body)

    def on_message_complete(self) -> None:
        request, self.current = self.current, None
        request.expect_continue = False
        chunks = request.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        request.chunks = []
        url = request.url
        path = url.split(b"?", 1)[0].decode("latin-1")
        if "%" in path:
            path = unquote(path, errors="replace")
        if not request.keep_alive:
            self._stop_reading()
        request.coro = self.server.handler(request.method, path, request.headers, body)
        self._step(request)
        self._update_reading()

    # ----------------------------------------------------------------------- the handler
    def _step(self, request: _Request, _future: Any = None) -> None:
        """Run the request's handler until it waits or returns (a Task's step, without the Task)."""
        coro = request.coro
        if coro is None or request.gone:
            return
        try:
            waiting = coro.send(None)
        except StopIteration as stop:
            request.coro = None
            status, body = stop.value
            self._answer(request, status, body)
            return
        except BaseException as exc:  # noqa: BLE001 - the handler's own errors are its answers
            request.coro = None
            logger.exception("the request handler failed")
            self._answer(request, 500, error_body(f"internal error: {type(exc).__name__}: {exc}"))
            if not isinstance(exc, Exception):
                raise
            return
        if getattr(waiting, "_asyncio_future_blocking", None):
            waiting._asyncio_future_blocking = False
            waiting.add_done_callback(lambda future: self._step(request))
        else:  # a bare yield: run again on the loop's next turn
            self.server.loop.call_soon(self._step, request)

    def _answer(self, request: _Request, status: int, body: bytes) -> None:
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
                f"{self.server.date_header}")
        if not request.keep_alive:
            head += "connection: close\r\n"
        elif request.http10:
            head += "connection: keep-alive\r\n"
        request.response = head.encode("latin-1") + b"\r\n" + (
            body if request.method != "HEAD" else b"")  # HEAD: the length, not the body
        if self.pending and request is self.pending[0]:
            self._flush()
        # else an earlier request is still being answered: this one goes out after it

    def _flush(self) -> None:
        """Write the answers that are ready, in request order; close when done if closing."""
        pending = self.pending
        if not pending or pending[0].response is None:
            if pending and pending[0].expect_continue:
                pending[0].expect_continue = False
                self.transport.write(CONTINUE)
            elif not pending and self.closing and self.current is None:
                self.transport.close()
            return
        out = []
        while pending and pending[0].response is not None:
            request = pending.popleft()
            out.append(request.response)
            if not request.keep_alive:
                self._stop_reading()
                pending.clear()
                break
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        self.last_active = time.monotonic()
        if pending and pending[0].expect_continue and pending[0].response is None:
            pending[0].expect_continue = False
            self.transport.write(CONTINUE)
        if self.closing and not pending:
            self.transport.close()
        else:
            self._update_reading()

    # ---------------------------------------------------------------- refusals and closing
    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` after the answers before it, then close."""
        request = self.current
        if request is None or request not in self.pending:
            request = _Request()
            self.pending.append(request)
        self.current = None
        request.keep_alive = False
        if request.coro is not None:
            request.coro.close()
            request.coro = None
        self._stop_reading()
        self._answer(request, status, error_body(message))

    def _too_large(self, request: _Request, message: str) -> None:
        self._refuse(413, message)
        raise _Stop

    def _head_too_large(self) -> None:
        self._refuse(400, f"malformed HTTP request: the request line and headers are over "
                     f"{MAX_HEAD_BYTES} bytes")
        raise _Stop

    def _stop_reading(self) -> None:
        self.closing = True
        self._update_reading()

    def _update_reading(self) -> None:
        pause = self.closing or self.write_paused or len(self.pending) >= MAX_PIPELINE
        if pause != self.read_paused and not self.transport.is_closing():
            self.read_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def shutdown(self) -> None:
        """Drain: read no more; answer the requests received in full, then close."""
        self.closing = True
        self.current = None
        while self.pending and self.pending[-1].coro is None and self.pending[-1].response is None:
            self.pending.pop()  # its body had not all arrived: dropped, as a closed connection
        self._update_reading()
        if not self.pending:
            self.transport.close()

    def idle_for(self, now: float) -> float:
        """Seconds since this connection last received or sent a byte; 0 while it is busy."""
        busy = any(request.coro is not None for request in self.pending)
        return 0.0 if busy else now - self.last_active


class HttpServer:
    """The connections of one listening socket: accepting, idle timeouts and the drain."""

    def __init__(self, handler: Handler, max_request_bytes: int,
                 keepalive_timeout: float = 5.0) -> None:
        self.httptools = require_httptools()
        self.handler = handler
        self.max_request_bytes = max_request_bytes
        self.keepalive_timeout = keepalive_timeout
        self.connections: set[HttpProtocol] = set()
        self.draining = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.date_header = ""
        self._server: asyncio.AbstractServer | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._all_closed: asyncio.Event | None = None

    async def serve(self, sock: Any) -> None:
        """Accept connections on the listening socket ``sock`` (returns once accepting)."""
        self.loop = asyncio.get_running_loop()
        self._all_closed = asyncio.Event()
        self._tick()
        self._server = await self.loop.create_server(lambda: HttpProtocol(self), sock=sock,
                                                     backlog=2048)

    def _tick(self) -> None:
        """Once a second: refresh the Date header and close idle connections."""
        now = time.time()
        self.date_header = f"date: {formatdate(now, usegmt=True)}\r\n"
        mono = time.monotonic()
        for conn in list(self.connections):
            if conn.idle_for(mono) > self.keepalive_timeout:
                conn.closing = True
                conn.transport.close()
        self._ticker = self.loop.call_later(1.0, self._tick)

    def connection_closed(self) -> None:
        if self.draining and not self.connections and self._all_closed is not None:
            self._all_closed.set()

    async def drain(self, timeout: float) -> None:
        """Stop accepting; answer what was received in full (up to ``timeout`` s); close all."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.shutdown()
        if self.connections:
            try:
                await asyncio.wait_for(self._all_closed.wait(), timeout)
            except TimeoutError:
                logger.warning("%d connections still busy after the %g s drain timeout; closing "
                               "them", len(self.connections), timeout)
        self.abort()
        if self._server is not None:
            await self._server.wait_closed()

    def abort(self) -> None:
        """Close every connection at once and stop the timers."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.transport.abort()
