"""Throughput of 1 vs 2 trainers, synchronous (DDP) and parameter-server, vs one process.

Usage: ``python benchmarks/bench_distributed.py [--steps 300]``. Prints samples/s of each
mode and its ratio to single-process training measured in the same run (MLP 64-256-256-10,
batch 128 per trainer, one torch thread per process, 127.0.0.1). On the 2-core CI machine
expect every distributed mode below 1.0: the processes share two cores (platform notes:
2 DDP processes ~3x slower than one process); this measures overhead. One run under load
(shared machine): 1 process 63k samples/s; DDP 1 trainer 0.83, 2 trainers 0.64; PS 1 trainer
0.33, 2 trainers 0.49.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import types

import torch

from learnrun.cluster import resolve_cluster
from learnrun.distributed import exit_process, strategy_for_config
from learnrun.distributed.launch import LocalCluster
from learnrun.distributed.parameter_server import serve_config
from learnrun.distributed.sync import DDPStrategy

BATCH = 128


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                               torch.nn.ReLU(), torch.nn.Linear(256, 10))


def _loop(strategy, steps: int) -> float:
    """Train ``steps`` steps through ``strategy``; return this process's samples/s."""
    module = _model()
    opt = torch.optim.SGD(module.parameters(), lr=0.01)
    wrapped = strategy.prepare(module, opt)
    strategy.after_restore(wrapped, opt, 0)
    x, y = torch.randn(BATCH, 64), torch.randint(0, 10, (BATCH,))
    step, done, start = 0, 0, 0.0
    warmup = max(steps // 10, 5)
    while not strategy.should_stop(done >= steps + warmup):
        if done == warmup:
            start = time.perf_counter()
        strategy.before_step(wrapped)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(wrapped(x), y).backward()
        step = strategy.apply_update(wrapped, opt, None, None, step)
        done += 1
    return (done - warmup) * BATCH / (time.perf_counter() - start)


def _task(steps: int) -> int:
    info = resolve_cluster()
    config = types.SimpleNamespace(
        task_type=info.task_type, task_id=info.task_id, cluster_spec=info.cluster_spec,
        is_chief=info.is_chief, num_ps_replicas=info.num_ps_replicas, rank=info.rank,
        world_size=info.world_size, master_addr=info.master_addr, master_port=info.master_port,
        cluster_source=info.source, distributed_timeout_secs=60, device="cpu")
    if info.task_type == "ps":
        serve_config(config)
        return 0
    strategy = DDPStrategy(config) if not info.num_ps_replicas else strategy_for_config(config)
    strategy.setup()
    try:
        print(f"RATE {_loop(strategy, steps):.1f}", flush=True)
    finally:
        strategy.teardown(True)
    return 0


class _Sink:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.extend(text.splitlines())

    def flush(self) -> None:
        pass


def _cluster_rate(steps: int, num_ps: int, num_workers: int) -> float:
    sink = _Sink()
    cluster = LocalCluster([sys.executable, __file__, "--task", "--steps", str(steps)],
                           num_ps=num_ps, num_workers=num_workers, output=sink,
                           tolerate_worker_failures=False)
    cluster.start()
    code = cluster.wait(grace_secs=5, deadline=time.monotonic() + 300)
    if code:
        raise SystemExit("\n".join(sink.lines[-30:]))
    rates = [float(m.group(1)) for line in sink.lines if (m := re.search(r"RATE ([\d.]+)$", line))]
    return sum(rates)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--task", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.task:
        exit_process(_task(args.steps))
    torch.set_num_threads(1)
    from learnrun.estimator.strategy import LocalStrategy

    base = _loop(LocalStrategy(None), args.steps)
    print(f"{'mode':<28}{'samples/s':>12}{'vs 1 process':>14}")
    print(f"{'single process':<28}{base:>12.0f}{1.0:>14.2f}")
    for label, ps, workers in (("sync DDP, 1 trainer", 0, 0), ("sync DDP, 2 trainers", 0, 1),
                               ("parameter server, 1 trainer", 1, 0),
                               ("parameter server, 2 trainers", 1, 1)):
        rate = _cluster_rate(args.steps, ps, workers)
        print(f"{label:<28}{rate:>12.0f}{rate / base:>14.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
