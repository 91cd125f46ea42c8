"""Shared helpers of the distributed tests: launch the test experiment, read its output."""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from learnrun.distributed.launch import launch
from tests.helpers import REPO_ROOT, experiments

EXPERIMENT = str(Path(experiments.__file__).resolve())
"""The test experiment as a ``learnrun run`` TARGET file (tasks load it by path)."""
_EXIT = re.compile(r"^\[launch\] (\S+) (?:exited with code|failed with exit code) (\d+)")


def cluster_env(**env: str) -> dict[str, str]:
    """The environment of the tasks of a test cluster: this one, gloo on loopback, one thread.

    ``PYTHONPATH`` gets the repository root in front of the inherited one, so tasks import the
    same ``learnrun`` as the tests and can import ``tests.helpers``.
    """
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", PYTHONPATH=path,
                **env)


class Collector:
    """A thread-safe text sink for the launcher that can react to lines."""

    def __init__(self, on_line: Callable[[str], None] | None = None) -> None:
        self.lines: list[str] = []
        self.on_line = on_line
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            for line in text.splitlines():
                self.lines.append(line)
                if self.on_line is not None:
                    self.on_line(line)

    def flush(self) -> None:
        pass

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def values(self, task: str, word: str) -> list[int]:
        """The integers printed as ``WORD <n>`` by ``task``."""
        pattern = re.compile(rf"^\[{re.escape(task)}\] {word} (\d+)$")
        return [int(m.group(1)) for line in self.lines if (m := pattern.match(line))]

    def exit_codes(self) -> dict[str, int]:
        """``{task: exit code}`` as the launcher reported each task's end."""
        return {m.group(1): int(m.group(2)) for line in self.lines if (m := _EXIT.match(line))}

    def task_text(self, task: str) -> str:
        """Everything ``task`` printed (without its prefix)."""
        prefix = f"[{task}] "
        return "\n".join(line[len(prefix):] for line in self.lines if line.startswith(prefix))


def launch_experiment(model_dir: Path, *, num_ps: int = 0, num_workers: int = 0,
                      evaluator: bool = False, max_restarts: int = 0, timeout: float = 80.0,
                      save_steps: int | None = None, keep: int = 5, dist_timeout: float = 20,
                      extra_args: tuple[str, ...] = (), grace_secs: float = 5.0,
                      stop_on_failure: bool = True, roles_from: str = "tf_config",
                      **env: str) -> tuple[int, Collector, float]:
    """``learnrun.distributed.launch`` the test experiment through ``learnrun run``.

    ``env`` adds ``LRTEST_*`` settings (see :mod:`tests.helpers.experiments`); returns (exit
    code, output, seconds the cluster ran).
    """
    out = Collector()
    environ = cluster_env(**env)
    args = ["--model-dir", str(model_dir),
            *experiments.config_args(save_steps, dist_timeout, keep), *extra_args]
    start = time.monotonic()
    code = launch(f"{EXPERIMENT}:experiment_fn", num_ps=num_ps, num_workers=num_workers,
                  evaluator=evaluator, max_restarts=max_restarts, run_args=args, env=environ,
                  output=out, timeout=timeout, grace_secs=grace_secs, python=sys.executable,
                  stop_on_failure=stop_on_failure, roles_from=roles_from)
    return code, out, time.monotonic() - start
