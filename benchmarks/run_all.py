"""learnrun's benchmark suite: one entry point, one table of ratios.

    GLOO_SOCKET_IFNAME=lo OMP_NUM_THREADS=1 python benchmarks/run_all.py [--quick]
        [--tf-venv DIR] [--lightning-venv DIR] [--output docs/benchmarks.md]

Sections (each a row group of the table; repeats interleaved, medians reported):

1. trainer overhead: MLP 64-256-256-10, batch 128, SGD (``bench_estimator_overhead.py``'s
   model and data): the hand-written loop vs ``Estimator.train`` lean (no checkpoints, summaries
   or log lines) and at RunConfig defaults, vs Lightning lean and at Trainer defaults (a
   subprocess in the venv of ``--lightning-venv`` / ``LEARNRUN_LIGHTNING_VENV``; skipped with a
   note otherwise). Process CPU time of whole runs; then learnrun in lockstep with the hand
   loop, which runs inside the Estimator's input (per-step means, and whole calls), and the
   same lockstep's A/A run, by which learnrun's ratios are also divided.
2. canned estimators (``bench_canned.py``): raw loop vs learnrun vs ``RunConfig(compile=True)``
   vs TensorFlow's ``tf.estimator`` (``--tf-venv`` / ``LEARNRUN_TF_VENV``). Process CPU time.
3. checkpoints: ``bench_checkpoint.py`` when it exists (save GB/s, async stall), else a row
   marked "not measured".
4. distributed: ``bench_distributed.py`` (DDP and parameter servers vs one process; wall time)
   and ``bench_ps_transport.py`` (one parameter-server round trip, learnrun's socket transport
   vs TensorPipe RPC).
5. serving: ``bench_serving.py`` (requests/s of ``learnrun model-server``).
6. ``import learnrun`` over ``import torch`` (median of fresh interpreters).

``--quick`` is a smoke run (well under 2 minutes): fewer steps, one repeat, small sections.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_canned  # noqa: E402
import bench_estimator_overhead as overhead  # noqa: E402
import torch  # noqa: E402

Row = tuple[str, str, str, str]  # section, what, value, ratio


def _venv_python(arg: str | None, env_name: str) -> str | None:
    venv = arg or os.environ.get(env_name)
    if not venv:
        return None
    python = os.path.join(venv, "bin", "python")
    return python if os.path.exists(python) else None


def _env() -> dict[str, str]:
    src = os.path.join(os.path.dirname(HERE), "src")
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME=os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
                PYTHONPATH=src + (os.pathsep + path if path else ""))


# -- 1. trainer overhead -----------------------------------------------------------------------
def trainer_overhead(quick: bool, repeats: int, lightning: str | None, notes: list[str]) -> list[Row]:
    steps = 150 if quick else 600
    batches = overhead.data(steps)
    variants = {"learnrun lean": overhead.LEAN, "learnrun defaults": {}}
    times: dict[str, list[float]] = {"raw loop": [], **{k: [] for k in variants}}
    peer: dict[str, list[float]] = {"Lightning lean": [], "Lightning defaults": []}
    overhead.warm_up(batches)
    for _ in range(repeats):
        times["raw loop"].append(overhead.hand_loop(batches, clock=time.process_time)[0])
        for name, kw in variants.items():
            times[name].append(overhead.estimator_loop(batches, clock=time.process_time, **kw)[0])
        if lightning is not None:
            out = subprocess.run([lightning, os.path.join(HERE, "peers", "lightning_mlp.py"),
                                  "--steps", str(steps)], capture_output=True, text=True,
                                 env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=""), timeout=900)
            if out.returncode:
                raise RuntimeError(f"lightning_mlp.py failed: {out.stderr[-2000:]}")
            got = json.loads(out.stdout.strip().splitlines()[-1])
            peer["Lightning lean"].append(got["lean"])
            peer["Lightning defaults"].append(got["defaults"])
    if lightning is None:
        notes.append("Lightning: no venv (--lightning-venv / LEARNRUN_LIGHTNING_VENV), not measured.")
    else:
        times.update(peer)
    raw = statistics.median(times["raw loop"])
    rows = []
    for name, values in times.items():
        ms = statistics.median(values) / steps * 1e3
        rows.append(("trainer overhead (MLP 64-256-256-10, b128, SGD)", name, f"{ms:.3f} ms/step",
                     f"{statistics.median(values) / raw:.2f}x raw"))
    # the steadier figures: the hand loop run in lockstep inside the Estimator's input, and
    # the same with a second hand loop in the Estimator's place (A/A), by which they are divided
    same = [overhead.lockstep_same(batches) for _ in range(repeats)]
    same_step, same_call = overhead.median_ratios(same)
    rows.append(("trainer overhead (MLP 64-256-256-10, b128, SGD)", "a second raw loop (A/A), in lockstep",
                 f"{statistics.median(r.step for r in same) * 1e3:.3f} ms/step",
                 f"{same_step:.3f}x raw per step, {same_call:.3f}x whole call (lockstep)"))
    for name, kw in variants.items():
        got = [overhead.lockstep(batches, **kw) for _ in range(repeats)]
        step, call = overhead.median_ratios(got)
        rows.append(("trainer overhead (MLP 64-256-256-10, b128, SGD)", f"{name}, in lockstep",
                     f"{statistics.median(r.step for r in got) * 1e3:.3f} ms/step",
                     f"{step:.3f}x raw per step, {call:.3f}x whole call (lockstep); over the A/A "
                     f"{step / same_step:.3f}x and {call / same_call:.3f}x"))
    return rows


# -- 2. canned estimators --------------------------------------------------------------------
def canned(quick: bool, repeats: int, tf_venv: str | None, notes: list[str]) -> list[Row]:
    runners = ["raw", "learnrun", "compile", "tf"]
    if bench_canned.tf_python(tf_venv) is None:
        notes.append("TensorFlow: no venv (--tf-venv / LEARNRUN_TF_VENV), tf.estimator not measured.")
    models = ["dnn"] if quick else list(bench_canned.MODELS)
    rows = bench_canned.measure(["digits", "large"], models, runners if not quick else ["raw", "learnrun", "tf"],
                                repeats, quick, tf_venv, log=lambda s: print(s, file=sys.stderr, flush=True))
    base = {(r["workload"], r["model"]): r["value"] for r in rows if r["runner"] == "raw"}
    tf = {(r["workload"], r["model"]): r["value"] for r in rows if r["runner"] == "tf"}
    out = []
    for r in rows:
        key = (r["workload"], r["model"])
        ratio = f"{r['value'] / base[key]:.2f}x raw"
        if key in tf and r["runner"] != "tf":
            ratio += f", {r['value'] / tf[key]:.2f}x tf"
        out.append((f"canned {r['workload']} ({'per step, fixed costs cancelled' if r['unit'] == 'ms/step' else 'train call'})",
                    f"{r['model']} {r['runner']}", f"{r['value']:.3f} {r['unit']} (acc {r['accuracy']:.3f})", ratio))
    return out


# -- 3-5. the other benchmark scripts ----------------------------------------------------------
def _script(name: str, args: list[str], timeout: int) -> tuple[int, str]:
    out = subprocess.run([sys.executable, os.path.join(HERE, name), *args], capture_output=True,
                         text=True, env=_env(), timeout=timeout)
    return out.returncode, out.stdout + ("" if out.returncode == 0 else out.stderr[-1500:])


def checkpoints(quick: bool) -> list[Row]:
    section = "checkpoints (bench_checkpoint.py)"
    if not os.path.exists(os.path.join(HERE, "bench_checkpoint.py")):
        return [(section, "save GB/s, async stall", "not measured", "bench_checkpoint.py not on this branch yet")]
    code, text = _script("bench_checkpoint.py", ["--mb", "30", "--repeats", "1"] if quick else [], 900)
    if code:
        return [(section, "failed", f"exit {code}", text.strip().splitlines()[-1] if text.strip() else "")]
    return [(section, line.split(":", 1)[0].strip(), line.split(":", 1)[1].strip(), "")
            for line in text.splitlines() if ":" in line]


def distributed(quick: bool) -> list[Row]:
    section = "distributed (bench_distributed.py, wall time)"
    code, text = _script("bench_distributed.py", ["--steps", "60" if quick else "300"], 900)
    if code:
        return [(section, "failed", f"exit {code}", text.strip().splitlines()[-1] if text.strip() else "")]
    rows = []
    for line in text.splitlines():
        m = re.match(r"(.+?)\s+(\d+)\s+([\d.]+)$", line.strip())
        if m:
            rows.append((section, m.group(1).strip(), f"{m.group(2)} samples/s", f"{float(m.group(3)):.2f}x 1 process"))
    code, text = _script("bench_ps_transport.py", ["--calls", "50" if quick else "300",
                                                   "--repeats", "1" if quick else "2"], 300)
    section = "distributed (bench_ps_transport.py, wall time)"
    if code:
        return rows + [(section, "ps round trip: failed", f"exit {code}",
                        text.strip().splitlines()[-1] if text.strip() else "")]
    wall = {}
    for line in text.splitlines():
        m = re.match(r"(SocketTransport|TensorPipe RPC).*?\s+([\d.]+)\s+([\d.]+)$", line.strip())
        if m:
            wall[m.group(1)] = float(m.group(2))
            rows.append((section, f"ps push_pull round trip, {m.group(1)}",
                         f"{m.group(2)} ms wall, {m.group(3)} ms trainer CPU", ""))
    if len(wall) == 2:
        rows[-2] = rows[-2][:3] + (f"{wall['TensorPipe RPC'] / wall['SocketTransport']:.2f}x faster than RPC",)
    return rows


def serving(quick: bool) -> list[Row]:
    section = "serving (bench_serving.py)"
    args = ["--seconds", "1", "--clients", "1,8", "--train-steps", "20"] if quick else []
    code, text = _script("bench_serving.py", args, 900)
    if code:
        return [(section, "failed", f"exit {code}", text.strip().splitlines()[-1] if text.strip() else "")]
    return [(section, line.split("clients")[0].strip() + " clients " + line.split("clients")[1].split()[0],
             " ".join(line.split("clients")[1].split()[1:]), "") if "clients" in line and ":" not in line.split("clients")[0]
            else (section, line.strip(), "", "") for line in text.splitlines() if line.strip()]


#: What ``import learnrun`` costs over torch: the package itself (its names load lazily), then
#: the first use of the Estimator and of the canned estimators.
IMPORTS = {"import learnrun": "import learnrun",
           "import learnrun; learnrun.Estimator": "import learnrun; learnrun.Estimator",
           "import learnrun; learnrun.canned.DNNClassifier": "import learnrun.canned; learnrun.canned.DNNClassifier"}


def import_time(repeats: int) -> list[Row]:
    """Each statement after ``import torch`` in a fresh process per repeat, in process CPU time."""
    rows = []
    for label, stmt in IMPORTS.items():
        code = ("import time; t = time.process_time(); import torch; u = time.process_time(); "
                f"{stmt}; print(u - t, time.process_time() - u)")
        torch_t, extra_t = [], []
        for _ in range(max(repeats, 5)):
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 env=_env(), check=True).stdout.split()
            torch_t.append(float(out[0]))
            extra_t.append(float(out[1]))
        rows.append(("import over torch (CPU time, fresh process)", label,
                     f"{statistics.median(extra_t) * 1e3:.0f} ms",
                     f"torch alone {statistics.median(torch_t):.2f} s"))
    return rows


# -- the report ------------------------------------------------------------------------------
def machine() -> str:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return (f"{os.cpu_count()} cores (nproc), CPU {model}, torch {torch.__version__}, Python "
            f"{platform.python_version()}, {datetime.date.today().isoformat()}")


def render(rows: list[Row], notes: list[str]) -> str:
    lines = ["| section | what | value | ratio |", "|---|---|---|---|"]
    lines += [f"| {s} | {w} | {v} | {r} |" for s, w, v, r in rows]
    lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer steps, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tf-venv", default=None)
    parser.add_argument("--lightning-venv", default=None)
    parser.add_argument("--sections", default="overhead,canned,checkpoints,distributed,serving,import")
    parser.add_argument("--output", default=None, help="also write the table (markdown) here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger("learnrun").setLevel(logging.WARNING)
    repeats = 1 if args.quick else args.repeats
    lightning = _venv_python(args.lightning_venv, "LEARNRUN_LIGHTNING_VENV")
    notes: list[str] = []
    rows: list[Row] = []
    sections = args.sections.split(",")
    started = time.perf_counter()
    for name in sections:
        if name == "overhead":
            rows += trainer_overhead(args.quick, repeats, lightning, notes)
        elif name == "canned":
            rows += canned(args.quick, repeats, args.tf_venv, notes)
        elif name == "checkpoints":
            rows += checkpoints(args.quick)
        elif name == "distributed":
            rows += distributed(args.quick)
        elif name == "serving":
            rows += serving(args.quick)
        elif name == "import":
            rows += import_time(repeats)
        else:
            parser.error(f"unknown section {name!r}")
        print(f"[{name} done at {time.perf_counter() - started:.0f} s]", file=sys.stderr, flush=True)
    notes.append(f"Machine: {machine()}.")
    notes.append("Command: " + " ".join(["python", "benchmarks/run_all.py", *(argv if argv is not None else sys.argv[1:])]))
    report = render(rows, notes)
    print(report)
    if args.output:
        with open(args.output, "w") as f:
            f.write(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
