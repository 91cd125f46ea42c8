"""Shared helpers of the distributed tests: run a cluster of ``_trainer.py`` tasks."""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from learnrun.distributed.launch import LocalCluster, launch

TRAINER = str(Path(__file__).with_name("_trainer.py"))


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


def run_cluster(model_dir: Path, *trainer_args: str, num_ps: int = 0, num_workers: int = 0,
                timeout: float = 60.0, stop_on_failure: bool = True, roles_from: str = "tf_config",
                on_line: Callable[[str, LocalCluster], None] | None = None,
                grace_secs: float = 10.0) -> tuple[LocalCluster, int, Collector, float]:
    """Start a cluster of ``_trainer.py`` tasks, wait for it; return (cluster, code, output, secs).

    ``on_line(line, cluster)`` sees every prefixed output line as it arrives.
    """
    box: list[LocalCluster] = []
    out = Collector(None if on_line is None else (lambda line: on_line(line, box[0])))
    cluster = LocalCluster([sys.executable, TRAINER, "--model-dir", str(model_dir), *trainer_args],
                           num_ps=num_ps, num_workers=num_workers, output=out,
                           roles_from=roles_from, stop_on_failure=stop_on_failure)
    box.append(cluster)
    start = time.monotonic()
    cluster.start()
    try:
        code = cluster.wait(grace_secs=grace_secs, deadline=start + timeout)
    finally:
        cluster.signal_all(9)
    return cluster, code, out, time.monotonic() - start


EXPERIMENT = str(Path(__file__).with_name("_experiment.py"))


def launch_experiment(model_dir: Path, *, num_ps: int = 0, num_workers: int = 0,
                      evaluator: bool = False, max_restarts: int = 0, timeout: float = 80.0,
                      save_steps: int | None = None, keep: int = 5, dist_timeout: float = 20,
                      extra_args: tuple[str, ...] = (), grace_secs: float = 5.0,
                      **env: str) -> tuple[int, Collector]:
    """``learnrun.distributed.launch`` the test experiment through ``learnrun run``.

    ``env`` adds ``LRTEST_*`` settings (see ``_experiment.py``); returns (exit code, output).
    """
    import os

    import _experiment

    out = Collector()
    environ = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1",
                   PYTHONPATH=str(Path(__file__).parent), **env)
    args = ["--model-dir", str(model_dir),
            *_experiment.config_args(save_steps, dist_timeout, keep), *extra_args]
    code = launch(f"{EXPERIMENT}:experiment_fn", num_ps=num_ps, num_workers=num_workers,
                  evaluator=evaluator, max_restarts=max_restarts, run_args=args, env=environ,
                  output=out, timeout=timeout, grace_secs=grace_secs)
    return code, out
