"""learnrun's HTTP/1.1 server over real sockets on 127.0.0.1, with a small handler (no model)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest

from learnrun.serving.http1 import MAX_PIPELINE, HttpServer, new_event_loop


class Served:
    """An HttpServer on its own event loop thread, with a handler that echoes the request.

    ``POST /wait?...`` answers only once :meth:`release` is called (a request in flight);
    ``/boom`` raises; ``/slow/N`` answers after N ms.
    """

    def __init__(self, max_request_bytes: int = 1000, keepalive_timeout: float = 5.0,
                 send_buffer: int | None = None) -> None:
        self.loop = new_event_loop()
        self.gate: asyncio.Future | None = None
        self.http = HttpServer(self.handle, max_request_bytes, keepalive_timeout)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        if send_buffer:  # accepted connections inherit it
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.http.serve(self.sock))
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(30)

    async def handle(self, method, path, headers, body):
        if path == "/boom":
            raise RuntimeError("boom")
        if path == "/wait":
            if self.gate is None or self.gate.done():
                self.gate = self.loop.create_future()
            await self.gate
        if path.startswith("/slow/"):
            future = self.loop.create_future()
            self.loop.call_later(int(path[6:]) / 1000, future.set_result, None)
            await future
        return 200, json.dumps({"method": method, "path": path, "body": body.decode(),
                                "te": headers.get("transfer-encoding")}).encode()

    def release(self) -> None:
        self.loop.call_soon_threadsafe(lambda: self.gate.set_result(None))

    def drain(self, timeout: float = 10.0) -> threading.Thread:
        done = threading.Event()

        def run():
            asyncio.run_coroutine_threadsafe(self.http.drain(timeout), self.loop).result(30)
            done.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.done = done
        return thread

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.http.abort)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.sock.close()


@pytest.fixture()
def served():
    srv = Served()
    yield srv
    srv.close()


def connect(srv: Served) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Reader:
    """Reads HTTP responses (Content-Length bodies) from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def response(self) -> tuple[int, dict, bytes]:
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"connection closed; got {self.buf!r}"
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        while len(self.buf) < length:
            assert self._fill(), "connection closed in a body"
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def closed(self) -> bool:
        """True when the server closes the connection (after what was already read)."""
        try:
            return not self._fill()
        except ConnectionResetError:
            return True


def request(path: str, body: bytes = b"", extra: str = "", version: str = "1.1") -> bytes:
    method = "POST" if body or "chunked" in extra else "GET"
    return (f"{method} {path} HTTP/{version}\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            .encode() + body if "chunked" not in extra else
            f"{method} {path} HTTP/{version}\r\nHost: x\r\n{extra}\r\n".encode() + body)


def test_keep_alive_and_connection_close(served):
    with connect(served) as sock:
        reader = Reader(sock)
        for i in range(3):
            sock.sendall(request(f"/a{i}", b"x" * i))
            status, headers, body = reader.response()
            assert status == 200 and json.loads(body)["path"] == f"/a{i}"
            assert headers["content-type"] == "application/json" and "date" in headers
            assert "connection" not in headers
        sock.sendall(request("/last", extra="Connection: close\r\n"))
        status, headers, _ = reader.response()
        assert status == 200 and headers["connection"] == "close"
        assert reader.closed()


def test_http10_closes_unless_keep_alive(served):
    with connect(served) as sock:
        reader = Reader(sock)
        sock.sendall(request("/k", version="1.0", extra="Connection: keep-alive\r\n"))
        status, headers, _ = reader.response()
        assert status == 200 and headers["connection"] == "keep-alive"
        sock.sendall(request("/plain", version="1.0"))
        status, headers, _ = reader.response()
        assert status == 200 and headers["connection"] == "close"
        assert reader.closed()


def test_pipelined_requests_are_answered_in_order(served):
    with connect(served) as sock:
        reader = Reader(sock)
        # the first answer is ready last: the others wait behind it
        sock.sendall(request("/slow/200") + request("/slow/1") + request("/fast", b"b"))
        paths = [json.loads(reader.response()[2])["path"] for _ in range(3)]
        assert paths == ["/slow/200", "/slow/1", "/fast"]
        # more requests than MAX_PIPELINE in one write: reading pauses and resumes
        n = 3 * MAX_PIPELINE
        sock.sendall(b"".join(request(f"/slow/{i % 3}?n={i}", b"%d" % i) for i in range(n)))
        bodies = [json.loads(reader.response()[2])["body"] for _ in range(n)]
        assert bodies == [str(i) for i in range(n)]


def test_a_client_that_does_not_read_its_answers_stops_the_reading():
    srv = Served(max_request_bytes=10_000, send_buffer=4096)
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", srv.port))
        sock.settimeout(20)
        n = 600
        sender = threading.Thread(target=sock.sendall, daemon=True,
                                  args=(b"".join(request(f"/r{i}", b"y" * 900) for i in range(n)),))
        sender.start()
        deadline = time.monotonic() + 20
        conn = None
        while time.monotonic() < deadline and not (conn and conn.write_paused and conn.read_paused):
            conn = next(iter(srv.http.connections), None)
            time.sleep(0.01)
        assert conn.write_paused and conn.read_paused  # answers back up: no more is read
        assert conn.transport.get_write_buffer_size() < 1_000_000
        reader = Reader(sock)
        assert [json.loads(reader.response()[2])["path"] for _ in range(n)] == [f"/r{i}" for i in range(n)]
        sender.join(20)
        sock.close()
    finally:
        srv.close()


def test_head_gets_no_body_and_upgrade_requests_close(served):
    with connect(served) as sock:
        reader = Reader(sock)
        sock.sendall(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n" + request("/after"))
        while reader.buf.count(b"HTTP/1.1 200") < 2 or not reader.buf.endswith(b"}"):
            assert reader._fill()
        head, rest = reader.buf.split(b"\r\n\r\n", 1)
        assert b"content-length: " in head and rest.startswith(b"HTTP/1.1 200")  # no body
    with connect(served) as sock:
        reader = Reader(sock)
        sock.sendall(b"GET /u HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        status, headers, _ = reader.response()
        assert status == 200 and headers["connection"] == "close" and reader.closed()
    with connect(served) as sock:
        reader = Reader(sock)
        sock.sendall(b"POST /u HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
                     b"Content-Length: 4\r\n\r\nbody")
        status, _, body = reader.response()
        assert status == 400 and "Upgrade" in json.loads(body)["error"] and reader.closed()


def test_chunked_request_body(served):
    with connect(served) as sock:
        reader = Reader(sock)
        sock.sendall(request("/c", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                             extra="Transfer-Encoding: chunked\r\n"))
        status, _, body = reader.response()
        assert status == 200 and json.loads(body)["body"] == "hello world"
        assert json.loads(body)["te"] == "chunked"


@pytest.mark.parametrize("make", [
    lambda: request("/big", b"x" * 1001),  # declared too large: refused before the body
    lambda: request("/big", b"".join(b"64\r\n" + b"x" * 100 + b"\r\n" for _ in range(11)) + b"0\r\n\r\n",
                    extra="Transfer-Encoding: chunked\r\n"),  # grows too large
])
def test_body_over_the_limit_gets_413_and_the_connection_closes(served, make):
    with connect(served) as sock:
        reader = Reader(sock)
        sock.sendall(request("/before") + make())
        assert json.loads(reader.response()[2])["path"] == "/before"
        status, headers, body = reader.response()
        assert status == 413 and headers["connection"] == "close"
        assert "--max_request_bytes" in json.loads(body)["error"]
        assert reader.closed()
    with connect(served) as sock:  # the server keeps serving
        sock.sendall(request("/after", b"x" * 1000))
        assert Reader(sock).response()[0] == 200


@pytest.mark.parametrize("garbage", [
    b"NOT HTTP AT ALL\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",  # request line over the head limit
])
def test_malformed_request_gets_400_json_and_the_server_keeps_serving(served, garbage):
    with connect(served) as sock:
        reader = Reader(sock)
        sock.sendall(request("/ok") + garbage)
        assert reader.response()[0] == 200
        status, headers, body = reader.response()
        assert status == 400 and headers["connection"] == "close"
        assert json.loads(body)["error"].startswith("malformed HTTP request")
        assert reader.closed()
    with connect(served) as sock:
        sock.sendall(request("/still"))
        assert Reader(sock).response()[0] == 200


def test_handler_error_is_a_json_500(served):
    with connect(served) as sock:
        reader = Reader(sock)
        sock.sendall(request("/boom") + request("/next"))
        status, _, body = reader.response()
        assert status == 500 and "RuntimeError: boom" in json.loads(body)["error"]
        assert reader.response()[0] == 200


def test_expect_100_continue(served):
    with connect(served) as sock:
        reader = Reader(sock)
        sock.sendall(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        while b"\r\n\r\n" not in reader.buf:
            assert reader._fill()
        assert reader.buf.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        reader.buf = reader.buf[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
        sock.sendall(b"body")
        status, _, body = reader.response()
        assert status == 200 and json.loads(body)["body"] == "body"


def test_drain_answers_in_flight_requests_and_closes_idle_connections():
    srv = Served()
    try:
        busy, idle = connect(srv), connect(srv)
        idle.sendall(request("/idle"))
        idle_reader, busy_reader = Reader(idle), Reader(busy)
        assert idle_reader.response()[0] == 200  # now an idle keep-alive connection
        busy.sendall(request("/wait", b"in flight"))
        deadline = time.monotonic() + 20
        while srv.gate is None and time.monotonic() < deadline:
            time.sleep(0.01)
        drainer = srv.drain()
        assert idle_reader.closed()  # idle: closed at once
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # stopped accepting
            try:
                socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
            except OSError:
                break
            time.sleep(0.01)
        assert not drainer.done.is_set()  # the request in flight holds the drain
        srv.release()
        status, _, body = busy_reader.response()
        assert status == 200 and json.loads(body)["body"] == "in flight"
        assert busy_reader.closed()
        drainer.join(20)
        assert drainer.done.is_set()
        busy.close()
        idle.close()
    finally:
        srv.close()


def test_idle_connections_close_after_the_keepalive_timeout():
    srv = Served(keepalive_timeout=0.5)
    try:
        with connect(srv) as sock:
            reader = Reader(sock)
            sock.sendall(request("/x"))
            assert reader.response()[0] == 200
            start = time.monotonic()
            assert reader.closed()
            assert time.monotonic() - start < 15
    finally:
        srv.close()
