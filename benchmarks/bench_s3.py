"""Checkpoints on an S3 endpoint: save time, synchronous vs asynchronous stall, requests per poll.

Usage: ``python benchmarks/bench_s3.py [--mb 40] [--every 4] [--saves 4] [--repeats 2]``.

Starts moto's S3 server on 127.0.0.1 (``moto[server]``; dummy credentials, ``AWS_ENDPOINT_URL``
pointing at it) and saves a model of ``--mb`` MB of float32 weights (SGD, one torch thread)
into ``s3://<bucket>/run`` through ``learnrun.model_dir``'s ``CheckpointManager``. Figures,
medians over ``--repeats`` interleaved runs:

* **save**: one synchronous save, start to commit (weights, state, ``meta.json``, index);
* **stall**: the time the training loop is blocked in the save call per save, synchronous
  (``save``) vs asynchronous (``save_async``: copy to CPU memory, upload in a thread);
* **requests per poll**: the HTTP requests the endpoint receives for one
  ``latest_checkpoint(model_dir)`` (what the evaluator and ``continuous_eval`` call each
  poll), with 1 and with ``--saves`` checkpoints in the directory.

The endpoint is a local process: uploads cost what loopback HTTP and moto's in-memory store
cost, not a network's latency or bandwidth. The exit status is 1 when the asynchronous stall
exceeds 25% of the synchronous one or a poll takes more than 3 requests.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import uuid

import torch
from bench_checkpoint import build, train_and_save  # the same model and training loop


class RequestCounter(logging.Handler):
    """Counts the requests moto's server logs (werkzeug writes one record per request)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "HTTP/1.1" in record.getMessage():
            self.count += 1


def start_endpoint() -> tuple[object, str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint,
                      AWS_EC2_METADATA_DISABLED="true")
    return server, endpoint


def run(mode: str, model_dir: str, model, opt, width: int, steps: int, every: int
        ) -> tuple[float, float]:
    """(wall seconds of ``steps`` steps, seconds spent inside the save calls)."""
    from learnrun.model_dir import checkpoints as ckpt

    manager = ckpt.CheckpointManager(model_dir, keep_checkpoint_max=2)
    return train_and_save(manager, mode, model, opt, torch.randn(8, width), steps, every)


def requests_per_poll(model_dir: str, counter: RequestCounter, polls: int = 5) -> float:
    from learnrun.model_dir import checkpoints as ckpt

    ckpt.latest_checkpoint(model_dir)  # warm: the client and its connection exist
    before = counter.count
    for _ in range(polls):
        ckpt.latest_checkpoint(model_dir)
    return (counter.count - before) / polls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=40, help="model size in MB (float32)")
    parser.add_argument("--every", type=int, default=4, help="save every N steps")
    parser.add_argument("--saves", type=int, default=4, help="saves per run")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    counter = RequestCounter()
    logging.getLogger("werkzeug").addHandler(counter)
    logging.getLogger("werkzeug").setLevel(logging.INFO)
    logging.getLogger("werkzeug").propagate = False
    server, endpoint = start_endpoint()
    try:
        import boto3

        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        model, opt, size, width = build(args.mb, width=1024)
        steps = args.every * args.saves
        print(f"endpoint: moto on {endpoint}; model: {size / 1e6:.0f} MB of weights; "
              f"{steps} steps, a save every {args.every}; torch threads 1")
        stalls: dict[str, list[float]] = {"sync": [], "async": []}
        for r in range(args.repeats):
            for mode in ("sync", "async"):
                model_dir = f"s3://{bucket}/{mode}-{r}"
                _, in_calls = run(mode, model_dir, model, opt, width, steps, args.every)
                stalls[mode].append(in_calls / args.saves)
        sync, asyn = (statistics.median(stalls[m]) for m in ("sync", "async"))
        print(f"save (sync, to commit): {sync * 1e3:7.1f} ms per save "
              f"({size / 1e6 / sync:.0f} MB/s of weights)")
        print(f"stall: sync {sync * 1e3:7.1f} ms, async {asyn * 1e3:7.1f} ms per save "
              f"(ratio {asyn / sync:.2f})")
        one_dir = f"s3://{bucket}/poll-one"
        run("sync", one_dir, model, opt, width, args.every, args.every)
        one = requests_per_poll(one_dir, counter)
        many = requests_per_poll(f"s3://{bucket}/sync-0", counter)
        print(f"requests per evaluator poll (latest_checkpoint): {one:.1f} with 1 checkpoint, "
              f"{many:.1f} with 2 kept")
        ok = asyn <= 0.25 * sync and max(one, many) <= 3
        print("OK" if ok else "FAIL: async stall > 25% of sync, or > 3 requests per poll")
        return 0 if ok else 1
    finally:
        server.stop()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
