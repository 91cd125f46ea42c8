"""Time of ``Estimator.train`` relative to a hand-written PyTorch loop.

Same MLP (64-256-256-10), same data (in-memory batches of 128), same seed, so both produce
the same final weights (checked). The Estimator runs with checkpoints, summaries and log lines
off, and at RunConfig defaults (a checkpoint at start and end, summaries and log lines every
100 steps, the losses' NaN check every 100 steps and before each save).

Whole calls: ``train`` against the loop, both timed from building the model (``train`` calls
``model_fn``), in process CPU time by default (``--clock wall`` for wall time); each Estimator
run divided by the mean of the hand runs just before and after it; medians.

``--lockstep`` adds the steadier figures (:func:`lockstep`): the hand loop runs inside the
Estimator's input, one hand step before each batch is handed over, so both see the machine in
the same state at nearly the same moment. Per step: the means of the two. Whole call: the
``train`` call's CPU time less the hand steps run inside it, against the hand loop's (model
built, then its steps).

    OMP_NUM_THREADS=1 python benchmarks/bench_estimator_overhead.py [--steps 1000] [--repeats 5] [--lockstep]
"""

from __future__ import annotations

import argparse
import functools
import logging
import statistics
import tempfile
import time
from typing import NamedTuple

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


class LockstepResult(NamedTuple):
    """Seconds of CPU time: per-step means past the warm-up, and whole calls."""

    step: float  #: the Estimator's mean step
    hand_step: float  #: the hand loop's mean step, over the same steps
    call: float  #: the ``train`` call, the hand steps run inside it left out
    hand_call: float  #: the hand loop: building its model, then every step


class HandSteps:
    """A hand-written loop run in lockstep inside another loop's input.

    Iterating yields ``batches``; before each batch is handed over, one hand step runs (its
    own copy of the model, on a copy of that batch, so that both loops read their batch from
    memory), timed on the thread's CPU clock. ``fetched``: when each fetch began; ``hand``:
    each hand step's time. The hand model's building is timed too (``build``).
    """

    def __init__(self, batches) -> None:
        self.batches = batches
        self.copies = [(x.clone(), y.clone()) for x, y in batches]
        start = time.thread_time()
        self.module, self.optimizer = build()
        self.build = time.thread_time() - start
        self.fetched: list[float] = []
        self.hand: list[float] = []

    def __iter__(self):
        loss_fn = torch.nn.functional.cross_entropy
        for (x, y), (hand_x, hand_y) in zip(self.batches, self.copies, strict=True):
            begin = time.thread_time()
            self.fetched.append(begin)
            self.optimizer.zero_grad(set_to_none=True)
            loss_fn(self.module(hand_x), hand_y).backward()
            self.optimizer.step()
            self.hand.append(time.thread_time() - begin)
            yield x, y

    def result(self, call: float, warmup: int) -> LockstepResult:
        """The :class:`LockstepResult` of a run whose whole call took ``call`` seconds."""
        # between fetches i and i + 1: hand step i, then the other loop's step i + 1
        n = len(self.fetched) - 1
        ours = [self.fetched[i + 1] - self.fetched[i] - self.hand[i] for i in range(warmup, n)]
        return LockstepResult(statistics.fmean(ours), statistics.fmean(self.hand[warmup:n]),
                              call - sum(self.hand), self.build + sum(self.hand))


def lockstep(batches, warmup: int = 50, **config_kw) -> LockstepResult:
    """``Estimator.train`` with a hand-written loop run in lockstep inside its input
    (:class:`HandSteps`), so both see the machine in the same state at nearly the same moment.

    The Estimator's step is the time between two fetches, less the hand step. Nothing of the
    benchmark runs in the Estimator's hooks, so it runs its true default path (a timing hook
    would be called at every step, where the default hooks idle). The whole call is timed on
    the process's CPU clock (a background thread of the Estimator would count), the hand
    steps on the thread's; the hand loop's model is built first and timed, as ``train``'s
    time includes calling ``model_fn``.
    """
    hand = HandSteps(batches)

    def model_fn():
        module, optimizer = build()
        return EstimatorSpec(module=module, loss_fn=torch.nn.functional.cross_entropy,
                             optimizer=optimizer)

    with tempfile.TemporaryDirectory() as model_dir:
        est = Estimator(model_fn, config=RunConfig(model_dir=model_dir, device="cpu", **config_kw))
        start = time.process_time()
        est.train(lambda: hand, steps=len(batches))
        call = time.process_time() - start
    return hand.result(call, warmup)


def median_ratios(results: list[LockstepResult]) -> tuple[float, float]:
    """Medians over repeats of ``(per-step ratio, whole-call ratio)`` to the hand loop."""
    return (statistics.median(r.step / r.hand_step for r in results),
            statistics.median(r.call / r.hand_call for r in results))


def lockstep_same(batches, warmup: int = 50) -> LockstepResult:
    """:func:`lockstep` with a second hand loop in the Estimator's place (an A/A run): how far
    from 1 the method itself reads. On this machine 0.991-0.994: the loop in the Estimator's
    place, running right after the hand step, is favoured by 0.6-0.9%, so the benchmark also
    prints the Estimator's ratios divided by the A/A's."""
    hand = HandSteps(batches)
    start = time.process_time()
    hand_loop(hand, clock=time.process_time)
    return hand.result(time.process_time() - start, warmup)


def warm_up(batches) -> None:
    """One untimed hand loop and one call of each variant. The first run in a process pays
    for warming up (and a full garbage collection of the batches just made): timed, it made
    the first repeat's ratio read 0.1-0.5."""
    hand_loop(batches)
    for kw in VARIANTS.values():
        estimator_loop(batches, **kw)


def whole_calls(batches, repeats: int, clock) -> dict[str, list[float]]:
    """Ratios ``Estimator.train`` / hand loop of whole separate runs, per variant and repeat.

    After :func:`warm_up`, the hand loop runs between every two Estimator runs (hand, off,
    hand, defaults, hand, off, ...), and each Estimator run is divided by the mean of the two
    hand runs around it: the machine's speed drifts over seconds, and a hand run on each side
    cancels a steady drift (dividing by one hand run of a rotating order read defaults 1.03
    where this reads 1.02, both over 30-40 repeats). Checks that every run ends with the hand
    loop's weights.
    """
    warm_up(batches)
    ratios: dict[str, list[float]] = {name: [] for name in VARIANTS}
    before, reference = hand_loop(batches, clock=clock)
    for _ in range(repeats):
        for name, kw in VARIANTS.items():
            ours, weights = estimator_loop(batches, clock=clock, **kw)
            after, _ = hand_loop(batches, clock=clock)
            if not all(torch.equal(reference[k], weights[k]) for k in reference):
                raise SystemExit(f"Estimator ({name}) and the hand loop diverged: not the same weights.")
            ratios[name].append(ours / ((before + after) / 2))
            before = after
    return ratios


#: The Estimator's configurations: nothing written, and RunConfig's defaults.
VARIANTS = {"off": LEAN, "defaults": {}}
#: The lockstep's A/A run: a hand loop in the Estimator's place.
SAME = "a second hand loop (A/A)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--lockstep", action="store_true",
                        help="also: per-step means and whole calls with the hand loop run in "
                             "lockstep inside the Estimator's input")
    args = parser.parse_args()
    if args.steps < 100 or args.repeats < 1:
        parser.error(f"--steps must be >= 100 and --repeats >= 1, got {args.steps} and {args.repeats}.")
    clock = {"cpu": time.process_time, "wall": time.perf_counter}[args.clock]
    logging.getLogger("learnrun").setLevel(logging.WARNING)
    batches = data(args.steps)
    if args.lockstep:
        runs = {SAME: lockstep_same,
                **{f"checkpoints+summaries {name}": functools.partial(lockstep, **kw)
                   for name, kw in VARIANTS.items()}}
        got: dict[str, list[LockstepResult]] = {name: [] for name in runs}
        for run in runs.values():  # untimed: the first call in a process pays for imports
            run(batches[:100])
        for _ in range(args.repeats):  # interleaved
            for name, run in runs.items():
                got[name].append(run(batches))
        same_step, same_call = median_ratios(got[SAME])  # the method's own reading, divided out
        for name, results in got.items():
            steps = sorted(r.step / r.hand_step for r in results)
            calls = sorted(r.call / r.hand_call for r in results)
            step, call = median_ratios(results)
            corrected = "" if name == SAME else (
                f"; over the A/A: per step {step / same_step:.3f}, whole call "
                f"{call / same_call:.3f}")
            print(f"lockstep, {name:31s}: per step {step:.3f} "
                  f"({', '.join(f'{r:.3f}' for r in steps)}; it "
                  f"{statistics.median(r.step for r in results) * 1e3:.3f} ms/step, hand loop "
                  f"{statistics.median(r.hand_step for r in results) * 1e3:.3f} ms/step); whole "
                  f"{args.steps}-step call {call:.3f} "
                  f"({', '.join(f'{r:.3f}' for r in calls)}; it took "
                  f"{statistics.median(r.call - r.hand_call for r in results) * 1e3:.1f} ms more)"
                  f"{corrected}", flush=True)
    ratios = whole_calls(batches, args.repeats, clock)
    for name, values in ratios.items():
        print(f"Estimator.train / hand loop, whole {args.steps}-step calls, checkpoints+summaries "
              f"{name:8s}: {statistics.median(values):.3f} ({', '.join(f'{r:.3f}' for r in sorted(values))}; "
              f"{args.clock} time, same final weights; separate runs scatter by several %, "
              "use --lockstep to tell 1.02 from 1.04)")


if __name__ == "__main__":
    main()
