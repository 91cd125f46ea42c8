"""Training-loop hooks with TensorFlow's ``SessionRunHook`` lifecycle (public as ``learnrun.hooks``).

Execution trace of one ``Estimator.train`` call (evaluate and predict run the same trace over
their own loop, with ``mode`` set accordingly)::

    model_fn(...) -> spec; strategy.prepare(...)
    for hook in hooks: hook.begin()                     # model built, nothing restored yet
    restore latest checkpoint (weights, optimizer, RNG, input position, hook.load_state_dict)
    for hook in hooks: hook.after_create_session(session, coord=None)
    while not session.stop_requested:                   # checked at every step boundary
        batch = next(input)                             # StopIteration ends the loop normally
        ctx = RunContext(session)
        args = [hook.before_run(ctx) for hook in hooks] # SessionRunArgs name what to fetch
        forward, backward, optimizer step (global_step += 1)
        for hook in hooks: hook.after_run(ctx, RunValues(results, global_step, fetched))
        if ctx.stop_requested: stop after this step
    for hook in hooks: hook.end(session)                # e.g. the final checkpoint save

Exception semantics (as in TF's MonitoredSession): input exhaustion (``StopIteration``) or a
stop request leave the loop normally, so ``end`` runs for every hook. Any other exception raised
by the step or by a hook (``NanLossDuringTrainingError``, a ``KeyboardInterrupt``) propagates at
once: the remaining ``after_run`` calls and every ``end`` are skipped and no final checkpoint is
written, so the model directory keeps the last good checkpoint. Preemption (SIGTERM) is not an
exception inside the loop: it stops at the next boundary, saves, runs ``end``, then raises
``learnrun.errors.PreemptedError``.

Hooks that define ``state_dict()`` / ``load_state_dict(state)`` have that state saved in every
checkpoint (keyed by class name and position among hooks of that class) and restored before
``after_create_session``.

Where things live (all re-exported here and by ``learnrun.hooks``): the protocol and the timer
in :mod:`learnrun.estimator.hook_base`, the standard hooks in
:mod:`learnrun.estimator.basic_hooks`, checkpoint saving in :mod:`learnrun.estimator.saver_hooks`.
"""

from __future__ import annotations

from typing import Any

from learnrun.estimator.basic_hooks import (
    GlobalStepWaiterHook,
    LoggingTensorHook,
    NanTensorHook,
    StepCounterHook,
    StopAtStepHook,
    SummarySaverHook,
)
from learnrun.estimator.hook_base import (
    Hook,
    RunContext,
    RunValues,
    SecondOrStepTimer,
    SessionRunArgs,
    SessionRunHook,
)
from learnrun.estimator.saver_hooks import CheckpointSaverHook, CheckpointSaverListener

__all__ = [
    "CheckpointSaverHook",
    "CheckpointSaverListener",
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
]


_EVAL_DRIVEN = {
    "EarlyStoppingHook", "ValidationMonitor", "make_early_stopping_hook", "read_eval_metrics",
    "stop_if_higher_hook", "stop_if_lower_hook", "stop_if_no_decrease_hook",
    "stop_if_no_increase_hook",
}


def __getattr__(name: str) -> Any:
    # The evaluation-driven hooks live in ``learnrun.hooks`` (they call Estimator.evaluate and
    # read eval results); they are reachable from here too.
    if name in _EVAL_DRIVEN:
        import learnrun.hooks

        return getattr(learnrun.hooks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
