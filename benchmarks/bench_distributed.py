"""Throughput of 1 vs 2 trainers, synchronous (DDP) and parameter-server, vs one process.

Usage: ``python benchmarks/bench_distributed.py [--steps 300]``. Everything goes through the
real path: a single-process ``Estimator.train`` in this process, then clusters started with
``learnrun.distributed.launch`` running ``learnrun run`` on this file's ``experiment_fn``
(Experiment -> Estimator -> DDPStrategy / ParameterServerStrategy), each for ``--steps``
global steps. Model: MLP 64-256-256-10, cross entropy, SGD, batch 128 per trainer, one
torch thread per process, 127.0.0.1. A hook in every trainer times its steps after a warm-up
(process start, rendezvous, checkpoint saves and the chief's final evaluation are outside
the window) and prints its samples/s; a cluster's throughput is the sum over its trainers.

A 1-trainer synchronous cluster has one task, so the Estimator trains it with
``LocalStrategy`` (no process group): that row measures ``learnrun run``'s own path.
On the 2-core CI machine expect every distributed mode below 1.0: the processes share two
cores (platform notes: 2 DDP processes ~3x slower than one process); this measures overhead,
not scaling. One run (``--steps 600``, quiet machine, 2026-12-02): single process 44k
samples/s; sync 1 trainer 0.90-1.00, DDP 2 trainers 0.54; parameter server 1 trainer 0.63,
2 trainers 0.88 (``docs/benchmarks.md`` has the series).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch

import learnrun
from learnrun.hooks import SessionRunHook

BATCH, IN, OUT, N_SAMPLES = 128, 64, 10, 4096
_CONFIG = {"tf_random_seed": 0, "save_checkpoints_steps": 10**9, "save_checkpoints_secs": None,
           "save_summary_steps": 10**9, "log_step_count_steps": 10**9, "keep_checkpoint_max": 1,
           "distributed_timeout_secs": 60, "device": "'cpu'"}


def model_fn(params: Any, config: Any, mode: str) -> learnrun.EstimatorSpec:
    """MLP 64-256-256-10 with SGD and cross entropy."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(IN, 256), torch.nn.ReLU(),
                                 torch.nn.Linear(256, 256), torch.nn.ReLU(),
                                 torch.nn.Linear(256, OUT))
    return learnrun.EstimatorSpec(module=module, loss_fn=torch.nn.functional.cross_entropy,
                                  optimizer=torch.optim.SGD(module.parameters(), lr=0.01))


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((N_SAMPLES, IN)).astype(np.float32),
            rng.integers(0, OUT, N_SAMPLES).astype(np.int64))


def train_input_fn(input_context: Any = None) -> Any:
    """``BATCH`` examples per trainer and step, repeated forever."""
    x, y = _data()
    return learnrun.inputs.numpy_input_fn(x, y, batch_size=BATCH, num_epochs=None,
                                          shuffle=False)(input_context=input_context)


def eval_input_fn(input_context: Any = None) -> Any:
    """One batch (the chief's local_run evaluates once after training)."""
    x, y = _data()
    return learnrun.inputs.numpy_input_fn(x[:BATCH], y[:BATCH], batch_size=BATCH, num_epochs=1,
                                          shuffle=False)(input_context=input_context)


class RateHook(SessionRunHook):
    """Times this trainer's steps after ``warmup`` local steps; prints ``RATE <samples/s>``."""

    def __init__(self, warmup: int, report: bool = True) -> None:
        self.warmup = warmup
        self.report = report

    def begin(self) -> None:
        self.steps, self.start, self.last = 0, None, None

    def after_run(self, run_context: Any, run_values: Any) -> None:
        self.steps += 1
        now = time.perf_counter()
        if self.steps == self.warmup:
            self.start = now
        self.last = now

    def rate(self) -> float:
        """Samples/s of the timed steps (0 when there were none)."""
        if self.start is None or self.last == self.start:
            return 0.0
        return (self.steps - self.warmup) * BATCH / (self.last - self.start)

    def end(self, session: Any) -> None:
        if self.report:
            print(f"RATE {self.rate():.1f}", flush=True)


def _steps() -> int:
    return int(os.environ.get("BENCH_STEPS", "300"))


def _warmup(steps: int) -> int:
    return max(steps // 10, 5)


def experiment_fn(run_config: Any, hparams: Any = None) -> learnrun.Experiment:
    """The Experiment every task of a benchmark cluster runs (``BENCH_STEPS`` global steps)."""
    steps = _steps()
    estimator = learnrun.Estimator(model_fn, config=run_config)
    return learnrun.Experiment(estimator, train_input_fn, eval_input_fn, train_steps=steps,
                               eval_steps=1, train_monitors=[RateHook(_warmup(steps) // 2)],
                               eval_delay_secs=0, local_eval_frequency=None)


class _Sink:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.extend(text.splitlines())

    def flush(self) -> None:
        pass


def _config_args() -> list[str]:
    return [arg for key, value in _CONFIG.items() for arg in ("--config", f"{key}={value}")]


def single_process_rate(steps: int, model_dir: str) -> float:
    """Samples/s of a plain ``Estimator.train`` in this process."""
    values = {k: (v.strip("'") if isinstance(v, str) else v) for k, v in _CONFIG.items()
              if k != "distributed_timeout_secs"}
    est = learnrun.Estimator(model_fn, config=learnrun.RunConfig(model_dir=model_dir, **values))
    hook = RateHook(_warmup(steps), report=False)
    est.train(train_input_fn, hooks=[hook], max_steps=steps)
    return hook.rate()


def cluster_rate(steps: int, num_ps: int, num_workers: int, model_dir: str) -> float:
    """Samples/s of a launched cluster (sum over its trainers)."""
    from learnrun.distributed import launch

    sink = _Sink()
    env = dict(os.environ, BENCH_STEPS=str(steps), OMP_NUM_THREADS="1")
    code = launch(f"{os.path.abspath(__file__)}:experiment_fn", num_ps=num_ps,
                  num_workers=num_workers, run_args=["--model-dir", model_dir, *_config_args()],
                  env=env, output=sink, timeout=600, tolerate_worker_failures=False)
    if code:
        raise SystemExit(f"cluster ps={num_ps} workers={num_workers} failed ({code}):\n"
                         + "\n".join(sink.lines[-30:]))
    rates = [float(m.group(1)) for line in sink.lines if (m := re.search(r"RATE ([\d.]+)$", line))]
    if len(rates) != 1 + num_workers:
        raise SystemExit(f"expected {1 + num_workers} RATE lines, got {rates}:\n"
                         + "\n".join(sink.lines[-30:]))
    return sum(rates)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="global steps of each run")
    args = parser.parse_args(argv)
    if args.steps < 20:
        parser.error(f"--steps must be >= 20 (a warm-up precedes the timed steps); got "
                     f"{args.steps}.")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="learnrun-bench-") as root:
        base = single_process_rate(args.steps, os.path.join(root, "single"))
        print(f"{'mode':<30}{'samples/s':>12}{'vs 1 process':>14}")
        print(f"{'single process (Estimator)':<30}{base:>12.0f}{1.0:>14.2f}", flush=True)
        for label, ps, workers in (("sync, 1 trainer (local)", 0, 0), ("sync DDP, 2 trainers", 0, 1),
                                   ("parameter server, 1 trainer", 1, 0),
                                   ("parameter server, 2 trainers", 1, 1)):
            rate = cluster_rate(args.steps, ps, workers, os.path.join(root, f"{ps}-{workers}"))
            print(f"{label:<30}{rate:>12.0f}{rate / base:>14.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
