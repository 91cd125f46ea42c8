"""Per-step time of ``Estimator.train`` relative to a hand-written PyTorch loop.

Same MLP (64-256-256-10), same data (in-memory batches of 128), same seed, so both produce
the same final weights (checked). The Estimator runs with checkpoints, summaries and log lines
off, and at RunConfig defaults (a checkpoint at start and end, summaries and log lines every
100 steps, the losses' NaN check every 100 steps and before each save).

Whole calls: ``train`` against the loop, both timed from building the model (``train`` calls
``model_fn``), in process CPU time by default (``--clock wall`` for wall time); each repeat's
ratio to its own hand loop, the order rotating between repeats; medians.

``--lockstep`` adds the steadier figures: per-step means of the two run in lockstep (one hand
step after each Estimator step, both on the thread's CPU clock), the fixed cost of one
``train`` call, and the whole call they add up to at ``--steps``.

    OMP_NUM_THREADS=1 python benchmarks/bench_estimator_overhead.py [--steps 1000] [--repeats 5] [--lockstep]
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

    :meth:`per_step` gives means, not medians: a median leaves out whatever runs every N
    steps (summaries, log lines, the batched NaN check), which a whole run pays.
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

    def per_step(self, warmup: int) -> tuple[float, float]:
        """Mean seconds per step ``(estimator, hand loop)`` past the first ``warmup`` steps,
        over the same steps (the last hand step has no Estimator step after it)."""
        ours = self.ours[warmup:]
        hand = self.hand[warmup:warmup + len(ours)]
        return statistics.fmean(ours), statistics.fmean(hand)


def lockstep(batches, warmup: int = 50, **config_kw) -> tuple[float, float]:
    """Mean per-step CPU time ``(estimator, hand loop)``, the two run in :class:`Lockstep`.

    The hand loop trains a second copy of the model on the same batches. Fixed costs (the
    start and end checkpoints) are left out: :func:`fixed_cost` measures them.
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
    return hook.per_step(warmup)


def fixed_cost(repeats: int = 21, clock=time.process_time, **config_kw) -> float:
    """Seconds of one ``train`` call beyond its steps: a 2-step call minus 2 hand-loop steps
    (both from building the model), median of ``repeats``. At RunConfig defaults this is the
    checkpoints at start and end, the event file, the lease and the hooks' setup."""
    batches = data(2)
    estimator_loop(batches, clock=clock, **config_kw)  # first call: imports, caches
    extra = []
    for _ in range(repeats):
        ours, _ = estimator_loop(batches, clock=clock, **config_kw)
        hand, _ = hand_loop(batches, clock=clock)
        extra.append(ours - hand)
    return statistics.median(extra)


def warm_up(batches) -> None:
    """One untimed hand loop and one call of each variant. The first run in a process pays
    for warming up (and a full garbage collection of the batches just made): timed, it made
    the first repeat's ratio read 0.1-0.5."""
    hand_loop(batches)
    for kw in VARIANTS.values():
        estimator_loop(batches, **kw)


def whole_calls(batches, repeats: int, clock) -> dict[str, list[float]]:
    """Ratios ``Estimator.train`` / hand loop of whole separate runs, per variant and repeat.

    Each repeat runs the hand loop and both variants once, in an order that rotates between
    repeats (the slot in a repeat otherwise biases the result by a few percent), and divides
    by that repeat's hand loop, after :func:`warm_up`. Checks that every run ends with the
    hand loop's weights.
    """
    order = ["hand", *VARIANTS]
    warm_up(batches)
    ratios: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for r in range(repeats):
        times, reference, got = {}, None, {}
        for name in order[r % len(order):] + order[:r % len(order)]:
            if name == "hand":
                times[name], reference = hand_loop(batches, clock=clock)
            else:
                times[name], got[name] = estimator_loop(batches, clock=clock, **VARIANTS[name])
        for name, weights in got.items():
            if not all(torch.equal(reference[k], weights[k]) for k in reference):
                raise SystemExit(f"Estimator ({name}) and the hand loop diverged: not the same weights.")
            ratios[name].append(times[name] / times["hand"])
    return ratios


#: The Estimator's configurations: nothing written, and RunConfig's defaults.
VARIANTS = {"off": LEAN, "defaults": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--lockstep", action="store_true",
                        help="also: per-step means with the hand loop run in lockstep, the fixed "
                             "cost of a train call, and the whole call that they add up to")
    args = parser.parse_args()
    if args.steps < 100 or args.repeats < 1:
        parser.error(f"--steps must be >= 100 and --repeats >= 1, got {args.steps} and {args.repeats}.")
    clock = {"cpu": time.process_time, "wall": time.perf_counter}[args.clock]
    logging.getLogger("learnrun").setLevel(logging.WARNING)
    batches = data(args.steps)
    if args.lockstep:
        for name, kw in VARIANTS.items():
            got = [lockstep(batches, **kw) for _ in range(args.repeats)]
            ratios = sorted(ours / hand for ours, hand in got)
            hand_ms = statistics.median(h for _, h in got) * 1e3
            fixed_ms = fixed_cost(clock=clock, **kw) * 1e3
            ratio = statistics.median(ratios)
            whole = (ratio * hand_ms * args.steps + fixed_ms) / (hand_ms * args.steps)
            print(f"lockstep, checkpoints+summaries {name:8s}: Estimator "
                  f"{statistics.median(o for o, _ in got) * 1e3:.3f} ms/step, hand loop "
                  f"{hand_ms:.3f} ms/step, ratio {ratio:.3f} ({', '.join(f'{r:.3f}' for r in ratios)}); "
                  f"fixed cost {fixed_ms:.1f} ms; so a {args.steps}-step call: {whole:.3f}", flush=True)
    ratios = whole_calls(batches, args.repeats, clock)
    for name, values in ratios.items():
        print(f"Estimator.train / hand loop, whole {args.steps}-step calls, checkpoints+summaries "
              f"{name:8s}: {statistics.median(values):.3f} ({', '.join(f'{r:.3f}' for r in sorted(values))}; "
              f"{args.clock} time, same final weights; separate runs scatter by several %, "
              "use --lockstep to tell 1.02 from 1.04)")


if __name__ == "__main__":
    main()
