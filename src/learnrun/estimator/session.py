"""``RunSession``: what hooks see of a running loop, and how hook state travels in checkpoints.

The training loop (:mod:`learnrun.estimator.train_loop`) and the evaluation/prediction loop
(:mod:`learnrun.estimator.eval_loop`) each build one ``RunSession`` and pass it to every hook.
Hooks that define ``state_dict()`` / ``load_state_dict(state)`` have that state saved in every
checkpoint, keyed by class name and position among the hooks of that class
(``"EarlyStoppingHook#0"``), and restored before ``after_create_session``.
"""

from __future__ import annotations

import logging
from typing import Any

from learnrun.estimator.spec import ModeKeys
from learnrun.hooks import CheckpointSaverHook, NanTensorHook
from learnrun.hooks.basic import first_non_finite, nan_loss_message
from learnrun.model_dir import checkpoints as ckpt
from learnrun.model_dir import summaries
from learnrun.model_dir.storage import is_remote

logger = logging.getLogger(__name__)


class RunSession:
    """What hooks see of the running loop (see :mod:`learnrun.estimator.train_loop`).

    ``estimator, module, optimizer, scheduler, strategy, scaler, mode, config, model_dir,
    is_chief, global_step, last_step, input, hooks``; ``request_stop()``,
    ``shared_global_step()``, ``save_checkpoint()``, ``check_losses()``; ``nan_message`` (set
    by ``report_nan`` until the loop handles it: nothing is saved meanwhile),
    ``nan_rollbacks`` (so far); ``kept_losses``: the training loop's ``(global step, loss)``
    pairs not checked yet.
    """

    def __init__(self, estimator, module, optimizer, scheduler, strategy, mode: str,
                 scaler=None, lease=None) -> None:
        self.estimator = estimator
        self.module = module
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.strategy = strategy
        self.mode = mode
        self.scaler = scaler
        self.config = estimator.config
        self.model_dir = estimator.model_dir
        self.is_chief = bool(strategy.is_chief)
        self.global_step = 0
        self.last_step: int | None = None
        self.input = None
        self.hooks: list = []
        self.saver_hook: CheckpointSaverHook | None = None
        self.last_checkpoint_path: str | None = None
        #: set by ``request_stop()`` (read it; never set it directly)
        self.stop_requested = False
        self._managers: dict[str, ckpt.CheckpointManager] = {}
        self.lease = lease  # held by the chief while it trains (learnrun.model_dir.lease)
        self.nan_message: str | None = None
        self.kept_losses: list[tuple[int, Any]] = []
        self.nan_rollbacks = 0
        self.nan_skipped_batches = 0  # by this trainer, over this run's rollbacks
        self.nan_extra_batch = False  # fetched at the boundary where the NaN was agreed
        self.last_restored: str | None = None  # the checkpoint restored (or rolled back to)
        self.restored_meta: dict = {}
        # synchronous clusters: every trainer's part of each checkpoint (see train_loop)
        self.defer_saves = bool(getattr(strategy, "gathers_trainer_states", False))
        self._trainer_part: dict | None = None
        self._gathered: tuple[int, list] | None = None
        self._warned_parts = False

    def request_save(self) -> None:
        """Chief: ask every trainer to save at the next step boundary (``defer_saves``)."""
        self.strategy.request_save()

    def capture_trainer_state(self) -> None:
        """Remember this trainer's input position and torch RNG as they are now (a step
        boundary, before the next batch is fetched): its part of a checkpoint saved at this
        step. Cheap, as it runs at every boundary: the Python and numpy RNG states, whose
        capture is not, are taken at :meth:`gather_trainer_states`, after the fetch (an input
        that draws from them while fetching is resumed one draw later)."""
        import copy

        import torch

        part: dict[str, Any] = {"torch": torch.get_rng_state(),
                                "input_pipeline": self.strategy.input_context().input_pipeline_id}
        if torch.cuda.is_available():
            part["cuda"] = torch.cuda.get_rng_state_all()
        if self.input is not None and callable(getattr(self.input, "state_dict", None)):
            part["input"] = copy.deepcopy(self.input.state_dict())
        self._trainer_part = part

    def gather_trainer_states(self) -> None:
        """Collective: hand the captured part to the chief, which keeps every trainer's."""
        part = dict(self._trainer_part or {})
        rng = ckpt.capture_rng_state()
        rng.update((k, part.pop(k)) for k in ("torch", "cuda") if k in part)
        part["rng"] = rng
        states = self.strategy.gather_trainer_states(part)
        self._gathered = (int(self.global_step), states) if states is not None else None

    def check_losses(self) -> None:
        """Check now the losses kept since the last check: the loop's (``kept_losses``) and
        every :class:`NanTensorHook`'s.

        Called every few steps (see :mod:`learnrun.estimator.train_loop`), before every
        checkpoint save and before training stops, so that a non-finite loss is reported
        (:meth:`report_nan`) before its weights could be saved.
        """
        if self.kept_losses:
            kept, self.kept_losses = self.kept_losses, []
            step = first_non_finite(kept)
            if step is not None:
                self.report_nan(nan_loss_message("loss", step))
        for hook in self.hooks:
            if isinstance(hook, NanTensorHook):
                hook.flush(self)

    def cancel_stop_request(self) -> None:
        """Forget ``request_stop()`` (a NaN rollback went back to before the request)."""
        self.stop_requested = False

    def report_nan(self, message: str) -> None:
        """A loss was NaN or infinite: no checkpoint is written until the loop has handled it."""
        logger.error("%s", message)
        self.nan_message = message

    def request_stop(self) -> None:
        self.stop_requested = True

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

    def write_checkpoint(self, directory: str):
        """Write the full training state into ``directory`` (no listeners).

        Returns the checkpoint's path, or with ``RunConfig(async_checkpoint=True)`` (the default
        for a remote ``directory``) a
        :class:`~learnrun.model_dir.checkpoints.PendingSave` (the state is already copied to
        CPU memory; the files are written in the background). Checks the lease first.
        """
        weights, opt_state = self.strategy.state_for_checkpoint(self.module, self.optimizer)
        state: dict[str, Any] = {"global_step": int(self.global_step), "optimizer": opt_state,
                                 "rng": ckpt.capture_rng_state(), "hooks": hook_states(self.hooks),
                                 "nan_rollbacks": int(self.nan_rollbacks)}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        trainer_states = None
        if self.defer_saves and self._gathered is not None \
                and self._gathered[0] == int(self.global_step):
            trainer_states = self._gathered[1]
            chief = trainer_states[0]
            state["rng"] = chief["rng"]
            if chief.get("input") is not None:
                state["input"], state["input_pipeline"] = chief["input"], chief["input_pipeline"]
        elif self.input is not None and callable(getattr(self.input, "state_dict", None)):
            if self.defer_saves and not self._warned_parts:
                self._warned_parts = True
                logger.warning("A checkpoint saved at step %d outside a step boundary holds the "
                               "chief's input position only; the other trainers restart from "
                               "the beginning of their shards.", self.global_step)
            state["input"] = self.input.state_dict()
            state["input_pipeline"] = self.strategy.input_context().input_pipeline_id
        manager = self._managers.get(directory)
        if manager is None:
            manager = ckpt.CheckpointManager(
                directory, self.config.keep_checkpoint_max,
                self.config.keep_checkpoint_every_n_hours, clock=self.estimator.clock)
            self._managers[directory] = manager
        meta = {"global_step": int(self.global_step), "config_uid": self.config.uid()}
        if self.lease is not None and directory == self.model_dir:
            self.lease.check()
        summaries.flush_remote()  # a remote model_dir gets the event files at every checkpoint
        use_async = self.config.async_checkpoint
        if use_async is None:  # the default: uploads to an object store overlap training
            use_async = is_remote(directory)
        if use_async:
            pending = manager.save_async(int(self.global_step), weights, state, meta,
                                         trainer_states=trainer_states)
            self.last_checkpoint_path = pending.path
            return pending
        self.last_checkpoint_path = manager.save(int(self.global_step), weights, state, meta,
                                                 trainer_states=trainer_states)
        return self.last_checkpoint_path

    def wait_for_checkpoints(self, failing: bool = False) -> None:
        """Wait for the asynchronous saves in flight; ``failing``: log their errors, not raise."""
        for manager in self._managers.values():
            try:
                manager.wait()
            except Exception as exc:
                if not failing:
                    raise
                logger.error("The checkpoint save in flight failed too: %s", exc)


def _hook_keys(hooks: list) -> list[tuple[str, Any]]:
    counts: dict[str, int] = {}
    keyed = []
    for hook in hooks:
        name = type(hook).__name__
        keyed.append((f"{name}#{counts.get(name, 0)}", hook))
        counts[name] = counts.get(name, 0) + 1
    return keyed


def hook_states(hooks: list) -> dict[str, Any]:
    """``{key: hook.state_dict()}`` for the hooks that have state (see the module docstring)."""
    return {key: hook.state_dict() for key, hook in _hook_keys(hooks)
            if callable(getattr(hook, "state_dict", None))}


def load_hook_states(hooks: list, states: dict[str, Any]) -> None:
    """Give each hook with ``load_state_dict`` its state from ``states`` (keys as saved)."""
    for key, hook in _hook_keys(hooks):
        if key in states and callable(getattr(hook, "load_state_dict", None)):
            hook.load_state_dict(states[key])
