"""``learnrun launch``: a whole cluster on this machine, one process per task.

:func:`launch` starts the ps tasks, the chief, the workers and the evaluator on 127.0.0.1,
each with a free port and its own ``TF_CONFIG`` (or torchrun-style ``RANK``/``WORLD_SIZE``/
``MASTER_ADDR``/``MASTER_PORT`` with ``roles_from="torchrun"``), running
``python -m learnrun run TARGET [run options]``.

Execution trace of one attempt::

    pick free ports; start every task in its own session (ps, chief, workers, evaluator)
    stream each task's output, every line prefixed with "[worker:1] "; each task's end is
          reported as "[launch] worker:1 exited with code 0." (or "... failed with ...")
    wait: a task exits non-zero -> "[launch] ..." names it; SIGTERM to the others, SIGKILL
          after grace_secs. (With ps tasks, a worker that fails is reported and the others
          go on: parameter-server training survives it.) Every task exits 0 -> done.
    SIGINT/SIGTERM to the launcher -> forwarded to every task (they save and exit 143/130)

A failed attempt is restarted (new ports, same model_dir: training resumes from the latest
checkpoint) up to ``max_restarts`` times, unless the launcher itself was signalled. The
return value is the first failure's exit code (128+N for a task killed by signal N), or 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

PREEMPTED_EXIT_CODE = 143

__all__ = ["launch", "add_launch_arguments", "launch_main", "LocalCluster", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class LocalCluster:
    """One attempt: the processes of every task, their output threads and their fate."""

    def __init__(self, command: Sequence[str], *, num_ps: int = 0, num_workers: int = 0,
                 evaluator: bool = False, env: Mapping[str, str] | None = None,
                 output: IO[str] | None = None, host: str = "127.0.0.1",
                 roles_from: str = "tf_config", tolerate_worker_failures: bool | None = None,
                 port_picker: Callable[[], int] | None = None,
                 stop_on_failure: bool = True) -> None:
        if num_ps < 0 or num_workers < 0:
            raise ValueError(f"num_ps and num_workers must be >= 0; got num_ps={num_ps}, "
                             f"num_workers={num_workers}.")
        if roles_from not in ("tf_config", "torchrun"):
            raise ValueError(f"roles_from must be 'tf_config' or 'torchrun'; got {roles_from!r}.")
        if roles_from == "torchrun" and (num_ps or evaluator):
            raise ValueError("roles_from='torchrun' describes trainers only (RANK/WORLD_SIZE); "
                             f"got num_ps={num_ps}, evaluator={evaluator}. Use 'tf_config'.")
        self.command = list(command)
        self.num_ps, self.num_workers, self.evaluator = num_ps, num_workers, evaluator
        self.env = dict(os.environ if env is None else env)
        self.output = output if output is not None else sys.stdout
        self.host = host
        self.roles_from = roles_from
        self.tolerate = (num_ps > 0) if tolerate_worker_failures is None else \
            tolerate_worker_failures
        self.port_picker = port_picker or (lambda: free_port(host))
        self.stop_on_failure = stop_on_failure
        self.processes: dict[str, subprocess.Popen] = {}
        self.codes: dict[str, int] = {}
        self.failure: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._readers: list[threading.Thread] = []

    # -- layout ------------------------------------------------------------------------------
    def tasks(self) -> list[tuple[str, int]]:
        """``(task_type, index)`` of every task, in start order."""
        return ([("ps", i) for i in range(self.num_ps)] + [("chief", 0)]
                + [("worker", i) for i in range(self.num_workers)]
                + ([("evaluator", 0)] if self.evaluator else []))

    def task_envs(self) -> dict[str, dict[str, str]]:
        """The extra environment of each task (``TF_CONFIG`` or torchrun variables)."""
        cluster: dict[str, list[str]] = {"chief": [f"{self.host}:{self.port_picker()}"]}
        if self.num_workers:
            cluster["worker"] = [f"{self.host}:{self.port_picker()}"
                                 for _ in range(self.num_workers)]
        if self.num_ps:
            cluster["ps"] = [f"{self.host}:{self.port_picker()}" for _ in range(self.num_ps)]
        out: dict[str, dict[str, str]] = {}
        for task_type, index in self.tasks():
            name = f"{task_type}:{index}"
            if self.roles_from == "torchrun":
                rank = 0 if task_type == "chief" else index + 1
                host, _, port = cluster["chief"][0].rpartition(":")
                out[name] = {"RANK": str(rank), "LOCAL_RANK": str(rank),
                             "WORLD_SIZE": str(1 + self.num_workers),
                             "LOCAL_WORLD_SIZE": str(1 + self.num_workers),
                             "MASTER_ADDR": host, "MASTER_PORT": port}
            else:
                out[name] = {"TF_CONFIG": json.dumps({
                    "cluster": cluster, "task": {"type": task_type, "index": index},
                    "environment": "cloud"})}
        return out

    # -- processes ---------------------------------------------------------------------------
    def write(self, prefix: str, line: str) -> None:
        """Write one prefixed line to the output (thread-safe)."""
        with self._lock:
            self.output.write(f"[{prefix}] {line.rstrip(chr(10))}\n")
            self.output.flush()

    def _pump(self, name: str, stream: IO[str]) -> None:
        for line in iter(stream.readline, ""):
            self.write(name, line)
        stream.close()

    def start(self) -> None:
        """Start every task."""
        envs = self.task_envs()
        for task_type, index in self.tasks():
            name = f"{task_type}:{index}"
            env = {k: v for k, v in self.env.items()
                   if k not in ("TF_CONFIG", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
            env.setdefault("GLOO_SOCKET_IFNAME", "lo")
            env.setdefault("OMP_NUM_THREADS", "1")
            env["PYTHONUNBUFFERED"] = "1"
            env.update(envs[name])
            proc = subprocess.Popen(self.command, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, bufsize=1,
                                    start_new_session=True, errors="replace")
            self.processes[name] = proc
            reader = threading.Thread(target=self._pump, args=(name, proc.stdout),
                                      name=f"learnrun-launch-{name}", daemon=True)
            reader.start()
            self._readers.append(reader)

    def signal_all(self, sig: int) -> None:
        """Send ``sig`` to every task still running (and to its process group)."""
        for proc in self.processes.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass

    def poll(self) -> bool:
        """Record the tasks that ended; True while any is running. Sets ``failure``."""
        running = False
        for name, proc in self.processes.items():
            code = proc.poll()
            if code is None:
                running = True
                continue
            if name in self.codes:
                continue
            self.codes[name] = _exit_code(code)
            if self.codes[name] == 0:
                self.write("launch", f"{name} exited with code 0.")
                continue
            if self.tolerate and name.startswith("worker:") and self.failure is None:
                self.write("launch", f"{name} exited with code {self.codes[name]}; "
                                     "parameter-server training goes on without it.")
                continue
            if self.failure is None:
                self.failure = (name, self.codes[name])
                action = "stopping the other tasks" if self.stop_on_failure else \
                    "waiting for the other tasks"
                self.write("launch", f"{name} failed with exit code {self.codes[name]}; "
                                     f"{action}.")
            else:
                self.write("launch", f"{name} exited with code {self.codes[name]}.")
        return running

    def wait(self, grace_secs: float = 10.0, deadline: float | None = None,
             interrupted: Callable[[], bool] = lambda: False) -> int:
        """Wait for every task; on the first failure stop the others. Return the exit code.

        A first failure with code 143 (a preempted trainer) gives the others ``grace_secs``
        to stop by themselves (they agree on the stop step and the chief saves) first.
        """
        stop_sent_at: float | None = None
        failed_at: float | None = None
        while self.poll():
            now = time.monotonic()
            timed_out = deadline is not None and now > deadline
            if self.failure is not None and failed_at is None:
                failed_at = now
            failing = (self.stop_on_failure and failed_at is not None and (
                self.failure[1] != PREEMPTED_EXIT_CODE or now - failed_at > grace_secs))
            if (failing or timed_out or interrupted()) and stop_sent_at is None:
                if timed_out and self.failure is None:
                    self.write("launch", "the cluster ran past its timeout; stopping it.")
                    self.failure = ("launch", 124)
                if not interrupted():  # signals are forwarded by the handler already
                    self.signal_all(signal.SIGTERM)
                stop_sent_at = now
            if stop_sent_at is not None and now - stop_sent_at > grace_secs:
                self.signal_all(signal.SIGKILL)
                stop_sent_at = float("inf")
            time.sleep(0.05)
        for reader in self._readers:
            reader.join(timeout=5)
        return self.failure[1] if self.failure else 0


def launch(target: str | None, *, num_ps: int = 0, num_workers: int = 0,
           evaluator: bool = False, max_restarts: int = 0, run_args: Sequence[str] = (),
           env: Mapping[str, str] | None = None, python: str = sys.executable,
           command: Sequence[str] | None = None, output: IO[str] | None = None,
           grace_secs: float = 10.0, timeout: float | None = None,
           roles_from: str = "tf_config", tolerate_worker_failures: bool | None = None,
           stop_on_failure: bool = True) -> int:
    """Run a cluster on 127.0.0.1 until it ends; return the first failure's exit code or 0.

    Each task runs ``[python, "-m", "learnrun", "run", target, *run_args]`` (or
    ``[*command, *run_args]`` when ``command`` is given). ``env`` replaces the inherited
    environment; ``timeout`` (seconds, all attempts) stops everything and returns 124.
    ``tolerate_worker_failures`` (default: True when ``num_ps > 0``) keeps a cluster going
    when a worker dies. ``stop_on_failure=False`` lets the other tasks end by themselves
    after a failure (to see how they react; ``timeout`` still bounds the wait).
    SIGINT/SIGTERM received here are forwarded to every task.
    """
    if command is None:
        if not target:
            raise ValueError("launch() needs a TARGET (module, file.py or module:function) or "
                             "a command; got neither.")
        command = [python, "-m", "learnrun", "run", str(target)]
    if max_restarts < 0:
        raise ValueError(f"max_restarts must be >= 0; got {max_restarts}.")
    out = output if output is not None else sys.stdout
    deadline = None if timeout is None else time.monotonic() + timeout
    signalled: list[int] = []
    current: list[LocalCluster] = []

    def forward(signum: int, _frame: Any) -> None:
        signalled.append(signum)
        if current:
            current[0].write("launch", f"got signal {signum}; forwarding it to every task.")
            current[0].signal_all(signum)

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, forward)
    try:
        code = 0
        for attempt in range(max_restarts + 1):
            cluster = LocalCluster([*command, *run_args], num_ps=num_ps,
                                   num_workers=num_workers, evaluator=evaluator, env=env,
                                   output=out, roles_from=roles_from,
                                   tolerate_worker_failures=tolerate_worker_failures,
                                   stop_on_failure=stop_on_failure)
            current[:] = [cluster]
            if attempt:
                cluster.write("launch", f"restarting the cluster (attempt {attempt + 1} of "
                                        f"{max_restarts + 1}); it resumes from the latest "
                                        "checkpoint.")
            cluster.start()
            code = cluster.wait(grace_secs, deadline, interrupted=lambda: bool(signalled))
            if code == 0 or signalled or code == 124:
                break
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def add_launch_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``[--ps N] [--workers M] [--evaluator] [--max-restarts K] TARGET [run options]``."""
    parser.add_argument("--ps", type=int, default=0, metavar="N", help="parameter-server tasks")
    parser.add_argument("--workers", type=int, default=0, metavar="M",
                        help="worker tasks besides the chief")
    parser.add_argument("--evaluator", action="store_true", help="add an evaluator task")
    parser.add_argument("--max-restarts", type=int, default=0, metavar="K",
                        help="restart the whole cluster up to K times after a failure")
    parser.add_argument("--grace-secs", type=float, default=10.0, metavar="S",
                        help="seconds between SIGTERM and SIGKILL when stopping tasks")
    parser.add_argument("target", metavar="TARGET",
                        help="the experiment, as for `learnrun run`")
    parser.add_argument("run_args", nargs=argparse.REMAINDER, metavar="...",
                        help="options passed to `learnrun run` in every task")
    return parser


def launch_main(args: argparse.Namespace) -> int:
    """Run :func:`launch` from parsed ``add_launch_arguments`` options; return the exit code."""
    for option in ("ps", "workers", "max_restarts"):
        value = getattr(args, option)
        if value < 0:
            raise ValueError(f"--{option.replace('_', '-')} must be >= 0; got {value}.")
    return launch(args.target, num_ps=args.ps, num_workers=args.workers,
                  evaluator=args.evaluator, max_restarts=args.max_restarts,
                  run_args=list(args.run_args), grace_secs=args.grace_secs)
