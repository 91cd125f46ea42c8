"""Throughput and latency of ``learnrun model-server`` on the digits export, batched or not.

Usage: ``python benchmarks/bench_serving.py [--seconds 3] [--repeats 3] [--train-steps 50]
[--export-base DIR]``. Trains the built-in ``digits`` experiment (DNNClassifier [64, 32] on
64 pixels) for ``--train-steps`` steps in a temporary model_dir (or serves ``--export-base``),
then starts two ``learnrun model-server`` subprocesses on 127.0.0.1 from the same code: one
unbatched, one with ``--enable_batching --max_batch_size 32 --batch_timeout_micros 1000``.
Both stay up for the whole run; each repeat measures every client count on both servers,
one after the other, alternating which goes first, so that the load other processes put on
the machine falls on both alike. A row is the median over the repeats.

The clients: ``N`` keep-alive connections, each sending a TF Serving REST ``:predict``
request (one 64-pixel instance) and waiting for its answer before sending the next (closed
loop), multiplexed with ``selectors`` in one client subprocess so that the client costs
little CPU (it shares the machine's cores with the server). Every run is bounded by
``--seconds`` (after a 0.5 s warm-up) and by ``--max-requests``. Besides requests/s and
p50/p99 latency, each row gives the server's and the client's CPU time per request (from
``/proc`` and ``time.process_time``). Exits 1 when a request fails.

``--breakdown`` prints where a request's CPU goes instead: each step of the handler timed
alone in this process (best of several repeats), and the HTTP layer's CPU per request with
a handler that does nothing, measured like the servers above (``--null-server``: the same
HTTP server in a subprocess).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time

MODES = ("unbatched", "batched")


def train_digits(model_dir: str, steps: int) -> str:
    """Train digits for ``steps`` steps; return the export base directory (``.../Servo``)."""
    import learnrun
    from learnrun.examples import digits

    hparams = digits.default_hparams().parse(f"train_steps={steps}")
    learnrun.run(digits.experiment_fn, run_config=learnrun.RunConfig(model_dir=model_dir),
                 hparams=hparams)
    return os.path.join(model_dir, "export", "Servo")


def start_server(base: str, batching: bool) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "learnrun", "model-server", "--model_name", "digits",
           "--model_base_path", base, "--rest_api_port", "0", "--file_system_poll_wait_seconds",
           "0"]
    if batching:
        cmd += ["--enable_batching", "--max_batch_size", "32", "--batch_timeout_micros", "1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"at http://127\.0\.0\.1:(\d+)", line)
        if m:
            proc.stdout.close()  # nothing more is read; the server logs little after this
            return proc, int(m.group(1))
    proc.kill()
    raise RuntimeError("the model server did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_clients(port: int, clients: int, seconds: float, warmup: float,
                max_requests: int) -> dict:
    """``clients`` closed-loop keep-alive connections in one selector loop (see the docstring).

    Returns the latencies (s) of the requests started within the measured window, the number
    of failures, every answered request and this process's CPU seconds.
    """
    body = json.dumps({"instances": [[0.5] * 64]}).encode()
    request = (b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: localhost\r\n"
               b"Content-Type: application/json\r\nContent-Length: "
               + str(len(body)).encode() + b"\r\n\r\n" + body)
    cpu0 = time.process_time()

    def send(sock: socket.socket, data: bytes) -> None:
        sent = sock.send(data)  # non-blocking: a small request fits the empty send buffer
        if sent < len(data):
            sock.setblocking(True)
            sock.sendall(data[sent:])
            sock.setblocking(False)

    sel = selectors.DefaultSelector()
    latencies: list[float] = []
    failures: list[str] = []
    answered = 0
    start = time.perf_counter()
    record_from, stop_at = start + warmup, start + warmup + seconds
    hard_stop = stop_at + 30.0
    for _ in range(clients):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        send(sock, request)
        sel.register(sock, selectors.EVENT_READ, [bytearray(), time.perf_counter()])
    open_conns = clients
    while open_conns and time.perf_counter() < hard_stop:
        for key, _ in sel.select(timeout=1.0):
            sock, state = key.fileobj, key.data
            buf = state[0]
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                failures.append("connection closed")
                sel.unregister(sock)
                sock.close()
                open_conns -= 1
                continue
            buf += chunk
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                continue
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", bytes(buf[:head_end]))
            length = int(m.group(1)) if m else 0
            if len(buf) < head_end + 4 + length:
                continue
            now = time.perf_counter()
            answer = bytes(buf[:head_end + 4 + length])
            del buf[:head_end + 4 + length]
            answered += 1
            if not answer.startswith(b"HTTP/1.1 200") or b"predictions" not in answer:
                failures.append(answer[:200].decode(errors="replace"))
            if record_from <= state[1] < stop_at:
                latencies.append(now - state[1])
            if now < stop_at and answered < max_requests:
                state[1] = now
                send(sock, request)
            else:
                sel.unregister(sock)
                sock.close()
                open_conns -= 1
    if open_conns:
        failures.append(f"{open_conns} connections still waiting at the time limit")
    return {"latencies": latencies, "failures": failures[:20], "failed": len(failures),
            "answered": answered, "cpu": time.process_time() - cpu0}


def measure(proc: subprocess.Popen, port: int, clients: int, seconds: float,
            max_requests: int) -> dict:
    """One run of ``clients`` clients against one server, the client in a subprocess."""
    cmd = [sys.executable, os.path.abspath(__file__), "--client-worker", str(port),
           "--clients", str(clients), "--seconds", str(seconds),
           "--max-requests", str(max_requests)]
    server_cpu0 = cpu_seconds(proc.pid)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 90, check=True)
    server_cpu = cpu_seconds(proc.pid) - server_cpu0
    result = json.loads(out.stdout)
    lat = sorted(result["latencies"])
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3 if lat else float("nan")  # noqa: E731
    answered = max(result["answered"], 1)
    return {"rps": len(lat) / seconds, "p50": pick(0.5), "p99": pick(0.99),
            "failed": result["failed"], "failures": result["failures"],
            "server_us": server_cpu / answered * 1e6, "client_us": result["cpu"] / answered * 1e6}


def null_server() -> int:
    """learnrun's HTTP server with a handler that answers a fixed body (for ``--breakdown``)."""
    import asyncio
    import signal

    from learnrun.serving.http1 import HttpServer, new_event_loop

    answer = b'{"predictions":[]}'

    async def handle(method, path, headers, body):
        return 200, answer

    async def serve() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen(2048)
        http = HttpServer(handle, 1 << 20)
        await http.serve(sock)
        print(f"serving at http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        http.abort()

    new_event_loop().run_until_complete(serve())
    return 0


def breakdown(base: str, seconds: float) -> None:
    """Print the CPU of each step of a request (see the module docstring)."""
    import timeit

    import torch

    from learnrun.export import load_export
    from learnrun.serving import tf_rest
    from learnrun.serving.batching import concat_features, split_outputs
    from learnrun.serving.tensors import convert_features, dumps, parse_json_object
    from learnrun.serving.versions import list_versions

    torch.set_num_threads(1)
    predictor = load_export(list_versions(base)[max(list_versions(base))])
    sig = predictor.signature
    body = json.dumps({"instances": [[0.5] * 64]}).encode()
    doc = parse_json_object(body)
    features, row = tf_rest.parse_predict(doc, sig)
    one = convert_features(predictor, features)
    batch = concat_features([one] * 32)
    single = predictor(one)
    out32 = predictor(batch)
    rows = split_outputs(out32, [1] * 32)
    payload = tf_rest.format_predict(single, sig, row)

    def best(fn, number: int) -> float:
        fn()
        return min(timeit.repeat(fn, number=number, repeat=15)) / number * 1e6

    steps = [
        ("JSON decode (orjson; json.loads)", best(lambda: parse_json_object(body), 2000),
         best(lambda: json.loads(body), 2000)),
        ("parse the predict request", best(lambda: tf_rest.parse_predict(doc, sig), 2000), None),
        ("input conversion", best(lambda: convert_features(predictor, features), 2000), None),
        ("exported program call, batch 1", best(lambda: predictor(one), 200), None),
        ("exported program call, batch 32", best(lambda: predictor(batch), 200), None),
        ("concat 32 requests' inputs", best(lambda: concat_features([one] * 32), 500), None),
        ("split a batch's outputs in 32", best(lambda: split_outputs(out32, [1] * 32), 500), None),
        ("output formatting (a batch's row; alone)", best(
            lambda: tf_rest.format_predict(rows[3], sig, row), 2000),
         best(lambda: tf_rest.format_predict(single, sig, row), 2000)),
        ("JSON encode (orjson; json)", best(lambda: dumps(payload), 2000),
         best(lambda: json.dumps(payload).encode(), 2000)),
    ]
    print("step                                          us   (alternative)")
    for name, us, alt in steps:
        print(f"{name:42s} {us:7.1f}" + ("" if alt is None else f"   ({alt:.1f})"))
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--null-server"],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(re.search(r":(\d+)", proc.stdout.readline()).group(1))
        for clients in (1, 32):
            run = measure(proc, port, clients, seconds, 200_000)
            print(f"HTTP layer, do-nothing handler, {clients:2d} clients: {run['rps']:6.0f} req/s, "
                  f"server CPU {run['server_us']:.0f} us/request")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=50)
    parser.add_argument("--export-base", help="serve this export base instead of training")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--max-requests", type=int, default=200_000,
                        help="upper bound on the requests of one run")
    parser.add_argument("--breakdown", action="store_true",
                        help="print where a request's CPU goes instead (see the docstring)")
    parser.add_argument("--client-worker", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--null-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.null_server:
        return null_server()
    if args.client_worker is not None:
        print(json.dumps(run_clients(args.client_worker, int(args.clients), args.seconds, 0.5,
                                     args.max_requests)))
        return 0
    levels = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        base = args.export_base or train_digits(os.path.join(tmp, "digits"), args.train_steps)
        if args.breakdown:
            breakdown(base, args.seconds)
            return 0
        servers = {}
        try:
            for mode in MODES:
                servers[mode] = start_server(base, mode == "batched")
            runs: dict[tuple[str, int], list[dict]] = {(m, n): [] for m in MODES for n in levels}
            failed = 0
            for r in range(args.repeats):
                for n in levels:
                    for mode in (MODES if r % 2 == 0 else MODES[::-1]):
                        run = measure(*servers[mode], n, args.seconds, args.max_requests)
                        runs[mode, n].append(run)
                        failed += run["failed"]
                        for failure in run["failures"][:3]:
                            print(f"  {mode} {n}: failed: {failure!r}", file=sys.stderr)
                        print(f"  repeat {r + 1}: {mode:9s} clients {n:3d} {run['rps']:7.0f} "
                              f"req/s", file=sys.stderr, flush=True)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=60)
    med = lambda mode, n, key: statistics.median(run[key] for run in runs[mode, n])  # noqa: E731
    print(f"medians of {args.repeats} interleaved repeats of {args.seconds:g} s")
    print("mode       clients    req/s    p50 ms    p99 ms  server CPU us/req  client CPU us/req")
    for n in levels:
        for mode in MODES:
            print(f"{mode:9s}  {n:7d} {med(mode, n, 'rps'):8.0f} {med(mode, n, 'p50'):9.2f} "
                  f"{med(mode, n, 'p99'):9.2f} {med(mode, n, 'server_us'):18.0f} "
                  f"{med(mode, n, 'client_us'):18.0f}")
    top = max(levels)
    ratios = [b["rps"] / max(u["rps"], 1e-9)
              for b, u in zip(runs["batched", top], runs["unbatched", top], strict=True)]
    print(f"batched/unbatched throughput at {top} clients: median {statistics.median(ratios):.2f}x "
          f"(per repeat: {', '.join(f'{x:.2f}' for x in ratios)})")
    print(f"failed requests: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
