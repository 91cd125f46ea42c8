"""Throughput and latency of ``learnrun model-server`` on the digits export, batched or not.

Usage: ``python benchmarks/bench_serving.py [--seconds 3] [--train-steps 50]``. Trains the
built-in ``digits`` experiment for ``--train-steps`` steps in a temporary model_dir, then for
each mode starts ``learnrun model-server`` as a subprocess on 127.0.0.1 (unbatched; then
``--enable_batching --max_batch_size 32 --batch_timeout_micros 1000``) and sends TF Serving
REST ``:predict`` requests (one 64-pixel instance each) from 1, 8 and 32 concurrent clients
for ``--seconds`` each after a short warm-up. The clients are asyncio connections with
keep-alive in this process, so client and server share the machine's cores. Prints
requests/s and p50/p99 latency per row and the batched/unbatched throughput ratio at 32
clients. Exits 1 when a request fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time


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
            return proc, int(m.group(1))
    proc.kill()
    raise RuntimeError("the model server did not start")


async def client(port: int, body: bytes, stop_at: float, record_from: float,
                 latencies: list[float], failures: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: localhost\r\n"
               b"Content-Type: application/json\r\nContent-Length: "
               + str(len(body)).encode() + b"\r\n\r\n" + body)
    try:
        while (now := time.perf_counter()) < stop_at:
            writer.write(request)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            payload = await reader.readexactly(length)
            if b" 200 " not in status or b"predictions" not in payload:
                failures.append(status.decode(errors="replace").strip())
            if now >= record_from:
                latencies.append(time.perf_counter() - now)
    finally:
        writer.close()


async def measure(port: int, clients: int, seconds: float) -> tuple[float, float, float, int]:
    body = json.dumps({"instances": [[0.5] * 64]}).encode()
    start = time.perf_counter()
    record_from, stop_at = start + 0.5, start + 0.5 + seconds
    latencies: list[float] = []
    failures: list[str] = []
    await asyncio.gather(*(client(port, body, stop_at, record_from, latencies, failures)
                           for _ in range(clients)))
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3  # noqa: E731
    return len(latencies) / seconds, pick(0.5), pick(0.99), len(failures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--train-steps", type=int, default=50)
    parser.add_argument("--clients", default="1,8,32")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        base = train_digits(os.path.join(tmp, "digits"), args.train_steps)
        rows, failed = {}, 0
        for batching in (False, True):
            proc, port = start_server(base, batching)
            try:
                for n in levels:
                    rps, p50, p99, fails = asyncio.run(measure(port, n, args.seconds))
                    rows[batching, n] = rps
                    failed += fails
                    print(f"{'batched' if batching else 'unbatched':9s}  clients {n:3d}  "
                          f"{rps:8.0f} req/s  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  "
                          f"failed {fails}", flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    top = max(levels)
    ratio = rows[True, top] / rows[False, top]
    print(f"batched/unbatched throughput at {top} clients: {ratio:.2f}x")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
