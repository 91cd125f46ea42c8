"""Distributed execution on ``torch.distributed``: DDP, parameter servers, a local launcher.

* :func:`make_strategy` — the engine of any process (``LocalStrategy`` unless it is a
  distributed trainer); :func:`strategy_for_config` — the engine of a trainer task: :class:`DDPStrategy` when the
  cluster has no ps tasks, :class:`ParameterServerStrategy` when it has.
* :func:`serve` — the ``serve``/``run_std_server`` schedule of a ps task.
* :func:`launch`, :func:`add_launch_arguments`, :func:`launch_main` — ``learnrun launch``.
* :func:`exit_process` — leave a distributed process without the rare abort at exit.

Importing this package imports no torch; the engines import it when they run.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from learnrun.config.cluster import TaskType
from learnrun.distributed.base import InputContext, LocalStrategy, Strategy
from learnrun.distributed.ddp import DDPStrategy
from learnrun.distributed.launch import add_launch_arguments, launch, launch_main
from learnrun.distributed.ps.server import serve
from learnrun.distributed.ps.trainer import ParameterServerStrategy
from learnrun.model_dir import summaries

if TYPE_CHECKING:
    from learnrun.config.run_config import RunConfig

__all__ = ["make_strategy", "strategy_for_config", "serve", "launch", "add_launch_arguments",
           "launch_main", "exit_process", "Strategy", "LocalStrategy", "InputContext",
           "DDPStrategy", "ParameterServerStrategy"]


def make_strategy(config: RunConfig | None) -> Strategy:
    """The engine for ``config``: ``LocalStrategy`` unless this is a distributed trainer.

    A trainer of a cluster with several trainers or with ps tasks gets
    :func:`strategy_for_config`'s engine; no config, a local run, a one-task cluster and the
    evaluator get ``LocalStrategy``.
    """
    if config is None or config.task_type in (None, TaskType.EVALUATOR):
        return LocalStrategy(config)
    if config.world_size > 1 or config.num_ps_replicas > 0:
        return strategy_for_config(config)
    return LocalStrategy(config)


def strategy_for_config(config: RunConfig) -> Strategy:
    """The training engine for a trainer task of ``config``'s cluster.

    ps tasks in the cluster -> ``ParameterServerStrategy`` (asynchronous); otherwise
    ``DDPStrategy`` (synchronous, ``config.world_size`` trainers). Raises ValueError for a
    task that does not train (ps, evaluator), naming it.
    """
    if not config.is_trainer:
        raise ValueError(
            f"Task type {config.task_type!r} does not train, so it has no training strategy; a ps "
            "task runs serve() and an evaluator runs continuous_eval().")
    if config.num_ps_replicas > 0:
        return ParameterServerStrategy(config)
    return DDPStrategy(config)


def exit_process(code: int = 0) -> None:
    """Flush stdout/stderr and end the process with ``os._exit(code)``.

    Call it after a distributed run has torn down: about 1 in 80 normal interpreter exits
    after ``destroy_process_group()`` aborted with SIGABRT on this platform. ``os._exit``
    runs no ``atexit`` handler, so the event files are closed (and their staging directories
    removed) here first.
    """
    summaries.close_at_exit()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(int(code))
