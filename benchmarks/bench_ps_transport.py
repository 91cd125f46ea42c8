"""One parameter-server round trip: learnrun's SocketTransport vs torch.distributed.rpc.

Usage: ``python benchmarks/bench_ps_transport.py [--calls 300] [--repeats 2]``. A ps process
hosts a real ``ShardServer`` holding the parameters of ``bench_distributed.py``'s model (MLP
64-256-256-10, 85k floats, SGD with momentum); this process pushes one flat gradient and gets
the shard's new values back (``rpc_push_pull``, what every training step does), through
:class:`learnrun.distributed.ps.transport.SocketTransport` and through TensorPipe RPC
(``torch.distributed.rpc`` over ``uv`` sockets, learnrun's transport before), side by side in
interleaved repeats. Printed: wall ms per round trip and the trainer's CPU ms per round trip
(what a step cannot overlap), medians of the repeats, and the ratio RPC / socket. One torch
thread per process, 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from typing import Any

import torch
from bench_distributed import model_fn  # the same model

from learnrun.config.run_config import RunConfig
from learnrun.distributed.launch import free_port
from learnrun.distributed.ps import server as ps_server
from learnrun.distributed.ps.transport import SocketTransport


def _params() -> dict[str, Any]:
    """The benchmark model's trainable parameters (bench_distributed.py's MLP)."""
    module = model_fn(None, None, "train").module
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _spec() -> dict[str, Any]:
    params = _params()
    return {"params": params, "optimizer_class": torch.optim.SGD,
            "groups": [{"lr": 0.01, "momentum": 0.9}], "group_of": dict.fromkeys(params, 0),
            "state": {}, "global_step": 0, "last_step": None}


class _Rpc:
    """The transport learnrun used before: ``torch.distributed.rpc`` over TensorPipe's ``uv``."""

    def start(self, name: str, rank: int, world_size: int, addr: str, port: int,
              timeout: float) -> None:
        from torch.distributed import rpc

        options = rpc.TensorPipeRpcBackendOptions(init_method=f"tcp://{addr}:{port}",
                                                  rpc_timeout=timeout, _transports=["uv"])
        rpc.init_rpc(name, rank=rank, world_size=world_size, rpc_backend_options=options)

    def call(self, to: str, fn: Any, *args: Any) -> Any:
        from torch.distributed import rpc

        return rpc.rpc_sync(to, fn, args=args)

    def shutdown(self) -> None:
        from torch.distributed import rpc

        rpc.shutdown(graceful=False)


def _transport(kind: str) -> Any:
    return SocketTransport() if kind == "socket" else _Rpc()


def _ps(kind: str, port: int) -> None:
    """The ps task of a one-ps, one-chief cluster: ``serve_config`` until the chief leaves."""
    torch.set_num_threads(1)
    cluster = {"ps": [f"127.0.0.1:{port}"], "chief": ["127.0.0.1:1"]}
    tf_config = json.dumps({"cluster": cluster, "task": {"type": "ps", "index": 0}})
    config = RunConfig(environ={"TF_CONFIG": tf_config}, distributed_timeout_secs=600)
    ps_server.serve_config(config, transport=_transport(kind))


def _round_trips(kind: str, calls: int) -> tuple[float, float]:
    """``(wall ms, trainer CPU ms)`` per push_pull over ``calls`` calls after a warm-up."""
    port = free_port()
    ps = multiprocessing.get_context("spawn").Process(target=_ps, args=(kind, port), daemon=True)
    ps.start()
    flat = torch.randn(sum(p.numel() for p in _params().values()))
    transport = _transport(kind)
    transport.start("chief:0", 1, 2, "127.0.0.1", port, 60)
    try:
        transport.call("ps:0", ps_server.rpc_init, "chief:0", _spec())
        for _ in range(30):
            transport.call("ps:0", ps_server.rpc_push_pull, "chief:0", flat, [0.01])
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            transport.call("ps:0", ps_server.rpc_push_pull, "chief:0", flat, [0.01])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        transport.call("ps:0", ps_server.rpc_goodbye, "chief:0", True)
    finally:
        transport.shutdown()
        ps.join(timeout=30)
    return wall / calls * 1e3, cpu / calls * 1e3


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    for name in ("calls", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1; got {getattr(args, name)}.")
    torch.set_num_threads(1)
    runs: dict[str, list[tuple[float, float]]] = {"socket": [], "rpc": []}
    for _ in range(args.repeats):
        for kind in runs:
            runs[kind].append(_round_trips(kind, args.calls))
    print(f"{'transport':<28}{'wall ms':>10}{'trainer CPU ms':>16}")
    medians = {}
    for kind, label in (("socket", "SocketTransport (learnrun)"), ("rpc", "TensorPipe RPC (uv)")):
        wall = statistics.median(w for w, _ in runs[kind])
        cpu = statistics.median(c for _, c in runs[kind])
        medians[kind] = (wall, cpu)
        print(f"{label:<28}{wall:>10.3f}{cpu:>16.3f}")
    ratio = medians["rpc"][0] / medians["socket"][0]
    print(f"RPC / socket, wall: {ratio:.2f}x; trainer CPU: "
          f"{medians['rpc'][1] / medians['socket'][1]:.2f}x")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main(sys.argv[1:]))
