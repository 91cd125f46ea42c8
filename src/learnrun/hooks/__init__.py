"""Training-loop hooks with TensorFlow's ``SessionRunHook`` lifecycle.

Execution trace of one ``Estimator.train`` call::

    model_fn(...) -> spec; strategy.setup(); strategy.prepare(module, optimizer)
    hooks = user hooks + spec.training_hooks + defaults (StopAtStepHook for steps/max_steps,
            NanTensorHook, progress, StepCounterHook, SummarySaverHook, CheckpointSaverHook)
    for hook in hooks: hook.begin()                     # model built, nothing restored yet
    restore the latest checkpoint (weights, optimizer, scheduler, global step) or warm start;
    strategy.after_restore(...); hook.load_state_dict(...); input_fn(...); input position; RNG
    for hook in hooks: hook.after_create_session(session, coord=None)
    loop:                                               # at every step boundary
        if no stop was requested and no signal came: batch = next(input)   # may run out
        if strategy.should_stop(stop requested, signal or input exhausted): break
        ctx = RunContext(session)
        args = [hook.before_run(ctx) for hook in hooks] # SessionRunArgs name what to fetch
        strategy.before_step(module); forward, backward, strategy.apply_update (global_step += 1)
        for hook in hooks: hook.after_run(ctx, RunValues(results, global_step, fetched))
    for hook in hooks: hook.end(session)                # e.g. the final checkpoint save

``ctx.request_stop()`` (or ``session.request_stop()``) stops at the next boundary, before any
further batch is fetched. In synchronous distributed training ``should_stop`` is collective,
so every trainer stops at the same step when any one of them stops.

``evaluate`` and ``predict`` run a shorter trace over the checkpoint they restored before
``begin`` (the global step does not change): ``begin``, ``after_create_session``, then per
batch ``before_run`` (its ``SessionRunArgs`` are ignored), the step, ``after_run`` with
``RunValues(results, global_step)``, and ``end`` once the input is exhausted, ``steps``
batches ran or a stop was requested (for ``predict``: once its generator is consumed).

Exception semantics (as in TF's MonitoredSession): input exhaustion or a stop request leave
the loop normally, so ``end`` runs for every hook. Any other exception raised by the step or
by a hook (``NanLossDuringTrainingError``, a ``KeyboardInterrupt``) propagates at once: the
remaining ``after_run`` calls and every ``end`` are skipped and no final checkpoint is written,
so the model directory keeps the last good checkpoint (DataLoader workers are still shut down,
the progress bar closed, summaries flushed and ``strategy.teardown(False)`` called).
Preemption (SIGTERM, or a first Ctrl-C; a second Ctrl-C raises ``KeyboardInterrupt``) is not
an exception inside the loop: the handler only records it, the loop stops at the next boundary
(every trainer, through ``should_stop``), saves a checkpoint (the chief, through the saver
hook, whose listeners run), runs every ``end``, then raises
``learnrun.errors.PreemptedError``.

Hooks that define ``state_dict()`` / ``load_state_dict(state)`` have that state saved in every
checkpoint (keyed by class name and position among hooks of that class) and restored before
``after_create_session``.

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
    "stop_if_higher_hook",
    "stop_if_lower_hook",
    "stop_if_no_decrease_hook",
    "stop_if_no_increase_hook",
]
