"""The Estimator's loops: the training loop, the hooked evaluation/prediction loop, the session.

Internal to :class:`learnrun.estimator.estimator.Estimator`; the hook-visible execution trace
is documented in :mod:`learnrun.hooks`, the strategy calls in
:mod:`learnrun.distributed.base`.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from learnrun._version import __version__
from learnrun.distributed import LocalStrategy
from learnrun.errors import PreemptedError
from learnrun.estimator.preemption import PreemptionGuard, protect_dataloader, shutdown_workers
from learnrun.estimator.spec import ModeKeys
from learnrun.estimator.step import (
    _make_scaler,
    autocast_context,
    forward,
    load_weights,
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
from learnrun.hooks.base import to_python
from learnrun.hooks.base import fetch_value
from learnrun.hooks.progress import ProgressHook
from learnrun.model_dir import checkpoints as ckpt
from learnrun.model_dir import eval_results, summaries

logger = logging.getLogger("learnrun")


class RunSession:
    """What hooks see of the running loop (see :mod:`learnrun.hooks`)."""

    def __init__(self, estimator, module, optimizer, scheduler, strategy, mode: str,
                 scaler=None) -> None:
        self.estimator = estimator
        self.module = module
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.strategy = strategy
        self.mode = mode
        self.scaler = scaler
        self.config = estimator.config
        self.model_dir = estimator.model_dir
        self.is_chief = bool(getattr(strategy, "is_chief", True))
        self.global_step = 0
        self.last_step: int | None = None
        self.input = None
        self.hooks: list = []
        self.saver_hook: CheckpointSaverHook | None = None
        self.last_checkpoint_path: str | None = None
        self._stop = False
        self._managers: dict[str, ckpt.CheckpointManager] = {}

    def request_stop(self) -> None:
        self._stop = True

    @property
    def stop_requested(self) -> bool:
        return self._stop

    def shared_global_step(self) -> int:
        return int(self.strategy.shared_global_step(self.global_step))

    def save_checkpoint(self) -> str | None:
        """Save now through the saver hook (its listeners run); chief only."""
        if not self.is_chief or self.mode != ModeKeys.TRAIN:
            return None
        if self.saver_hook is not None:
            return self.saver_hook.save_now(self)
        return self.write_checkpoint(self.model_dir)

    def checkpoint_step(self, directory: str) -> int | None:
        latest = ckpt.latest_checkpoint(directory)
        return None if latest is None else ckpt.checkpoint_step(latest)

    def write_checkpoint(self, directory: str) -> str:
        """Write the full training state atomically into ``directory`` (no listeners)."""
        import torch


        weights, opt_state = self.strategy.state_for_checkpoint(self.module, self.optimizer)
        state: dict[str, Any] = {"global_step": int(self.global_step), "optimizer": opt_state,
                                 "rng": ckpt.capture_rng_state(), "hooks": hook_states(self.hooks)}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.input is not None and callable(getattr(self.input, "state_dict", None)):
            state["input"] = self.input.state_dict()
            state["input_pipeline"] = self.strategy.input_context().input_pipeline_id
        manager = self._managers.get(directory)
        if manager is None:
            manager = ckpt.CheckpointManager(
                directory, self.config.keep_checkpoint_max,
                self.config.keep_checkpoint_every_n_hours,
                clock=getattr(self.estimator, "clock", None))
            self._managers[directory] = manager
        meta = {"global_step": int(self.global_step), "torch": torch.__version__,
                "learnrun": __version__}
        self.last_checkpoint_path = manager.save(int(self.global_step), weights, state, meta)
        return self.last_checkpoint_path


def _hook_keys(hooks: list) -> list[tuple[str, Any]]:
    counts: dict[str, int] = {}
    keyed = []
    for hook in hooks:
        name = type(hook).__name__
        keyed.append((f"{name}#{counts.get(name, 0)}", hook))
        counts[name] = counts.get(name, 0) + 1
    return keyed


def hook_states(hooks: list) -> dict[str, Any]:
    return {key: hook.state_dict() for key, hook in _hook_keys(hooks)
            if callable(getattr(hook, "state_dict", None))}


def _load_hook_states(hooks: list, states: dict[str, Any]) -> None:
    for key, hook in _hook_keys(hooks):
        if key in states and callable(getattr(hook, "load_state_dict", None)):
            hook.load_state_dict(states[key])


def _default_hooks(config: Any, device, session: RunSession, steps, max_steps) -> list:
    hooks: list = []
    if steps is not None or max_steps is not None:
        hooks.append(StopAtStepHook(num_steps=steps, last_step=max_steps))
    log_every = config.log_step_count_steps
    clock = session.estimator.clock
    hooks.append(NanTensorHook(every_n_iter=1 if device.type == "cpu" else (log_every or 100)))
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


def train_loop(est, spec, strategy, input_fn, hooks: list, steps, max_steps, listeners) -> None:
    """Run one ``Estimator.train`` call (see the execution trace in ``hooks``)."""
    import torch

    from learnrun.estimator.estimator import call_input_fn

    config = est.config
    module = strategy.prepare(spec.module, spec.optimizer)
    if spec.optimizer is not None and spec.optimizer.state:
        # State created eagerly in the optimizer's constructor (Adagrad's sums) is still where
        # the parameters were then; torch's own load_state_dict moves it next to them.
        spec.optimizer.load_state_dict(spec.optimizer.state_dict())
    device = strategy.device
    optimizer, scheduler = spec.optimizer, spec.scheduler
    scaler = _make_scaler(config, device)
    clip = spec.gradient_clip_norm or config.gradient_clip_norm
    session = RunSession(est, module, optimizer, scheduler, strategy, ModeKeys.TRAIN, scaler)
    all_hooks = list(hooks) + list(spec.training_hooks) + _default_hooks(
        config, device, session, steps, max_steps)
    savers = [h for h in all_hooks if isinstance(h, CheckpointSaverHook)]
    save_steps = config.save_checkpoints_steps
    save_secs = config.save_checkpoints_secs
    if save_steps and save_secs and not savers:
        logger.warning("RunConfig sets both save_checkpoints_steps=%s and save_checkpoints_secs=%s: "
                       "checkpoints are saved every %s steps (save_checkpoints_steps wins).",
                       save_steps, save_secs, save_steps)
    if (save_steps or save_secs) and not savers:
        savers = [CheckpointSaverHook(est.model_dir, save_secs=None if save_steps else save_secs,
                                      save_steps=save_steps or None, clock=est.clock)]
        if session.is_chief:
            all_hooks.append(savers[0])
    if listeners:
        if not savers:
            raise ValueError("There should be a CheckpointSaverHook to use saving_listeners. Please "
                             "set one of the RunConfig.save_checkpoints_steps or "
                             "RunConfig.save_checkpoints_secs.")
        savers[0].add_listeners(listeners)
    session.saver_hook = savers[0] if savers else None
    session.hooks = all_hooks

    for hook in all_hooks:
        hook.begin()
    state: dict[str, Any] = {}
    global_step = 0
    latest = ckpt.latest_checkpoint(est.model_dir)
    if latest is not None:
        logger.info("Restoring parameters from %s", latest)
        loaded = ckpt.load_checkpoint(latest)
        load_weights(spec.module, loaded.weights, latest)
        state = loaded.state
        if optimizer is not None and state.get("optimizer") is not None:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        global_step = int(state.get("global_step", ckpt.checkpoint_step(latest)))
    elif est._warm_start is not None:
        warm_start(spec.module, est._warm_start)
    if max_steps is not None:  # PS: travels with the initial shards, so no push overshoots
        strategy.set_last_step(max_steps)
    session.global_step = strategy.after_restore(module, optimizer, global_step)
    session.last_step = max_steps if max_steps is not None else (
        session.global_step + steps if steps is not None else None)
    strategy.set_last_step(session.last_step)  # no-op for None or an unchanged value
    _load_hook_states(all_hooks, state.get("hooks") or {})
    iterable = call_input_fn(input_fn, ModeKeys.TRAIN, est._params, config, strategy.input_context())
    if state.get("input") is not None and callable(getattr(iterable, "load_state_dict", None)):
        pipeline = strategy.input_context().input_pipeline_id
        if int(state.get("input_pipeline", 0)) == pipeline:
            iterable.load_state_dict(state["input"])
        else:  # only the chief's input position is in the checkpoint
            logger.warning("The checkpoint holds the input position of pipeline %s, not of this "
                           "trainer's pipeline %d: its input starts from the beginning.",
                           state.get("input_pipeline", 0), pipeline)
    session.input = iterable
    protect_dataloader(iterable)  # workers must survive a SIGTERM sent to the process group
    iterator = iter(iterable)
    if state.get("rng") is not None:  # after model_fn, input_fn and iter(): as in the saving run
        ckpt.restore_rng_state(state["rng"])
    module.train()

    def step_fn(features, labels):
        if spec.train_step_fn is not None:
            loss = spec.train_step_fn(module, features, labels, optimizer)
            if scheduler is not None:
                scheduler.step()
            return loss, None, session.global_step + 1
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(config, device):
            outputs = forward(module, features, f"train step {session.global_step + 1}")
            loss = spec.loss_fn(outputs, labels)
        if not torch.is_tensor(loss) or loss.numel() != 1:
            raise TypeError(f"loss_fn must return a scalar tensor, got {type(loss).__name__}"
                            f"{tuple(loss.shape) if torch.is_tensor(loss) else ''}.")
        (scaler.scale(loss) if scaler is not None else loss).backward()
        return loss, outputs, strategy.apply_update(module, optimizer, scheduler, clip,
                                                    session.global_step, scaler)

    last_loss = None
    try:
        with PreemptionGuard() as guard:
            for hook in all_hooks:
                hook.after_create_session(session, None)
            while True:
                if guard.triggered and not strategy.preempted:
                    strategy.notify_preempted()  # at the step boundary, never in the handler
                # Fetch before agreeing to go on, so that a trainer whose input shard ends
                # first stops every trainer through the collective instead of leaving its peers
                # in an all-reduce. No batch is fetched once this process wants to stop (the
                # input position saved in the checkpoint stays exact).
                local_stop = session.stop_requested or guard.triggered
                batch = exhausted = None
                if not local_stop:
                    try:
                        batch = next(iterator)
                    except StopIteration:
                        exhausted = True
                if strategy.should_stop(local_stop or bool(exhausted)):
                    if exhausted:
                        logger.info("Input exhausted at global step %d; training stops.",
                                    session.global_step)
                    break
                features, labels = split_batch(batch, "train")
                features, labels = to_device(features, device), to_device(labels, device)
                ctx = RunContext(session)
                fetches = [n for h in all_hooks for n in getattr(h.before_run(ctx), "fetches", ())]
                strategy.before_step(module)
                loss, outputs, session.global_step = step_fn(features, labels)
                last_loss = loss = loss.detach() if torch.is_tensor(loss) else loss
                results = {"loss": loss, "outputs": outputs, "features": features, "labels": labels}
                values = RunValues(results, session.global_step, _fetch(fetches, results, session))
                for hook in all_hooks:
                    hook.after_run(ctx, values)
            if guard.triggered or strategy.preempted:
                signal_name = guard.signal_name if guard.triggered else "a peer's preemption"
                logger.warning("Received %s at global step %d: saving a checkpoint and stopping.",
                               signal_name, session.global_step)
                path = session.save_checkpoint()
                for hook in all_hooks:
                    hook.end(session)
                saved = f"checkpoint {path} was saved" if session.is_chief else \
                    "the chief saved a checkpoint"
                message = (f"Training was preempted by {signal_name} at global step "
                           f"{session.global_step}; {saved}. Run the job again to resume "
                           "from it.")
                logger.warning("%s", message)
                raise PreemptedError(message)
            for hook in all_hooks:
                hook.end(session)
            if last_loss is not None:
                logger.info("Loss for final step: %s.", to_python(last_loss))
    finally:
        shutdown_workers(iterator)  # DataLoader workers stop before the process exits
        for hook in all_hooks:
            if isinstance(hook, ProgressHook):
                hook.close()
        if session.is_chief:
            summaries.flush_all()


def _fetch(names: list[str], results: dict, session: RunSession) -> dict[str, Any]:
    if not names:
        return {}
    return {name: fetch_value(name, session, RunValues(results, session.global_step)) for name in names}


def run_hooked_loop(est, spec, step: int, hooks: list, iterable, steps: int | None, mode: str,
                    batch_fn: Callable[[Any], tuple[Any, dict]]) -> Iterator[Any]:
    """Evaluation/prediction loop with the hook trace; yields ``batch_fn``'s first output."""
    session = RunSession(est, spec.module, None, None, LocalStrategy(est.config), mode)
    session.global_step = step
    session.hooks = hooks
    for hook in hooks:
        hook.begin()
    for hook in hooks:
        hook.after_create_session(session, None)
    iterator = iter(iterable)
    done = 0
    while not session.stop_requested and (steps is None or done < steps):
        try:
            batch = next(iterator)
        except StopIteration:
            break
        ctx = RunContext(session)
        for hook in hooks:
            hook.before_run(ctx)
        value, results = batch_fn(batch)
        done += 1
        values = RunValues(results, step)
        for hook in hooks:
            hook.after_run(ctx, values)
        yield value
    for hook in hooks:
        hook.end(session)


def _metric_inputs(key: str, wanted: str, predictions: dict) -> Any:
    if wanted in predictions:
        return predictions[wanted]
    if wanted == "predictions":
        return next(iter(predictions.values())) if len(predictions) == 1 else predictions
    raise ValueError(f"eval_metric_ops[{key!r}].learnrun_inputs is {wanted!r}; use 'outputs', "
                     f"'predictions' or a key of predictions_fn's dict: {sorted(predictions)}.")


def _metric_value(value: Any) -> Any:
    if hasattr(value, "detach"):
        return to_python(value.float() if value.is_floating_point() else value)
    if isinstance(value, dict):
        return {k: _metric_value(v) for k, v in value.items()}
    return value


def run_evaluation(est, spec, step: int, device, path: str, input_fn, steps, hooks, name,
                   strategy=None) -> dict:
    """Evaluate the restored ``spec.module``; write summaries and ``results.jsonl``.

    With a joined synchronous ``strategy`` every trainer evaluates its own shard (disjoint,
    through ``input_context``: nothing is counted twice); the loss is the mean over every
    trainer's batches (``reduce_sum``), torchmetrics metrics sync in ``compute()``, and only
    the chief writes the results.
    """
    import torch

    from learnrun.estimator.estimator import call_input_fn

    if spec.loss_fn is None:
        raise ValueError("evaluate needs EstimatorSpec.loss_fn (the results always hold 'loss').")
    metrics = {}
    for key, metric in (spec.eval_metric_ops or {}).items():
        metric = copy.deepcopy(metric)
        metric.reset()
        metrics[key] = metric.to(device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    context = strategy.input_context() if strategy is not None else None
    iterable = call_input_fn(input_fn, ModeKeys.EVAL, est._params, est.config, context)

    def eval_batch(batch):
        nonlocal total
        features, labels = split_batch(batch, "evaluate")
        features, labels = to_device(features, device), to_device(labels, device)
        with torch.no_grad(), autocast_context(est.config, device):
            outputs = forward(spec.module, features, f"evaluate (checkpoint step {step})")
            loss = spec.loss_fn(outputs, labels)
        total = total + loss.detach().double()
        with torch.no_grad():
            predictions = None
            for key, metric in metrics.items():
                wanted = getattr(metric, "learnrun_inputs", "outputs")
                if wanted == "outputs":
                    metric.update(outputs, labels)
                    continue
                if predictions is None:
                    predictions = spec.predictions(outputs)
                metric.update(_metric_inputs(key, wanted, predictions), labels)
        return None, {"loss": loss.detach(), "outputs": outputs, "features": features,
                      "labels": labels}

    all_hooks = list(hooks) + list(spec.evaluation_hooks)
    count = sum(1 for _ in run_hooked_loop(est, spec, step, all_hooks, iterable, steps,
                                           ModeKeys.EVAL, eval_batch))
    loss_sum = float(total.item())
    if strategy is not None:  # Collective: every trainer reaches this point
        loss_sum, count = strategy.reduce_sum(loss_sum), int(strategy.reduce_sum(count))
    if count == 0:
        raise ValueError("evaluate: input_fn produced no batches. Give it data (or check that a "
                         "one-shot iterable was not already consumed).")
    results: dict[str, Any] = {key: _metric_value(m.compute()) for key, m in metrics.items()}
    results["loss"] = loss_sum / count
    results["global_step"] = int(step)
    logger.info("Saving dict for global step %d: %s", step,
                ", ".join(f"{k} = {v}" for k, v in sorted(results.items())))
    if strategy is not None and not strategy.is_chief:
        return results
    out_dir = est.eval_dir(name)
    scalars = {k: v for k, v in results.items()
               if k != "global_step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
    summaries.write_scalars(out_dir, step, scalars)
    summaries.flush(out_dir)
    eval_results.append_eval_result(out_dir, {"checkpoint_path": os.fspath(path), **results})
    return results
