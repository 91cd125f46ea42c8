"""Per-step time of ``Estimator.train`` relative to a hand-written PyTorch loop.

Same MLP (64-256-256-10), same data (in-memory batches of 128), same seed, so both produce
the same final weights (checked). Prints ms/step and the ratio for the Estimator with
checkpoints and summaries off, and at RunConfig defaults (a checkpoint at start and end,
summaries and log lines every 100 steps, a NaN check per step).

Both are timed from building the model (``Estimator.train`` calls ``model_fn``), in process
CPU time by default (one thread; ``--clock wall`` for wall time); medians of interleaved repeats.

    OMP_NUM_THREADS=1 python benchmarks/bench_estimator_overhead.py [--steps 600] [--repeats 5] [--lockstep]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time

import torch

from learnrun.config.run_config import RunConfig
from learnrun.estimator.estimator import Estimator
from learnrun.estimator.spec import EstimatorSpec
from learnrun.hooks import SessionRunHook


def build():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                 torch.nn.ReLU(), torch.nn.Linear(256, 10))
    return module, torch.optim.SGD(module.parameters(), lr=0.01)


def data(steps: int):
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(steps, 128, 64, generator=g)
    ys = torch.randint(0, 10, (steps, 128), generator=g)
    return [(xs[i], ys[i]) for i in range(steps)]


#: RunConfig without checkpoints, summaries or log lines.
LEAN = dict(save_checkpoints_steps=None, save_checkpoints_secs=None, save_summary_steps=0,
            log_step_count_steps=None)


def hand_loop(batches, clock=time.perf_counter):
    # Timed from building the model, as Estimator.train's time includes calling model_fn.
    start = clock()
    module, optimizer = build()
    loss_fn = torch.nn.functional.cross_entropy
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(module(x), y)
        loss.backward()
        optimizer.step()
    elapsed = clock() - start
    return elapsed, module.state_dict()


def estimator_loop(batches, clock=time.perf_counter, **config_kw):
    def model_fn():
        module, optimizer = build()
        return EstimatorSpec(module=module, loss_fn=torch.nn.functional.cross_entropy,
                             optimizer=optimizer)

    class KeepWeights(SessionRunHook):
        def end(self, session):
            self.weights = {k: v.clone() for k, v in session.module.state_dict().items()}

    keep = KeepWeights()
    with tempfile.TemporaryDirectory() as model_dir:
        est = Estimator(model_fn, config=RunConfig(model_dir=model_dir, device="cpu", **config_kw))
        start = clock()
        est.train(lambda: batches, steps=len(batches), hooks=[keep])
        elapsed = clock() - start
    return elapsed, keep.weights


class Lockstep(SessionRunHook):
    """After each Estimator step, one step of a hand-written loop (``hand_step()``), both timed.

    Both are timed with the thread's CPU clock: the Estimator's step is the time from the end
    of one ``after_run`` to the start of the next (input, hooks, forward, backward, update),
    the hand step the time inside ``after_run``. Both see the machine in the same state at
    nearly the same moment, so their ratio holds steady on a shared machine.
    """

    def __init__(self, hand_step) -> None:
        self.hand_step = hand_step
        self.ours: list[float] = []
        self.hand: list[float] = []
        self.last: float | None = None

    def after_run(self, run_context, run_values) -> None:
        now = time.thread_time()
        if self.last is not None:
            self.ours.append(now - self.last)
        self.hand_step()
        self.hand.append(time.thread_time() - now)
        self.last = time.thread_time()

    def medians(self, warmup: int) -> tuple[float, float]:
        """Median seconds per step ``(estimator, hand loop)`` past the first ``warmup`` steps."""
        return statistics.median(self.ours[warmup:]), statistics.median(self.hand[warmup:])


def lockstep(batches, warmup: int = 50, **config_kw) -> tuple[float, float]:
    """Median per-step CPU time ``(estimator, hand loop)``, the two run in :class:`Lockstep`.

    The hand loop trains a second copy of the model on the same batches. Fixed costs (the
    start and end checkpoints) are left out.
    """
    hand_module, hand_opt = build()
    loss_fn = torch.nn.functional.cross_entropy
    position = [0]

    def hand_step() -> None:
        x, y = batches[position[0] % len(batches)]
        position[0] += 1
        hand_opt.zero_grad(set_to_none=True)
        loss_fn(hand_module(x), y).backward()
        hand_opt.step()

    def model_fn():
        module, optimizer = build()
        return EstimatorSpec(module=module, loss_fn=loss_fn, optimizer=optimizer)

    hook = Lockstep(hand_step)
    with tempfile.TemporaryDirectory() as model_dir:
        est = Estimator(model_fn, config=RunConfig(model_dir=model_dir, device="cpu", **config_kw))
        est.train(lambda: batches, steps=len(batches), hooks=[hook])
    return hook.medians(warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--lockstep", action="store_true",
                        help="also: per-step medians with the hand loop run in lockstep (no fixed costs)")
    args = parser.parse_args()
    clock = {"cpu": time.process_time, "wall": time.perf_counter}[args.clock]
    logging.getLogger("learnrun").setLevel(logging.WARNING)
    batches = data(args.steps)
    if args.lockstep:
        for name, kw in {"off": LEAN, "defaults": {}}.items():
            got = [lockstep(batches, **kw) for _ in range(args.repeats)]
            ratios = sorted(ours / hand for ours, hand in got)
            print(f"lockstep, checkpoints+summaries {name:8s}: Estimator "
                  f"{statistics.median(o for o, _ in got) * 1e3:.3f} ms/step, hand loop "
                  f"{statistics.median(h for _, h in got) * 1e3:.3f} ms/step, ratio "
                  f"{statistics.median(ratios):.3f} ({', '.join(f'{r:.3f}' for r in ratios)})", flush=True)
    variants = {"off": LEAN, "defaults": {}}
    hand_times, times = [], {k: [] for k in variants}
    for _ in range(args.repeats):
        t, reference = hand_loop(batches, clock=clock)
        hand_times.append(t)
        for name, kw in variants.items():
            t, weights = estimator_loop(batches, clock=clock, **kw)
            times[name].append(t)
            same = all(torch.equal(reference[k], weights[k]) for k in reference)
            if not same:
                raise SystemExit(f"Estimator ({name}) and the hand loop diverged: not the same weights.")
    hand = statistics.median(hand_times) / args.steps * 1e3
    print(f"hand-written loop: {hand:.3f} ms/step (median of {args.repeats}, {args.steps} steps, {args.clock} time)")
    for name in variants:
        ms = statistics.median(times[name]) / args.steps * 1e3
        print(f"Estimator.train, checkpoints+summaries {name:8s}: {ms:.3f} ms/step, "
              f"ratio {ms / hand:.2f} (same final weights)")


if __name__ == "__main__":
    main()
