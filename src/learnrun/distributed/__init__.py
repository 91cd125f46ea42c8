"""Distributed execution on ``torch.distributed``: DDP, parameter servers, a local launcher.

* :func:`strategy_for_config` — the engine of a trainer task: :class:`DDPStrategy` when the
  cluster has no ps tasks, :class:`ParameterServerStrategy` when it has.
* :func:`serve` — the ``serve``/``run_std_server`` schedule of a ps task.
* :func:`launch`, :func:`add_launch_arguments`, :func:`launch_main` — ``learnrun launch``.
* :func:`exit_process` — leave a distributed process without the rare abort at exit.

Importing this package imports no torch; the engines import it when they run.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from learnrun.distributed.launch import add_launch_arguments, launch, launch_main

__all__ = ["strategy_for_config", "serve", "launch", "add_launch_arguments", "launch_main",
           "exit_process", "DDPStrategy", "ParameterServerStrategy"]

_LAZY = {"DDPStrategy": "learnrun.distributed.sync",
         "ParameterServerStrategy": "learnrun.distributed.ps_strategy"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'learnrun.distributed' has no attribute {name!r}")


def strategy_for_config(config: Any):
    """The training engine for a trainer task of ``config``'s cluster.

    ps tasks in the cluster -> ``ParameterServerStrategy`` (asynchronous); otherwise
    ``DDPStrategy`` (synchronous, ``config.world_size`` trainers). Raises ValueError for a
    task that does not train (ps, evaluator), naming it.
    """
    task_type = getattr(config, "task_type", None)
    if task_type in ("ps", "evaluator"):
        raise ValueError(
            f"Task type {task_type!r} does not train, so it has no training strategy; a ps "
            "task runs serve() and an evaluator runs continuous_eval().")
    if int(getattr(config, "num_ps_replicas", 0) or 0) > 0:
        from learnrun.distributed.ps_strategy import ParameterServerStrategy

        return ParameterServerStrategy(config)
    from learnrun.distributed.sync import DDPStrategy

    return DDPStrategy(config)


def serve(experiment: Any) -> None:
    """Host this ps task's shard of the parameters until training ends (then return).

    Collective with the chief and the workers. See :mod:`learnrun.distributed.parameter_server`.
    """
    from learnrun.distributed.parameter_server import serve as _serve

    _serve(experiment)


def exit_process(code: int = 0) -> None:
    """Flush stdout/stderr and end the process with ``os._exit(code)``.

    Call it after a distributed run has torn down: about 1 in 80 normal interpreter exits
    after ``destroy_process_group()`` aborted with SIGABRT on this platform.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(int(code))
