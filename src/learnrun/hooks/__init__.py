"""Training-loop hooks with TensorFlow's ``SessionRunHook`` lifecycle.

A hook's methods run in this order: ``begin()`` once before anything is restored,
``after_create_session(session, coord)`` once after the restore, then around every step
``before_run(run_context)`` (may return ``SessionRunArgs`` naming values to fetch) and
``after_run(run_context, run_values)``, and ``end(session)`` once when the loop ends normally
(not on exceptions). ``run_context.request_stop()`` stops at the next step boundary.

The full execution trace of ``Estimator.train`` — which hooks it adds, where the checkpoint is
restored, how stops, exceptions and preemption end the loop — is the docstring of
:mod:`learnrun.estimator.train_loop`; the shorter trace of ``evaluate`` and ``predict`` is in
:mod:`learnrun.estimator.eval_loop`; how hook state (``state_dict``/``load_state_dict``)
travels in checkpoints is in :mod:`learnrun.estimator.session`.

Where things live (all re-exported here): the protocol and the timer in
:mod:`learnrun.hooks.base`, the standard hooks in :mod:`learnrun.hooks.basic`, checkpoint
saving in :mod:`learnrun.hooks.saver`, early stopping in :mod:`learnrun.hooks.early_stopping`,
``ValidationMonitor`` in :mod:`learnrun.hooks.validation` and the progress display in
:mod:`learnrun.hooks.progress`.
"""

from __future__ import annotations

from learnrun.hooks.base import (
    Hook,
    RunContext,
    RunValues,
    SecondOrStepTimer,
    SessionRunArgs,
    SessionRunHook,
    skips_idle_steps,
)
from learnrun.hooks.basic import (
    GlobalStepWaiterHook,
    LoggingTensorHook,
    NanTensorHook,
    StepCounterHook,
    StopAtStepHook,
    SummarySaverHook,
)
from learnrun.hooks.early_stopping import (
    EarlyStoppingHook,
    make_early_stopping_hook,
    read_eval_metrics,
    stop_if_higher_hook,
    stop_if_lower_hook,
    stop_if_no_decrease_hook,
    stop_if_no_increase_hook,
)
from learnrun.hooks.saver import CheckpointSaverHook, CheckpointSaverListener
from learnrun.hooks.validation import ValidationMonitor

__all__ = [
    "CheckpointSaverHook",
    "CheckpointSaverListener",
    "EarlyStoppingHook",
    "GlobalStepWaiterHook",
    "Hook",
    "LoggingTensorHook",
    "NanTensorHook",
    "RunContext",
    "RunValues",
    "SecondOrStepTimer",
    "SessionRunArgs",
    "SessionRunHook",
    "StepCounterHook",
    "StopAtStepHook",
    "SummarySaverHook",
    "ValidationMonitor",
    "make_early_stopping_hook",
    "read_eval_metrics",
    "skips_idle_steps",
    "stop_if_higher_hook",
    "stop_if_lower_hook",
    "stop_if_no_decrease_hook",
    "stop_if_no_increase_hook",
]
