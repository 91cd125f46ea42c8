"""The training loop of ``Estimator.train``, as named phases.

:func:`train_loop` runs the phases in this order. Execution trace of one ``Estimator.train``
call (``Estimator.train`` itself does the first and the last line)::

    model_fn(...) -> spec; strategy.setup(); the chief acquires model_dir's lease
    prepare_session: module = strategy.prepare(spec.module, spec.optimizer); fp16 scaler
    assemble_hooks: hooks = user hooks + spec.training_hooks + defaults
        (StopAtStepHook for steps/max_steps, ProgressHook and StepCounterHook
        when log_step_count_steps, SummarySaverHook, then RunConfig's CheckpointSaverHook
        unless a hook already is one); saving_listeners go to the first CheckpointSaverHook
    for hook in hooks: hook.begin()                     # model built, nothing restored yet
    restore: the newest intact checkpoint (weights, optimizer, scheduler, scaler, global
        step; damaged newer ones are moved aside by the chief, which holds the lease), or
        warm start when there is none; the chief removes model_dir/final (the record of the
        previous normal end, which Estimator.train rewrites after this run's normal end); strategy.after_restore(...) agrees on the global step;
        hook.load_state_dict(...) for hooks with saved state
    open_input: input_fn(...); its saved input position; iter(input); the saved RNG state;
        module.train() (a checkpoint of a synchronous cluster of as many trainers holds each
        trainer's own position and RNG in trainer-<rank>.pt; of another size: a warning, and
        every input starts from the beginning)
    synchronous cluster (strategy.gathers_trainer_states): every trainer hands its input
        position and RNG to the chief (Collective), for a save at the starting step
    with PreemptionGuard() as guard:                    # SIGTERM / first Ctrl-C only recorded
        for hook in hooks: hook.after_create_session(session, coord=None)
        run_steps, at every step boundary:
            if a signal came: strategy.notify_preempted()
            if a loss was NaN (session.nan_message): strategy.notify_nan()
            synchronous cluster: capture this trainer's input position and RNG
            next_batch: unless a stop was requested, a signal came or the loss was NaN:
                batch = next(input)
            strategy.should_stop(stop requested, signal, NaN or input exhausted) (collective
                in a synchronous cluster; also carries the NaN flag and the chief's save request;
                a strategy that decides alone is not asked while nothing asks to stop)
            if any trainer's loss was NaN: handle_nan, per RunConfig.on_nan_loss: raise
                NanLossDuringTrainingError | stop (break; no further save) | rollback (load the
                newest checkpoint, keep reading the input: the batches since are skipped;
                after max_nan_rollbacks: raise); continue
            synchronous cluster, on a stop or an agreed save: the chief gathers every
                trainer's captured part (Collective); on a save the chief's saver writes the
                checkpoint of this step (trainer-<rank>.pt, then meta.json)
            if stopping: break
            (where this process decides alone and nothing asks to stop, the boundary is
                batch = next(input) and nothing else)
            the step (written out in run_steps):
                ctx = RunContext(session)   # (made only when a hook is called)
                args = [hook.before_run(ctx) for hook in hooks]   # SessionRunArgs: fetches
                strategy.before_step(module)
                forward, loss, backward, strategy.apply_update (global_step += 1)
                    (or spec.train_step_fn, then scheduler.step())
                session.kept_losses += (global_step, loss) (on the CPU its value); every
                    log_step_count_steps (100 without; 1 in a cluster)
                    session.check_losses(): a non-finite loss is reported
                    (session.nan_message), and no checkpoint is saved until it is handled
                after_hooks: each hook.after_run(ctx, RunValues(results, global_step, fetched))
                    (skipped below hook.idle_until_step, and while hook.idle_clock reads
                    less than hook.idle_until_time, where after_run is marked
                    skips_idle_steps: the standard hooks' calls between their due steps
                    or times; the loop keeps the earliest due step and time of those
                    hooks, reread when hooks.base.idle_changes() moves, so a step where
                    none is due checks two numbers instead of every hook)
                    (in a synchronous cluster the saver hook only requests its save, made
                    at the next boundary)
        if preempted (here or, through should_stop, on a peer):
            preempt: save a checkpoint (the chief, through the saver hook, whose listeners
                run); for hook in hooks: hook.end(session); raise PreemptedError
        finish: for hook in hooks: hook.end(session)    # e.g. the final checkpoint save
            log "Loss for final step"
    (always) wait for the asynchronous checkpoint save in flight, if any
    close (always): DataLoader workers shut down, progress bars closed, summaries flushed
    after a normal end the chief records the last checkpoint in model_dir/final (evaluators
        stop after it); strategy.teardown(success); the chief releases the lease

``ctx.request_stop()`` (or ``session.request_stop()``) stops at the next boundary, before any
further batch is fetched. In synchronous distributed training ``should_stop`` is collective,
so every trainer stops at the same step when any one of them stops.

Exception semantics (as in TF's MonitoredSession): input exhaustion or a stop request leave
the loop normally, so ``end`` runs for every hook. Any other exception raised by the step or
by a hook (``NanLossDuringTrainingError``, a ``KeyboardInterrupt``) propagates at once: the
remaining ``after_run`` calls and every ``end`` are skipped and no final checkpoint is written,
so the model directory keeps the last good checkpoint (``close`` still runs and
``strategy.teardown(False)`` is called). Preemption (SIGTERM, or a first Ctrl-C; a second
Ctrl-C raises ``KeyboardInterrupt``) is not an exception inside the loop: the handler only
records it, the loop stops at the next boundary (every trainer, through ``should_stop``), and
``preempt`` saves, runs every ``end``, then raises ``learnrun.errors.PreemptedError``.

Hook state (``state_dict``/``load_state_dict``) travels in checkpoints as described in
:mod:`learnrun.estimator.session`; the strategy calls are described in
:mod:`learnrun.distributed.base`, the shorter evaluation/prediction trace in
:mod:`learnrun.estimator.eval_loop`.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import torch

from learnrun.distributed.base import Strategy
from learnrun.errors import NanLossDuringTrainingError, PreemptedError
from learnrun.estimator.preemption import PreemptionGuard, protect_dataloader, shutdown_workers
from learnrun.estimator.session import RunSession, load_hook_states
from learnrun.estimator.spec import ModeKeys
from learnrun.estimator.step import (
    autocast_context,
    call_input_fn,
    forward,
    load_weights,
    make_grad_scaler,
    split_batch,
    to_device,
    warm_start,
)
from learnrun.hooks import (
    CheckpointSaverHook,
    NanTensorHook,
    RunContext,
    RunValues,
    StepCounterHook,
    StopAtStepHook,
    SummarySaverHook,
)
from learnrun.hooks.base import SessionRunHook, fetch_values, idle_changes, to_python
from learnrun.hooks.progress import ProgressHook
from learnrun.model_dir import checkpoints as ckpt
from learnrun.model_dir import summaries

logger = logging.getLogger(__name__)

#: What :func:`next_batch` returns when every trainer agreed to stop.
_STOP = object()
#: What :func:`next_batch` returns when a trainer saw a NaN or infinite loss.
_NAN = object()


def train_loop(est, spec, strategy, input_fn, hooks: list, steps, max_steps, listeners,
               lease=None) -> int | None:
    """Run one ``Estimator.train`` call: the phases of the module's execution trace, in order.

    ``lease``: the model directory's lease, held by the chief (None elsewhere). Returns the
    run's step limit (None: none) after a normal end.
    """
    session = prepare_session(est, spec, strategy, lease)
    assemble_hooks(session, spec, hooks, steps, max_steps, listeners)
    for hook in session.hooks:
        hook.begin()
    state = restore(session, spec, steps, max_steps)
    iterator = open_input(session, input_fn, state)
    if session.defer_saves:  # the parts of a save at the starting step
        session.capture_trainer_state()
        session.gather_trainer_states()
    failing = True
    try:
        with PreemptionGuard() as guard:
            for hook in session.hooks:
                hook.after_create_session(session, None)
            last_loss = run_steps(session, spec, iterator, guard)
            if guard.triggered or strategy.preempted:
                failing = False
                preempt(session, guard)
            finish(session, last_loss)
            failing = False
    finally:
        session.wait_for_checkpoints(failing)  # a crash loses at most the uncommitted save
        close(session, iterator, failing)
    return session.last_step


# -- before the loop ----------------------------------------------------------------------------
def prepare_session(est, spec, strategy, lease=None) -> RunSession:
    """Place and wrap the module through ``strategy``; the session that hooks will see."""
    module = strategy.prepare(spec.module, spec.optimizer)
    if spec.optimizer is not None and spec.optimizer.state:
        # State created eagerly in the optimizer's constructor (Adagrad's sums) is still where
        # the parameters were then; torch's own load_state_dict moves it next to them.
        spec.optimizer.load_state_dict(spec.optimizer.state_dict())
    scaler = make_grad_scaler(est.config, strategy.device)
    return RunSession(est, module, spec.optimizer, spec.scheduler, strategy, ModeKeys.TRAIN,
                      scaler, lease)


def assemble_hooks(session: RunSession, spec, hooks: list, steps, max_steps, listeners) -> None:
    """Set ``session.hooks`` (user's, the spec's, the defaults) and ``session.saver_hook``."""
    all_hooks = list(hooks) + list(spec.training_hooks) + default_hooks(session, steps, max_steps)
    savers = [h for h in all_hooks if isinstance(h, CheckpointSaverHook)]
    if not savers:
        saver = _config_saver(session)
        if saver is not None:
            savers = [saver]
            if session.is_chief:
                all_hooks.append(saver)
    if listeners:
        if not savers:
            raise ValueError("There should be a CheckpointSaverHook to use saving_listeners. Please "
                             "set one of the RunConfig.save_checkpoints_steps or "
                             "RunConfig.save_checkpoints_secs.")
        savers[0].add_listeners(listeners)
    session.saver_hook = savers[0] if savers else None
    session.hooks = all_hooks


def default_hooks(session: RunSession, steps, max_steps) -> list:
    """The hooks every training run gets from ``steps``/``max_steps`` and the RunConfig."""
    config, clock = session.config, session.estimator.clock
    hooks: list = []
    if steps is not None or max_steps is not None:
        hooks.append(StopAtStepHook(num_steps=steps, last_step=max_steps))
    log_every = config.log_step_count_steps
    if log_every:
        hooks.append(ProgressHook(every_n_iter=log_every, clock=clock))
        if session.is_chief:
            hooks.append(StepCounterHook(every_n_steps=log_every, output_dir=session.model_dir,
                                         clock=clock))
    summary_steps = config.save_summary_steps
    if summary_steps and session.is_chief:
        hooks.append(SummarySaverHook(save_steps=summary_steps, output_dir=session.model_dir,
                                      clock=clock))
    return hooks


def _config_saver(session: RunSession) -> CheckpointSaverHook | None:
    """The saver of ``save_checkpoints_steps``/``secs`` (steps win when both are set)."""
    save_steps = session.config.save_checkpoints_steps
    save_secs = session.config.save_checkpoints_secs
    if save_steps and save_secs:
        logger.warning("RunConfig sets both save_checkpoints_steps=%s and save_checkpoints_secs=%s: "
                       "checkpoints are saved every %s steps (save_checkpoints_steps wins).",
                       save_steps, save_secs, save_steps)
    if not (save_steps or save_secs):
        return None
    return CheckpointSaverHook(session.model_dir, save_secs=None if save_steps else save_secs,
                               save_steps=save_steps or None, clock=session.estimator.clock)


def restore(session: RunSession, spec, steps, max_steps) -> dict[str, Any]:
    """Restore the latest checkpoint or warm start, agree on the step, restore hook state.

    Returns the checkpoint's state (``{}`` without one) for :func:`open_input`.
    """
    state, global_step = _restore_checkpoint(session, spec)
    if session.lease is not None:  # training goes on: evaluators wait for its new end
        ckpt.clear_final(session.model_dir)
    strategy = session.strategy
    if max_steps is not None:  # PS: travels with the initial shards, so no push overshoots
        strategy.set_last_step(max_steps)
    session.global_step = strategy.after_restore(session.module, session.optimizer, global_step)
    session.last_step = max_steps if max_steps is not None else (
        session.global_step + steps if steps is not None else None)
    strategy.set_last_step(session.last_step)  # no-op for None or an unchanged value
    load_hook_states(session.hooks, state.get("hooks") or {})
    session.nan_rollbacks = max(session.nan_rollbacks, int(state.get("nan_rollbacks", 0)))
    return state


def _restore_checkpoint(session: RunSession, spec) -> tuple[dict[str, Any], int]:
    """Load the newest intact checkpoint into the model and optimizer; ``(state, global_step)``.

    The lease holder moves damaged newer checkpoints aside (see
    :func:`learnrun.model_dir.checkpoints.restore_checkpoint`).
    """
    restored = ckpt.restore_checkpoint(session.model_dir, move_damaged=session.lease is not None,
                                       clock=session.estimator.clock)
    if restored is None:
        settings = session.estimator.warm_start_settings
        if settings is not None:
            warm_start(spec.module, settings)
        return {}, 0
    latest, loaded = restored
    session.last_restored, session.restored_meta = latest, dict(loaded.meta)
    logger.info("Restoring parameters from %s", latest)
    load_weights(spec.module, loaded.weights, latest)
    state = loaded.state
    for key, target in (("optimizer", session.optimizer), ("scheduler", session.scheduler),
                        ("scaler", session.scaler)):
        if target is not None and state.get(key) is not None:
            target.load_state_dict(state[key])
    return state, int(state.get("global_step", ckpt.checkpoint_step(latest)))


def _trainer_part(session: RunSession, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with this trainer's own input position and RNG when the checkpoint has them
    (``trainer-<rank>.pt``, written by a cluster of as many trainers as this one)."""
    recorded = session.restored_meta.get("num_trainers") if state else None
    if not recorded:
        return state
    context = session.strategy.input_context()
    step = ckpt.checkpoint_step(session.last_restored)
    if int(recorded) != context.num_input_pipelines or step != session.global_step:
        if session.is_chief:
            logger.warning(
                "Checkpoint %s holds the input positions of %s trainers, but this run has %d: "
                "the input positions cannot be kept, so every trainer reads its shard from the "
                "beginning (weights, optimizer state and global step %d are restored).",
                session.last_restored, recorded, context.num_input_pipelines,
                session.global_step)
        return {k: v for k, v in state.items() if k not in ("input", "input_pipeline")}
    part = ckpt.load_trainer_state(session.last_restored, context.input_pipeline_id)
    if part is None:
        return state
    return {**state, "rng": part.get("rng"), "input": part.get("input"),
            "input_pipeline": part.get("input_pipeline", context.input_pipeline_id)}


def open_input(session: RunSession, input_fn, state: dict[str, Any]) -> Iterator:
    """Call ``input_fn``, restore its position and the RNG; put the module in training mode."""
    strategy = session.strategy
    iterable = call_input_fn(input_fn, ModeKeys.TRAIN, session.estimator.params, session.config,
                             strategy.input_context())
    state = _trainer_part(session, state)
    if state.get("input") is not None and callable(getattr(iterable, "load_state_dict", None)):
        pipeline = strategy.input_context().input_pipeline_id
        if int(state.get("input_pipeline", 0)) == pipeline:
            iterable.load_state_dict(state["input"])
        else:  # a checkpoint without trainer parts holds the chief's input position only
            logger.warning("The checkpoint holds the input position of pipeline %s, not of this "
                           "trainer's pipeline %d: its input starts from the beginning.",
                           state.get("input_pipeline", 0), pipeline)
    session.input = iterable
    protect_dataloader(iterable)  # workers must survive a SIGTERM sent to the process group
    iterator = iter(iterable)
    if state.get("rng") is not None:  # after model_fn, input_fn and iter(): as in the saving run
        ckpt.restore_rng_state(state["rng"])
    session.module.train()
    return iterator


# -- the loop -----------------------------------------------------------------------------------
def run_steps(session: RunSession, spec, iterator: Iterator, guard: PreemptionGuard) -> Any:
    """Step until every trainer agrees to stop; returns the last step's loss (None if none ran).

    A step, in order: the boundary (:func:`next_batch`: the batch, or a stop or NaN agreed by
    every trainer), the ``before_run`` hooks, the update (forward, loss, backward,
    ``strategy.apply_update``; or ``spec.train_step_fn``), the loss kept for the NaN check, the
    ``after_run`` hooks due (:func:`after_hooks`).

    The step is written out in this one frame, and what it reads is looked up once
    (:class:`StepPlan`) into locals: the same work spread over four calls per step cost 4-6 us
    more, 0.4% of a 1.1 ms CPU step (``docs/benchmarks.md``). Where this process decides alone
    and nothing asks to stop, the boundary is just ``next(iterator)``.
    """
    strategy = session.strategy
    plan = StepPlan(session, spec)
    local, move, device = plan.local_boundary, plan.move, plan.device
    before, busy, before_step, nan_every = plan.before, plan.busy, plan.before_step, plan.nan_every
    step_fn, loss_fn, autocast, clip = spec.train_step_fn, spec.loss_fn, plan.autocast, plan.clip
    update = strategy.apply_update
    last_loss = None
    while True:
        if local and not (guard.triggered or session.stop_requested) \
                and session.nan_message is None:  # nobody to agree with, nothing asks to stop
            batch = next(iterator, _STOP)
            if batch is _STOP:
                batch = next_batch(session, iterator, guard, exhausted=True)
        else:
            if guard.triggered and not strategy.preempted:
                strategy.notify_preempted()  # at the step boundary, never in the handler
            batch = next_batch(session, iterator, guard)
        if batch is _STOP:
            return last_loss
        if batch is _NAN:
            if not handle_nan(session, spec):
                return None
            continue
        features, labels = split_batch(batch, "train")
        if move:
            features, labels = to_device(features, device), to_device(labels, device)
        ctx, fetches = None, []
        if before:
            ctx = RunContext(session)
            for hook in before:
                args = hook.before_run(ctx)
                if args is not None:
                    fetches.extend(getattr(args, "fetches", ()))
        module, optimizer, step = session.module, session.optimizer, session.global_step
        if before_step is not None:
            before_step(module)
        if step_fn is not None:
            loss, outputs = step_fn(module, features, labels, optimizer), None
            if session.scheduler is not None:
                session.scheduler.step()
            step += 1
        else:
            optimizer.zero_grad(set_to_none=True)
            if autocast is None:
                outputs = forward(module, features, "train step", step + 1)
                loss = loss_fn(outputs, labels)
            else:
                with autocast():
                    outputs = forward(module, features, "train step", step + 1)
                    loss = loss_fn(outputs, labels)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise TypeError(f"loss_fn must return a scalar tensor, got {type(loss).__name__}"
                                f"{tuple(loss.shape) if torch.is_tensor(loss) else ''}.")
            scaler = session.scaler
            (scaler.scale(loss) if scaler is not None else loss).backward()
            step = update(module, optimizer, session.scheduler, clip, step, scaler)
        session.global_step = step
        if loss is not None:
            kept = session.kept_losses
            if isinstance(loss, torch.Tensor):
                loss = loss.detach()
                # a CPU value is read now, while in cache, at no cost; a hundred tensors read
                # cold at the check cost 1.3 us per step. Elsewhere reading syncs: kept as is.
                kept.append((step, loss.item() if loss.is_cpu else loss))
            else:
                kept.append((step, loss))
            if len(kept) >= nan_every:
                session.check_losses()
        last_loss = loss
        if plan.idle_seen != idle_changes():  # a hook's idle_* changed: the earliest due anew
            plan.read_idle()
        checking = plan.may_be_due(step)
        if checking or busy:
            after_hooks(session, plan, step, checking, ctx, fetches,
                        {"loss": loss, "outputs": outputs, "features": features, "labels": labels})


def after_hooks(session: RunSession, plan: StepPlan, step: int, checking: bool, ctx, fetches: list,
                results: dict) -> None:
    """Call ``after_run`` of the hooks due at ``step``: the busy ones, and the idle ones when
    ``checking`` (one of them may be due, :meth:`StepPlan.may_be_due`).

    Idle hooks are checked one by one only when one of them may be due. Otherwise only the
    busy hooks are called, until one of them moves the clock past the earliest due time or
    changes a hook's ``idle_*``: from there on every hook is checked, as at a due step.
    ``ctx``: the step's ``RunContext`` if ``before_run`` hooks had one; ``fetches``: the names
    they asked for.
    """
    values = None  # made for the first after_run called: at most steps every hook is idle
    for hook, may_idle in plan.after:
        if may_idle and (not checking or step < hook.idle_until_step or (
                hook.idle_clock is not None
                and hook.idle_clock.monotonic() < hook.idle_until_time)):
            continue
        if values is None:
            ctx = ctx if ctx is not None else RunContext(session)
            values = RunValues(results, step)
            if fetches:  # host values (device syncs) only when a hook asked for them
                values.fetched = fetch_values(fetches, session, values)
        hook.after_run(ctx, values)
        if not checking:
            checking = plan.idle_seen != idle_changes() or plan.may_be_due(step)


def hook_dispatch(hooks: list) -> tuple[list, list]:
    """``(hooks with a before_run, hooks with an after_run)``, each in ``hooks``' order.

    A hook that keeps ``SessionRunHook``'s no-op method (neither its class nor the instance
    overrides it) is left out of that list: calling it would do nothing, so the trace is the
    same without the per-step call.
    """
    return ([h for h in hooks if _overrides(h, "before_run", SessionRunHook)],
            [h for h in hooks if _overrides(h, "after_run", SessionRunHook)])


def skips_idle(hook: Any) -> bool:
    """True when ``hook`` is a ``SessionRunHook`` (which has the ``idle_*`` attributes) whose
    ``after_run`` is marked :func:`~learnrun.hooks.base.skips_idle_steps` (and not replaced
    on the instance): the loop may skip it while it is idle."""
    return isinstance(hook, SessionRunHook) and "after_run" not in vars(hook) \
        and bool(getattr(getattr(type(hook), "after_run", None), "skips_idle_steps", False))


def _overrides(obj: Any, name: str, base: type) -> bool:
    """True when ``obj`` (its class or the instance) replaces ``base``'s method ``name``."""
    return name in getattr(obj, "__dict__", {}) or getattr(type(obj), name, None) is not getattr(base, name)


class StepPlan:
    """What every step of one ``train`` call needs, looked up once instead of per step.

    ``before``: :func:`hook_dispatch`'s first list; ``after``: its second, as ``(hook,
    skips_idle(hook))`` pairs; ``busy``: the hooks of ``after`` that cannot idle;
    ``due_step``, ``due_time``, ``due_clock``: see :meth:`read_idle`; ``device``; ``move``:
    whether batches may need moving to ``device`` (False when it is the CPU and the machine
    has no accelerator, so no tensor can be elsewhere); ``autocast``: the ``torch.autocast`` factory of
    ``RunConfig.precision`` (None: full precision); ``clip``: the gradient-clipping norm (the
    spec's, else the RunConfig's); ``before_step``: the strategy's, when it does something
    (parameter servers load the shards' values); ``local_boundary``: this process decides
    alone at step boundaries (the strategy keeps ``Strategy``'s ``should_stop``,
    ``save_agreed`` and ``nan_agreed``, and saves are not deferred), so a boundary where
    nothing asks to stop needs none of those calls.
    """

    def __init__(self, session: RunSession, spec) -> None:
        self.before, after = hook_dispatch(session.hooks)
        self.after = [(hook, skips_idle(hook)) for hook in after]
        self.busy = [hook for hook, may_idle in self.after if not may_idle]
        self.read_idle()
        strategy, config = session.strategy, session.config
        self.device = strategy.device
        self.move = self.device.type != "cpu" or _has_accelerator()
        self.local_boundary = not session.defer_saves and not any(
            _overrides(strategy, name, Strategy) for name in ("should_stop", "save_agreed", "nan_agreed"))
        mixed = config.precision not in (None, "32", "32-true", 32)
        self.autocast = functools.partial(autocast_context, config, self.device) if mixed else None
        self.clip = spec.gradient_clip_norm or config.gradient_clip_norm
        self.before_step = strategy.before_step if _overrides(strategy, "before_step", Strategy) \
            else None
        # The losses are checked together every log_step_count_steps (100 without it), before
        # every checkpoint save and before training stops (session.check_losses), so a
        # checkpoint never holds the weights of a non-finite loss and the report names its
        # step. A cluster checks every step: each trainer's NaN must be agreed on before a save.
        every = 1 if config.is_distributed_trainer else (config.log_step_count_steps or 100)
        self.nan_every = min(every, NanTensorHook.MAX_KEPT)

    def read_idle(self) -> None:
        """Note the earliest moment an idle hook may be due (the loop calls this when
        :func:`~learnrun.hooks.base.idle_changes` moved since the last time).

        ``due_step``: below it no hook idle by step alone is due. ``due_time`` on
        ``due_clock``: before it no hook idle by time is due. Until then only the ``busy``
        hooks (those not marked ``skips_idle_steps``) are called. Idle hooks on different
        clocks: every step checks every hook.
        """
        self.idle_seen = idle_changes()
        due_step, due_time, clocks = sys.maxsize, math.inf, set()
        for hook, may_idle in self.after:
            if not may_idle:
                continue
            clock, moment = hook.idle_clock, hook.idle_until_time
            if clock is None or moment == -math.inf:
                due_step = min(due_step, hook.idle_until_step)
            else:
                due_time = min(due_time, moment)
                clocks.add(clock)
        if len(clocks) > 1:
            due_step = 0
        self.due_step, self.due_time = due_step, due_time
        self.due_clock = clocks.pop() if len(clocks) == 1 else None

    def may_be_due(self, step: int) -> bool:
        """False when no idle hook can be due at ``step`` now (as of :meth:`read_idle`)."""
        return step >= self.due_step or self.due_clock is not None \
            and self.due_clock.monotonic() >= self.due_time


def _has_accelerator() -> bool:
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return bool(accelerator.is_available())
    return bool(torch.cuda.is_available())


def next_batch(session: RunSession, iterator: Iterator, guard: PreemptionGuard,
               exhausted: bool = False) -> Any:
    """The next batch, ``_STOP`` when ``strategy.should_stop`` says every trainer stops, or
    ``_NAN`` when any trainer's loss was NaN (:func:`handle_nan`).

    The batch is fetched before agreeing to go on, so that a trainer whose input shard ends
    first stops every trainer through the collective instead of leaving its peers in an
    all-reduce. No batch is fetched once this process wants to stop (the input position saved
    in the checkpoint stays exact). ``exhausted``: the caller found the input exhausted
    already (:func:`run_steps`, which fetches by itself where there is nobody to agree with).
    """
    strategy = session.strategy
    if session.defer_saves:
        session.capture_trainer_state()  # this trainer's part of a save agreed below
    local_stop = session.stop_requested or guard.triggered
    batch = None
    if not (local_stop or exhausted) and session.nan_message is None:  # a NaN: fetch nothing
        try:
            batch = next(iterator)
        except StopIteration:
            exhausted = True
    if local_stop or exhausted:
        session.check_losses()  # a NaN not checked yet is handled before the stop and its save
    if session.nan_message is not None:
        strategy.notify_nan()
    stop = strategy.should_stop(local_stop or exhausted)
    save = strategy.save_agreed()
    if strategy.nan_agreed():
        session.nan_extra_batch = batch is not None
        return _NAN
    if session.defer_saves and (stop or save):
        session.gather_trainer_states()  # collective: the chief gets every trainer's part
        if save and not stop and session.saver_hook is not None and session.is_chief \
                and session.saver_hook.save_requested(session):
            session.request_stop()
    if stop:
        # With parameter servers another trainer's push (or a heartbeat's stop code) may have
        # moved the shared step past the chief's last answer: its final save names that step.
        if session.is_chief:
            session.global_step = max(session.global_step, session.shared_global_step())
        if exhausted:
            logger.info("Input exhausted at global step %d; training stops.", session.global_step)
        return _STOP
    return batch


def handle_nan(session: RunSession, spec) -> bool:
    """Apply ``RunConfig.on_nan_loss`` (every trainer at once); False: stop training.

    ``raise``: ``NanLossDuringTrainingError``. ``stop``: no further step and no further save (the
    last good checkpoint stays the latest). ``rollback``: load the newest checkpoint (weights,
    optimizer, scheduler, scaler, global step, hook state) and go on reading the input where
    it is, so the batches consumed since that checkpoint, the bad one included, are skipped;
    logged, and counted in the ``nan_rollbacks`` scalar. After ``max_nan_rollbacks`` rollbacks
    the next non-finite loss raises.
    """
    config = session.config
    message = session.nan_message or (
        f"NaN loss during training (another trainer's loss was NaN or infinite at step "
        f"{session.global_step}).")
    session.nan_message = message  # on every trainer: these weights are never saved
    policy = config.on_nan_loss
    if policy == "raise":
        raise NanLossDuringTrainingError(message)
    if policy == "stop":
        logger.warning("%s Training stops (RunConfig(on_nan_loss='stop')); the latest checkpoint "
                       "%s keeps the last good weights.", message,
                       ckpt.latest_checkpoint(session.model_dir))
        return False
    if not session.strategy.can_roll_back:
        raise NanLossDuringTrainingError(
            f"{message} RunConfig(on_nan_loss='rollback') cannot roll back with parameter "
            "servers (the parameters live on the ps tasks); use 'stop' or 'raise'.")
    if session.nan_rollbacks >= config.max_nan_rollbacks:
        raise NanLossDuringTrainingError(
            f"{message} Training already rolled back {session.nan_rollbacks} time(s) "
            f"(RunConfig(max_nan_rollbacks={config.max_nan_rollbacks})).")
    session.wait_for_checkpoints()
    bad_step = session.global_step
    state, step = _restore_checkpoint(session, spec)
    if not state:
        raise NanLossDuringTrainingError(
            f"{message} There is no checkpoint in {session.model_dir} to roll back to.")
    session.nan_message = None
    session.cancel_stop_request()  # made after the checkpoint (the last step reached): redone
    session.nan_rollbacks += 1
    session.global_step = session.strategy.after_restore(session.module, session.optimizer, step)
    load_hook_states(session.hooks, state.get("hooks") or {})
    if session.saver_hook is not None:
        session.saver_hook.restart_from(session.global_step)
    skipped = bad_step - session.global_step + int(session.nan_extra_batch)
    logger.warning("%s Rolled back to checkpoint %s (step %d), skipping the %d batch(es) consumed "
                   "since; rollback %d of at most %d.", message,
                   session.last_restored, session.global_step, skipped, session.nan_rollbacks,
                   config.max_nan_rollbacks)
    session.nan_skipped_batches += skipped
    if session.is_chief:
        summaries.write_scalars(session.model_dir, session.global_step,
                                {"nan_rollbacks": session.nan_rollbacks})
    return True


# -- after the loop -----------------------------------------------------------------------------
def preempt(session: RunSession, guard: PreemptionGuard) -> NoReturn:
    """Save a checkpoint (the chief), run every ``end``, raise ``PreemptedError``."""
    signal_name = guard.signal_name if guard.triggered else "a peer's preemption"
    logger.warning("Received %s at global step %d: saving a checkpoint and stopping.",
                   signal_name, session.global_step)
    path = session.save_checkpoint()
    for hook in session.hooks:
        hook.end(session)
    saved = f"checkpoint {path} was saved" if session.is_chief else "the chief saved a checkpoint"
    message = (f"Training was preempted by {signal_name} at global step {session.global_step}; "
               f"{saved}. Run the job again to resume from it.")
    logger.warning("%s", message)
    raise PreemptedError(message)


def finish(session: RunSession, last_loss: Any) -> None:
    """The normal end: every hook's ``end`` (the final save among them), the final loss."""
    for hook in session.hooks:
        hook.end(session)
    if last_loss is not None:
        logger.info("Loss for final step: %s.", to_python(last_loss))


def close(session: RunSession, iterator: Iterator, failing: bool = False) -> None:
    """However training ended: stop DataLoader workers, close progress bars, flush summaries.

    ``failing``: an exception is on its way out; a flush error (a full disk) is logged
    instead of replacing it.
    """
    shutdown_workers(iterator)  # DataLoader workers stop before the process exits
    for hook in session.hooks:
        if isinstance(hook, ProgressHook):
            hook.close()
    if session.is_chief:
        try:
            summaries.flush_all()
        except OSError as exc:
            if not failing:
                raise
            logger.error("Flushing the summaries failed too: %s", exc)
