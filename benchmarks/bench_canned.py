"""Canned estimators vs a hand-written eager loop (and TensorFlow's ``tf.estimator``).

Two workloads, the same data, split and hyper-parameters for every runner:

* ``digits``: the 1797 8x8 digits shipped with learnrun (80/20 split), hidden [64, 32],
  Adam 0.003, batch 64. Per-step cost with the fixed costs cancelled:
  ``(t(5000 steps) - t(1000 steps)) / 4000``.
* ``large``: 200k rows x 64 float features, 10 classes from a fixed random teacher, hidden
  [256, 128], Adam 0.003, batch 256, 3000 steps: the whole ``train`` call.

Models: ``dnn`` (DNNClassifier), ``linear`` (LinearClassifier), ``combined``
(DNNLinearCombinedClassifier, both parts on the same column), all with Adam 0.003.
Runners: ``raw`` (the best hand-written eager loop: tensors indexed directly, Adam with
``fused=True``), ``learnrun`` (the canned estimator over ``numpy_input_fn`` at RunConfig
defaults: checkpoints, summaries and log lines), ``compile`` (the same with
``RunConfig(compile=True)``), and ``tf`` (``benchmarks/peers/tf_canned.py`` run in the
TensorFlow venv given by ``--tf-venv`` or ``LEARNRUN_TF_VENV``; skipped with a note when absent).
Repeats are interleaved; the table holds medians and each runner's test accuracy. Runs are
timed in process CPU time by default (``--clock wall`` for wall-clock time): every runner
uses one thread, and CPU time stays meaningful on a machine shared with other jobs.

    OMP_NUM_THREADS=1 python benchmarks/bench_canned.py [--quick] [--repeats 3] [--tf-venv DIR]
    OMP_NUM_THREADS=1 python benchmarks/bench_canned.py --lockstep 3000 [--workloads digits]

``--lockstep STEPS`` measures differently (see :func:`run_lockstep`): one raw step after each
learnrun step, both timed; the steadiest ratio on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
LR = 0.003
WORKLOADS = {
    "digits": {"hidden": [64, 32], "batch": 64, "steps": (1000, 5000), "classes": 10},
    "large": {"hidden": [256, 128], "batch": 256, "steps": (3000,), "classes": 10},
}
QUICK_STEPS = {"digits": (200, 1000), "large": (300,)}
MODELS = ("dnn", "linear", "combined")
#: What a run is timed with: process CPU time (the default: robust on a shared machine, and
#: every runner is single-threaded) or wall-clock time. ``set_clock`` changes it.
CLOCK: list[Callable[[], float]] = [time.process_time]


def set_clock(name: str) -> None:
    """``"cpu"`` (process CPU time) or ``"wall"``."""
    CLOCK[0] = {"cpu": time.process_time, "wall": time.perf_counter}[name]
#: RunConfig of the ``lean`` runner: no summaries or log lines, one checkpoint at the end.
LEAN = {"save_checkpoints_steps": 10**9, "save_checkpoints_secs": None, "save_summary_steps": 0,
        "log_step_count_steps": None}


def load_workload(name: str) -> dict[str, np.ndarray]:
    """Train/test arrays of a workload (float32 features, int64 labels)."""
    if name == "digits":
        from learnrun.examples.common import load_digits, train_test_split

        x, y = load_digits()
        train, test = train_test_split(len(x), 0.2, seed=0)
        return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}
    rng = np.random.default_rng(0)
    n, d, k = 200_000, 64, WORKLOADS["large"]["classes"]
    x = rng.standard_normal((n + 20_000, d), dtype=np.float32)
    teacher = rng.standard_normal((d, k), dtype=np.float32)
    hidden = np.maximum(x @ teacher / np.sqrt(d), 0) - 0.5 * (x @ teacher[:, ::-1] / np.sqrt(d)) ** 2
    y = np.argmax(hidden + 0.3 * rng.standard_normal((len(x), k), dtype=np.float32), axis=1).astype(np.int64)
    return {"x_train": x[:n], "y_train": y[:n], "x_test": x[n:], "y_test": y[n:]}


# -- the hand-written loop --------------------------------------------------------------------
class _RawModel(torch.nn.Module):
    def __init__(self, model: str, d: int, hidden: list[int], k: int) -> None:
        super().__init__()
        self.dnn = self.linear = None
        if model in ("dnn", "combined"):
            layers: list[torch.nn.Module] = []
            width = d
            for units in hidden:
                layers += [torch.nn.Linear(width, units), torch.nn.ReLU()]
                width = units
            layers.append(torch.nn.Linear(width, k))
            self.dnn = torch.nn.Sequential(*layers)
        if model in ("linear", "combined"):
            self.linear = torch.nn.Linear(d, k)
        for m in self.modules():
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.xavier_uniform_(m.weight)
                torch.nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dnn is None:
            return self.linear(x)
        return self.dnn(x) if self.linear is None else self.dnn(x) + self.linear(x)


class RawLoop:
    """The best eager loop: tensors indexed directly, fused Adam, one step per :meth:`step`."""

    def __init__(self, data: dict, model: str, workload: str) -> None:
        spec = WORKLOADS[workload]
        torch.manual_seed(0)
        self.x = torch.from_numpy(data["x_train"])
        self.y = torch.from_numpy(data["y_train"])
        self.net = _RawModel(model, self.x.shape[1], spec["hidden"], spec["classes"])
        self.opt = torch.optim.Adam(self.net.parameters(), lr=LR, fused=True)
        self.batch = spec["batch"]
        self.generator = torch.Generator().manual_seed(0)
        self.perm, self.pos = torch.randperm(len(self.x), generator=self.generator), 0

    def step(self) -> torch.Tensor:
        batch, n = self.batch, len(self.x)
        if self.pos + batch > n:
            self.perm, self.pos = torch.randperm(n, generator=self.generator), 0
        idx = self.perm[self.pos:self.pos + batch]
        self.pos += batch
        self.opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(self.net(self.x[idx]), self.y[idx])
        loss.backward()
        self.opt.step()
        return loss

    def accuracy(self, data: dict) -> float:
        with torch.no_grad():
            pred = self.net(torch.from_numpy(data["x_test"])).argmax(1).numpy()
        return float((pred == data["y_test"]).mean())


def run_raw(data: dict, model: str, workload: str, steps: int) -> dict[str, float]:
    """``steps`` of :class:`RawLoop`, timed from building the model; the loss read once at the end."""
    start = CLOCK[0]()
    loop = RawLoop(data, model, workload)
    for _ in range(steps):
        loss = loop.step()
    loss.item()
    seconds = CLOCK[0]() - start
    return {"seconds": seconds, "accuracy": loop.accuracy(data)}


# -- learnrun's canned estimators -------------------------------------------------------------
def make_estimator(model: str, workload: str, model_dir: str, **config_kw: Any) -> Any:
    from learnrun import feature_column as fc
    from learnrun.canned import DNNClassifier, DNNLinearCombinedClassifier, LinearClassifier
    from learnrun.config.run_config import RunConfig

    spec = WORKLOADS[workload]
    config = RunConfig(model_dir=model_dir, device="cpu", tf_random_seed=0, **config_kw)
    cols = [fc.numeric_column("x", shape=64)]
    if model == "dnn":
        return DNNClassifier(spec["hidden"], cols, n_classes=spec["classes"], optimizer="Adam",
                             learning_rate=LR, config=config)
    if model == "linear":
        return LinearClassifier(cols, n_classes=spec["classes"], optimizer="Adam",
                                learning_rate=LR, config=config)
    return DNNLinearCombinedClassifier(
        linear_feature_columns=cols, linear_optimizer="Adam", linear_learning_rate=LR,
        dnn_feature_columns=cols, dnn_optimizer="Adam", dnn_learning_rate=LR,
        dnn_hidden_units=spec["hidden"], n_classes=spec["classes"], config=config)


def train_input_fn(data: dict, workload: str) -> Any:
    """``numpy_input_fn`` over the training rows: the workload's batch, shuffled, no end."""
    from learnrun.inputs import numpy_input_fn

    return numpy_input_fn({"x": data["x_train"]}, data["y_train"],
                          batch_size=WORKLOADS[workload]["batch"], num_epochs=None, shuffle=True)


def run_learnrun(data: dict, model: str, workload: str, steps: int, **config_kw: Any) -> dict[str, float]:
    """``Estimator.train(steps)`` of the canned model, timed around the call."""
    from learnrun.inputs import numpy_input_fn

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as model_dir:
        est = make_estimator(model, workload, model_dir, **config_kw)
        train_fn = train_input_fn(data, workload)
        start = CLOCK[0]()
        est.train(train_fn, steps=steps)
        seconds = CLOCK[0]() - start
        test_fn = numpy_input_fn({"x": data["x_test"]}, batch_size=1024, num_epochs=1, shuffle=False)
        pred = np.concatenate([p["class_ids"].reshape(-1) for p in
                               est.predict(test_fn, predict_keys=["class_ids"], yield_single_examples=False)])
    return {"seconds": seconds, "accuracy": float((pred == data["y_test"]).mean())}


def run_lockstep(data: dict, model: str, workload: str, steps: int, warmup: int = 50,
                 **config_kw: Any) -> dict[str, float]:
    """Per-step CPU time of the canned estimator and of :class:`RawLoop`, in lockstep.

    A hook runs one raw step after each of the estimator's steps and times both with the
    thread's CPU clock, so their ratio stays steady on a machine shared with other jobs, where
    separate runs swing by 10% or more. The estimator's step is the time from the end of one
    ``after_run`` to the start of the next (input, hooks, forward, backward, update): the
    hook's own call counts in it, a slight bias against the estimator. Returns the means past
    ``warmup`` steps (``learnrun_us``, ``raw_us``; means, so that the work done every N steps
    counts) and their ratio.
    """
    from learnrun.hooks import SessionRunHook

    class Lockstep(SessionRunHook):
        def __init__(self, raw_step: Callable[[], None]) -> None:
            self.raw_step = raw_step
            self.ours: list[float] = []
            self.raw: list[float] = []
            self.last: float | None = None

        def after_run(self, run_context, run_values) -> None:
            now = time.thread_time()
            if self.last is not None:
                self.ours.append(now - self.last)
            self.raw_step()
            self.raw.append(time.thread_time() - now)
            self.last = time.thread_time()

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as model_dir:
        est = make_estimator(model, workload, model_dir, **config_kw)
        hook = Lockstep(RawLoop(data, model, workload).step)
        est.train(train_input_fn(data, workload), steps=steps + warmup, hooks=[hook])
    # the same steps of both (the last raw step has no estimator step after it)
    ours = statistics.fmean(hook.ours[warmup:]) * 1e6
    raw = statistics.fmean(hook.raw[warmup:warmup + len(hook.ours[warmup:])]) * 1e6
    return {"learnrun_us": ours, "raw_us": raw, "ratio": ours / raw}


# -- TensorFlow (a subprocess in its own venv) ------------------------------------------------
def tf_python(venv: str | None) -> str | None:
    """The python of the TensorFlow venv, or None when it is not there."""
    venv = venv or os.environ.get("LEARNRUN_TF_VENV")
    if not venv:
        return None
    python = os.path.join(venv, "bin", "python")
    return python if os.path.exists(python) else None


def run_tf(python: str, data_path: str, model: str, workload: str, steps: int) -> dict[str, float]:
    """One ``tf_canned.py`` run; ``seconds`` is CPU or wall time as :data:`CLOCK` is."""
    spec = WORKLOADS[workload]
    cmd = [python, os.path.join(HERE, "peers", "tf_canned.py"), "--data", data_path, "--model", model,
           "--steps", str(steps), "--batch", str(spec["batch"]), "--lr", str(LR),
           "--classes", str(spec["classes"]), "--hidden", ",".join(map(str, spec["hidden"]))]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"tf_canned.py failed ({out.returncode}): {out.stderr[-2000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if CLOCK[0] is time.perf_counter:
        got["seconds"] = got["wall"]
    return got


# -- the table --------------------------------------------------------------------------------
def measure(workloads: list[str], models: list[str], runners: list[str], repeats: int,
            quick: bool, tf_venv: str | None = None, log: Callable[[str], None] = print) -> list[dict]:
    """Rows ``{workload, model, runner, value, unit, accuracy}`` (medians over interleaved repeats).

    ``value`` is ms/step with fixed costs cancelled for digits, seconds of ``train`` for large.
    """
    python = tf_python(tf_venv) if "tf" in runners else None
    if "tf" in runners and python is None:
        log("note: TensorFlow venv not found (--tf-venv / LEARNRUN_TF_VENV): tf.estimator skipped")
        runners = [r for r in runners if r != "tf"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workload in workloads:
            data = load_workload(workload)
            data_path = os.path.join(tmp, f"{workload}.npz")
            if python is not None:
                np.savez(data_path, **data)
            step_counts = QUICK_STEPS[workload] if quick else WORKLOADS[workload]["steps"]
            for model in models:
                samples: dict[str, dict[int, list[float]]] = {r: {s: [] for s in step_counts} for r in runners}
                accuracy: dict[str, list[float]] = {r: [] for r in runners}
                for _ in range(repeats):
                    for steps in step_counts:
                        for runner in runners:
                            if runner == "raw":
                                got = run_raw(data, model, workload, steps)
                            elif runner == "learnrun":
                                got = run_learnrun(data, model, workload, steps)
                            elif runner == "lean":
                                got = run_learnrun(data, model, workload, steps, **LEAN)
                            elif runner == "compile":
                                got = run_learnrun(data, model, workload, steps, compile=True)
                            elif runner == "tf":
                                got = run_tf(python, data_path, model, workload, steps)
                            else:
                                raise ValueError(f"unknown runner {runner!r}")
                            samples[runner][steps].append(got["seconds"])
                            if steps == step_counts[-1]:
                                accuracy[runner].append(got["accuracy"])
                for runner in runners:
                    med = {s: statistics.median(v) for s, v in samples[runner].items()}
                    if len(step_counts) == 2:
                        lo, hi = step_counts
                        value, unit = (med[hi] - med[lo]) / (hi - lo) * 1e3, "ms/step"
                    else:
                        value, unit = med[step_counts[0]], "s"
                    rows.append({"workload": workload, "model": model, "runner": runner,
                                 "value": value, "unit": unit,
                                 "accuracy": statistics.median(accuracy[runner])})
                    log(f"{workload:7s} {model:9s} {runner:9s} {value:8.3f} {unit:8s} "
                        f"acc {rows[-1]['accuracy']:.3f}")
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table: each runner's value and its ratio to the raw loop."""
    raw = {(r["workload"], r["model"]): r["value"] for r in rows if r["runner"] == "raw"}
    lines = ["| workload | model | runner | value | vs raw loop | test accuracy |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        base = raw.get((r["workload"], r["model"]))
        ratio = f"{r['value'] / base:.2f}x" if base else "-"
        lines.append(f"| {r['workload']} | {r['model']} | {r['runner']} | {r['value']:.3f} {r['unit']} "
                     f"| {ratio} | {r['accuracy']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", default="digits,large")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--runners", default="raw,learnrun,compile,tf")
    parser.add_argument("--tf-venv", default=None, help="venv with tensorflow-cpu 2.15 (or LEARNRUN_TF_VENV)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--lockstep", type=int, default=0, metavar="STEPS",
                        help="instead: per-step means of learnrun and the raw loop in lockstep "
                             "(run_lockstep), STEPS steps per model and workload, each repeat")
    args = parser.parse_args()
    set_clock(args.clock)
    torch.set_num_threads(1)
    logging.getLogger("learnrun").setLevel(logging.WARNING)
    if args.lockstep:
        print("| workload | model | raw us/step | learnrun us/step | learnrun / raw (median of repeats) |")
        print("|---|---|---|---|---|")
        for workload in args.workloads.split(","):
            data = load_workload(workload)
            for model in args.models.split(","):
                got = [run_lockstep(data, model, workload, args.lockstep) for _ in range(args.repeats)]
                ratios = sorted(g["ratio"] for g in got)
                print(f"| {workload} | {model} | {statistics.median(g['raw_us'] for g in got):.1f} | "
                      f"{statistics.median(g['learnrun_us'] for g in got):.1f} | "
                      f"{statistics.median(ratios):.3f}x ({', '.join(f'{r:.3f}' for r in ratios)}) |",
                      flush=True)
        return
    rows = measure(args.workloads.split(","), args.models.split(","), args.runners.split(","),
                   1 if args.quick else args.repeats, args.quick, args.tf_venv,
                   log=lambda s: print(s, file=sys.stderr, flush=True))
    print(table(rows))


if __name__ == "__main__":
    main()
