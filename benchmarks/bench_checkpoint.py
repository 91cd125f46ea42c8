"""Training stall of checkpoint saves: synchronous vs asynchronous; checksum throughput.

Usage: ``python benchmarks/bench_checkpoint.py [--mb 130] [--every 4] [--saves 6] [--repeats 2]``.

A model of ``--mb`` MB of float32 weights (square ``Linear`` layers, SGD) trains on random
batches with one torch thread; every ``--every`` steps ``learnrun.model_dir``'s
``CheckpointManager`` saves it into a temporary model directory, synchronously (``save``) or
asynchronously (``save_async``: copy to CPU memory, write in a background thread). The same
steps also run with no save at all. Two figures per mode, medians over ``--repeats``
interleaved runs:

* **stall**: the time the training loop is blocked in the save call per save (for async:
  the CPU copy, plus waiting for the previous save when saves come faster than the disk);
* **overhead**: ``(wall time with saves - wall time without) / saves``, which also counts
  the writer thread competing for the cores, memory bandwidth and the GIL. On a shared
  2-core machine it is noisy; read it on a quiet one.

The last line compares async with sync: the async stall must be at most 25% of the sync one
(exit status 1 otherwise). Also printed: ``xxh3_64`` throughput (the checksum ``meta.json``
records).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch

from learnrun.model_dir import checkpoints as ckpt


def hashing_gbps(mb: int = 256) -> float:
    data = torch.randint(0, 255, (mb << 20,), dtype=torch.uint8).numpy()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        ckpt.checksum(data)
        best = min(best, time.perf_counter() - start)
    return data.nbytes / best / 1e9


def build(mb: float, width: int = 2048):
    per_layer = width * width * 4 + width * 4
    layers = max(1, round(mb * 1e6 / per_layer))
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return model, opt, size, width


def train_and_save(manager, mode: str, model, opt, x, steps: int, every: int) -> tuple[float, float]:
    """``steps`` SGD steps on ``x``, saving through ``manager`` every ``every`` steps.

    ``mode``: ``"sync"`` (``save``), ``"async"`` (``save_async``) or ``"none"``. Returns
    ``(wall seconds of the steps, seconds spent inside the save calls)``; waiting for the last
    asynchronous save after the final step is not counted (training is over, not a stall).
    """
    in_calls = 0.0
    start = time.perf_counter()
    for step in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        opt.step()
        if mode != "none" and step % every == 0:
            t = time.perf_counter()
            state = {"optimizer": opt.state_dict(), "global_step": step}
            if mode == "sync":
                manager.save(step, model.state_dict(), state)
            else:
                manager.save_async(step, model.state_dict(), state)
            in_calls += time.perf_counter() - t
    t = time.perf_counter()
    manager.wait()
    return time.perf_counter() - start - (time.perf_counter() - t), in_calls


def run(mode: str, model, opt, width: int, steps: int, every: int, batch: int) -> tuple[float, float]:
    """(wall seconds of ``steps`` steps, seconds spent inside the save calls)."""
    model_dir = tempfile.mkdtemp(prefix="bench-ckpt-")
    manager = ckpt.CheckpointManager(model_dir, keep_checkpoint_max=2)
    try:
        return train_and_save(manager, mode, model, opt, torch.randn(batch, width), steps, every)
    finally:
        manager.wait()
        shutil.rmtree(model_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=130, help="model size in MB (float32)")
    parser.add_argument("--every", type=int, default=4, help="save every N steps")
    parser.add_argument("--saves", type=int, default=6, help="saves per run")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    print(f"xxh3_64 checksum: {hashing_gbps():.2f} GB/s")
    model, opt, size, width = build(args.mb)
    steps = args.every * args.saves
    print(f"model: {size / 1e6:.0f} MB of weights; {steps} steps, a save every {args.every} "
          f"({args.saves} saves); torch threads 1; tmp dir {tempfile.gettempdir()}")
    run("none", model, opt, width, args.every, args.every + 1, args.batch)  # warm-up
    walls: dict[str, list[float]] = {"none": [], "sync": [], "async": []}
    calls: dict[str, list[float]] = {"sync": [], "async": []}
    for _ in range(args.repeats):
        for mode in ("none", "sync", "async"):
            wall, in_calls = run(mode, model, opt, width, steps, args.every, args.batch)
            walls[mode].append(wall)
            if mode in calls:
                calls[mode].append(in_calls / args.saves)
    base = statistics.median(walls["none"])
    step_ms = base / steps * 1e3
    stall = {m: statistics.median(calls[m]) for m in calls}
    overhead = {m: (statistics.median(walls[m]) - base) / args.saves for m in calls}
    print(f"training step: {step_ms:.0f} ms; {args.every} steps between saves "
          f"= {step_ms * args.every:.0f} ms")
    print(f"sync : stall {stall['sync'] * 1e3:7.1f} ms per save ({size / 1e9 / stall['sync']:.2f} "
          f"GB/s written), overhead {overhead['sync'] * 1e3:7.1f} ms")
    print(f"async: stall {stall['async'] * 1e3:7.1f} ms per save (CPU copy "
          f"{size / 1e9 / stall['async']:.2f} GB/s), overhead {overhead['async'] * 1e3:7.1f} ms")
    ratio = stall["async"] / stall["sync"]
    ok = ratio <= 0.25
    print(f"async/sync stall ratio: {ratio:.2f} ({'OK' if ok else 'FAIL'}: must be <= 0.25); "
          f"overhead ratio {overhead['async'] / overhead['sync'] if overhead['sync'] > 0 else float('nan'):.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
