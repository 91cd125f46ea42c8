"""``learnrun.Estimator``: train, evaluate, predict and export a PyTorch model (TF semantics).

``model_fn(params, config[, mode]) -> EstimatorSpec`` builds a fresh model for every
``train``/``evaluate``/``predict``/``export`` call; the model directory holds the state between
calls (checkpoints, TensorBoard events, evaluation results), so every call starts from the
latest checkpoint. The loop and hook order are documented in
:mod:`learnrun.estimator.train_loop` (training) and :mod:`learnrun.estimator.eval_loop`
(evaluation and prediction).
"""

from __future__ import annotations

import copy
import logging
import os
import random
import re
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from learnrun import export
from learnrun.config.cluster import TaskType
from learnrun.config.run_config import RunConfig
from learnrun.distributed import LocalStrategy, make_strategy
from learnrun.errors import CheckpointError, NotFittedError, PreemptedError
from learnrun.estimator.eval_loop import run_evaluation, run_prediction
from learnrun.estimator.spec import EstimatorSpec, ModeKeys
from learnrun.estimator.step import RNGFork, call_input_fn, load_weights, to_numpy
from learnrun.estimator.train_loop import train_loop
from learnrun.hooks import SessionRunHook
from learnrun.hooks.saver import checked_listeners
from learnrun.model_dir import checkpoints as ckpt
from learnrun.model_dir import eval_results
from learnrun.model_dir.lease import Lease
from learnrun.model_dir.storage import check_access, is_url, storage_for
from learnrun.signatures import accepted_args, call_with_accepted, required_parameters

logger = logging.getLogger(__name__)

_MODEL_FN_ARGS = ("params", "config", "mode")


class WarmStartSettings:
    """Initialise a new model from another run's checkpoint (TF's ``WarmStartSettings``).

    ``ckpt_to_initialize_from``: a ``ckpt-<step>`` directory or a model directory (its latest
    checkpoint). ``vars_to_warm_start``: a regex (or list of regexes) over parameter names;
    only matching weights are copied. Used only when ``model_dir`` has no checkpoint yet.
    """

    def __init__(self, ckpt_to_initialize_from: str, vars_to_warm_start: str | list[str] = ".*") -> None:
        if not ckpt_to_initialize_from:
            raise ValueError("WarmStartSettings needs ckpt_to_initialize_from: a checkpoint or "
                             f"model directory, got {ckpt_to_initialize_from!r}.")
        self.ckpt_to_initialize_from = os.fspath(ckpt_to_initialize_from)
        patterns = [vars_to_warm_start] if isinstance(vars_to_warm_start, str) else list(vars_to_warm_start)
        self.vars_to_warm_start = [re.compile(p) for p in patterns]


class Estimator:
    """Train, evaluate, predict with and export the model that ``model_fn`` builds.

    Args:
      model_fn: ``model_fn(params, config[, mode]) -> EstimatorSpec``; any of the three
        arguments may be left out of its signature.
      model_dir: where checkpoints and summaries go; defaults to ``config.model_dir``, then to
        a new temporary directory (logged).
      config: a ``learnrun.RunConfig`` (default ``RunConfig()``).
      params: hyperparameters passed to ``model_fn`` (deep-copied).
      warm_start_from: a checkpoint or model directory path, or ``WarmStartSettings``.
      clock: a ``learnrun.clock.Clock`` for the default hooks' timers and export timestamps
        (tests pass a ``FakeClock``); the system clock when None.
    """

    def __init__(self, model_fn, model_dir: str | None = None, config: Any = None,
                 params: Any = None, warm_start_from: Any = None, *, clock: Any = None) -> None:
        if not callable(model_fn):
            raise TypeError(f"model_fn must be callable, got {model_fn!r}.")
        unknown = [n for n in required_parameters(model_fn) if n not in _MODEL_FN_ARGS]
        if unknown:
            raise ValueError(f"model_fn has following not expected args: {unknown}. learnrun calls "
                             "model_fn(params, config, mode) with only the arguments it names; "
                             "features and labels go to the module, not to model_fn.")
        if params and "params" not in accepted_args(model_fn, _MODEL_FN_ARGS):
            raise ValueError(f"model_fn ({model_fn}) does not take params argument, but params "
                             f"({params}) were passed to the Estimator's constructor.")
        self._model_fn = model_fn
        self._config = self._resolve_config(config, model_dir)
        self._model_dir = self._config_model_dir(model_dir)
        self._params = copy.deepcopy(params) if params is not None else {}
        if warm_start_from is not None and not isinstance(warm_start_from, WarmStartSettings):
            if not isinstance(warm_start_from, (str, os.PathLike)):
                raise TypeError("warm_start_from must be a path or WarmStartSettings, got "
                                f"{type(warm_start_from).__name__}: {warm_start_from!r}.")
            warm_start_from = WarmStartSettings(os.fspath(warm_start_from))
        self._warm_start = warm_start_from
        self._strategy = None
        self._trained = False
        self.clock = clock

    # -- construction helpers ---------------------------------------------------------------
    @staticmethod
    def _resolve_config(config: Any, model_dir: str | None) -> RunConfig:
        if config is None:
            config = RunConfig()
        elif not isinstance(config, RunConfig):
            raise ValueError("config must be an instance of `RunConfig`, but provided "
                             f"{config!r}.")
        if model_dir is not None and config.model_dir is None:
            config = config.replace(model_dir=os.fspath(model_dir))
        return config

    def _config_model_dir(self, model_dir: str | None) -> str:
        config_dir = self._config.model_dir
        if model_dir is not None and config_dir is not None and os.fspath(model_dir) != config_dir:
            raise ValueError(
                "model_dir are set both in constructor and RunConfig, but with different values. "
                f"In constructor: '{model_dir}', in RunConfig: '{config_dir}' ")
        chosen = model_dir or config_dir
        if not chosen:
            chosen = tempfile.mkdtemp(prefix="learnrun-")
            logger.warning("Using temporary folder as model directory: %s", chosen)
            self._config = self._config.replace(model_dir=chosen)
        chosen = os.fspath(chosen)
        if is_url(chosen):  # never a local path: a bad URL, a missing backend, no credentials,
            check_access(chosen)  # an unknown bucket: one line here, in every role
            return storage_for(chosen).normpath(chosen)
        if os.path.exists(chosen) and not os.path.isdir(chosen):
            raise ValueError(f"model_dir {chosen!r} is an existing file, not a directory. Pass a "
                             "directory (it is created if missing) for checkpoints and summaries.")
        return chosen

    # -- properties ---------------------------------------------------------------------------
    @property
    def model_dir(self) -> str:
        return self._model_dir

    @property
    def config(self) -> RunConfig:
        return self._config

    @property
    def params(self):
        """A deep copy of the ``params`` given to the constructor (what ``input_fn`` receives)."""
        return copy.deepcopy(self._params)

    @property
    def model_fn(self):
        return self._model_fn

    @property
    def warm_start_settings(self) -> WarmStartSettings | None:
        """Where a model without a checkpoint is initialised from (``warm_start_from``), or None."""
        return self._warm_start

    def eval_dir(self, name: str | None = None) -> str:
        """``model_dir/eval`` or ``model_dir/eval_<name>``: where ``evaluate`` writes."""
        return eval_results.eval_dir(self._model_dir, name)

    def latest_checkpoint(self) -> str | None:
        """Path of the latest checkpoint directory in ``model_dir``, or None."""
        return ckpt.latest_checkpoint(self._model_dir)

    # -- model_fn -----------------------------------------------------------------------------
    def _call_model_fn(self, mode: str) -> EstimatorSpec:
        seed = self._config.tf_random_seed
        if seed is not None:
            random.seed(seed)
            np.random.seed(seed % (2**32))
            torch.manual_seed(seed)
        spec = call_with_accepted(self._model_fn,
                                  {"params": self._params, "config": self._config, "mode": mode})
        if not isinstance(spec, EstimatorSpec):
            raise TypeError(f"model_fn must return an EstimatorSpec, got {type(spec).__name__}: "
                            f"{spec!r:.80}.")
        return spec

    def _get_strategy(self):
        if self._strategy is None:
            self._strategy = make_strategy(self._config)
        return self._strategy

    # -- train ---------------------------------------------------------------------------------
    def train(self, input_fn, hooks=None, steps: int | None = None, max_steps: int | None = None,
              saving_listeners=None) -> Estimator:
        """Train from the latest checkpoint: ``steps`` more steps or up to global step ``max_steps``.

        Stops at the target, when the input is exhausted, or when a hook requests stop; saves
        a checkpoint every ``save_checkpoints_steps``/``secs`` and at the end (when a
        contrib-style ``RunConfig`` sets both, ``save_checkpoints_steps`` wins and the secs
        setting is ignored with a warning). On SIGTERM (or a first Ctrl-C) it saves and raises
        ``learnrun.errors.PreemptedError`` (exit code 143); a second Ctrl-C raises
        ``KeyboardInterrupt`` at once. A ``torch.utils.data.DataLoader`` returned by
        ``input_fn`` with ``num_workers > 0`` gets workers that ignore SIGTERM/SIGINT (see
        :mod:`learnrun.estimator.preemption`), so a signal sent to the whole process group
        still ends in a saved checkpoint.
        """
        if steps is not None and max_steps is not None:
            raise ValueError("Can not provide both steps and max_steps.")
        if steps is not None and steps <= 0:
            raise ValueError(f"Must specify steps > 0, given: {steps}")
        if max_steps is not None and max_steps <= 0:
            raise ValueError(f"Must specify max_steps > 0, given: {max_steps}")
        # With ps tasks the trainers go through the loop (it stops at once), so that the ps
        # tasks hear that training is over and exit instead of waiting for them.
        if max_steps is not None and not self._config.num_ps_replicas:
            latest = self.latest_checkpoint()
            if latest is not None and ckpt.checkpoint_step(latest) >= max_steps:
                logger.info("Skipping training since max_steps has already saved.")
                return self
        hooks = check_hooks(hooks)
        listeners = checked_listeners(saving_listeners, "saving_listeners")
        spec = self._call_model_fn(ModeKeys.TRAIN)
        if spec.train_step_fn is None and (spec.optimizer is None or spec.loss_fn is None):
            missing = "optimizer" if spec.optimizer is None else "loss_fn"
            raise ValueError(f"model_fn returned an EstimatorSpec without {missing}, which "
                             "training needs. Set EstimatorSpec(optimizer=..., loss_fn=...) or "
                             "train_step_fn.")
        self._trained = True
        strategy = self._get_strategy()
        strategy.setup()
        success = False
        lease = None
        try:
            if strategy.is_chief:  # the one writer of model_dir, until training ends
                lease = Lease(self._model_dir, clock=self.clock).acquire()
            last_step = train_loop(self, spec, strategy, input_fn, hooks, steps, max_steps,
                                   listeners, lease=lease)
            if lease is not None:  # a normal end: evaluators stop after this checkpoint
                lease.check()
                ckpt.mark_final(self._model_dir, self.latest_checkpoint(), last_step,
                                clock=self.clock)
            success = True
        except PreemptedError:
            success = True  # an agreed stop with a saved checkpoint: leave the cluster cleanly
            raise
        finally:
            if lease is not None:
                lease.release()
            strategy.teardown(success)
        return self

    # -- evaluate ------------------------------------------------------------------------------
    def _checkpoint_or_raise(self, checkpoint_path: str | None) -> str:
        path = checkpoint_path or self.latest_checkpoint()
        if not path:
            raise NotFittedError(f"Couldn't find trained model at {self._model_dir}.")
        return os.fspath(path)

    def _restored_spec(self, mode: str, checkpoint_path: str):
        loaded = ckpt.load_checkpoint(checkpoint_path)
        spec = self._call_model_fn(mode)
        load_weights(spec.module, loaded.weights, checkpoint_path)
        step = int(loaded.state.get("global_step", ckpt.checkpoint_step(checkpoint_path)))
        device = LocalStrategy(self._config).device
        spec.module.to(device)
        spec.module.eval()
        return spec, step, device

    def evaluate(self, input_fn, steps: int | None = None, hooks=None,
                 checkpoint_path: str | None = None, name: str | None = None) -> dict:
        """Evaluate a checkpoint (the latest by default) on ``steps`` batches or the whole input.

        Returns every metric of ``spec.eval_metric_ops`` plus ``loss`` (mean over batches) and
        ``global_step``; writes them as TensorBoard scalars to ``eval_dir(name)`` and appends
        one line to its ``results.jsonl``. The global RNG state is left unchanged.

        On an ``evaluator`` task (``continuous_eval``): a checkpoint already recorded in
        ``results.jsonl`` (e.g. before the evaluator restarted) is not evaluated again, its
        recorded result is returned; a checkpoint deleted by retention before it could be
        loaded is skipped with a warning and ``{}`` is returned.
        """
        if steps is not None and steps <= 0:
            raise ValueError(f"Must specify steps > 0, given: {steps}")
        hooks = check_hooks(hooks)
        path = self._checkpoint_or_raise(checkpoint_path)
        evaluator = self._config.task_type == TaskType.EVALUATOR
        if evaluator:
            recorded = self.recorded_eval_result(path, name)
            if recorded is not None:
                logger.info("Checkpoint %s is already recorded in %s: not evaluating it again.",
                            path, self.eval_dir(name))
                return recorded
        with RNGFork():
            try:
                spec, step, device = self._restored_spec(ModeKeys.EVAL, path)
            except (CheckpointError, OSError):
                if evaluator and not self._is_listed(path):
                    logger.warning("Skipping checkpoint %s: it was deleted (checkpoint "
                                   "retention) before it could be evaluated.", path)
                    return {}
                raise
            if not self._collective_evaluation():
                return run_evaluation(self, spec, step, device, path, input_fn, steps, hooks,
                                      name)
            strategy = self._get_strategy()
            strategy.setup()
            success = False
            try:
                spec.module.to(strategy.device)
                result = run_evaluation(self, spec, step, strategy.device, path, input_fn,
                                        steps, hooks, name, strategy)
                success = True
                return result
            finally:
                strategy.teardown(success)

    def _collective_evaluation(self) -> bool:
        """True on a synchronous distributed trainer that has not trained in this process.

        That is the ``evaluate`` schedule run on every trainer: they join the group and
        evaluate one shard each. A trainer that trained here (``local_run``, in-training
        validation on the chief) evaluates alone, without any collective.
        """
        config = self._config
        return (not self._trained and config.is_distributed_trainer
                and config.num_ps_replicas == 0)

    def evaluated_checkpoints(self, name: str | None = None) -> list[str]:
        """Checkpoint paths recorded in ``eval_dir(name)/results.jsonl``, oldest first."""
        return [os.path.normpath(r["checkpoint_path"])
                for r in eval_results.read_eval_results(self.eval_dir(name)) if "checkpoint_path" in r]

    def recorded_eval_result(self, checkpoint_path: str, name: str | None = None) -> dict | None:
        """The result recorded for ``checkpoint_path`` in ``eval_dir(name)/results.jsonl``, or None.

        ``continuous_eval`` uses it so that a restarted evaluator neither evaluates nor exports a
        checkpoint it already handled.
        """
        wanted = os.path.normpath(checkpoint_path)
        for record in reversed(eval_results.read_eval_results(self.eval_dir(name))):
            if os.path.normpath(str(record.get("checkpoint_path", ""))) == wanted:
                return {k: v for k, v in record.items() if k != "checkpoint_path"}
        return None

    def _is_listed(self, path: str) -> bool:
        wanted = os.path.normpath(path)
        return any(os.path.normpath(info.path) == wanted
                   for info in ckpt.list_checkpoints(self._model_dir))

    # -- predict -------------------------------------------------------------------------------
    def predict(self, input_fn, predict_keys=None, hooks=None, checkpoint_path: str | None = None,
                yield_single_examples: bool = True) -> Iterator[dict]:
        """Yield predictions (dicts of numpy arrays) for every batch of ``input_fn``.

        Each batch is ``features`` or ``(features, labels)`` (labels are ignored). With
        ``yield_single_examples`` each example is yielded on its own, else whole batches.
        ``predict_keys`` (a name or list) selects entries of ``predictions_fn``'s dict.
        """
        hooks = check_hooks(hooks)
        if isinstance(predict_keys, str):
            predict_keys = [predict_keys]
        path = self._checkpoint_or_raise(checkpoint_path)
        with RNGFork():
            spec, step, device = self._restored_spec(ModeKeys.PREDICT, path)
            iterable = call_input_fn(input_fn, ModeKeys.PREDICT, self.params, self._config, None)
        yield from run_prediction(self, spec, step, device, iterable, hooks, predict_keys,
                                  yield_single_examples)

    # -- variables ------------------------------------------------------------------------------
    def _latest_weights(self) -> dict:
        return ckpt.load_checkpoint(self._checkpoint_or_raise(None)).weights

    def get_variable_names(self) -> list[str]:
        """Names of the weights in the latest checkpoint (``NotFittedError`` when none)."""
        return sorted(self._latest_weights())

    def get_variable_value(self, name: str):
        """The value of weight ``name`` in the latest checkpoint, as a numpy array."""
        weights = self._latest_weights()
        if name not in weights:
            raise ValueError(f"Variable {name!r} is not in the latest checkpoint; its variables "
                             f"are: {sorted(weights)}.")
        return to_numpy(weights[name])

    # -- export ---------------------------------------------------------------------------------
    def export_savedmodel(self, export_dir_base: str, serving_input_fn, assets_extra=None,
                          as_text: bool = False, checkpoint_path: str | None = None,
                          strip_default_attrs: bool = False) -> str:
        """Export the (latest) checkpoint to ``export_dir_base/<timestamp>`` and return that path.

        The weights go into a fresh PREDICT-mode model, which ``learnrun.export.write_export``
        traces on ``serving_input_fn()``'s example features.
        """
        if serving_input_fn is None:
            raise ValueError("serving_input_fn must be defined.")
        if not callable(serving_input_fn):
            raise TypeError(f"serving_input_fn must be callable, got {serving_input_fn!r}.")
        path = self._checkpoint_or_raise(checkpoint_path)
        with RNGFork():
            spec, step, _ = self._restored_spec(ModeKeys.PREDICT, path)
            spec.module.to("cpu")
            return export.write_export(
                export_dir_base=os.fspath(export_dir_base), module=spec.module,
                predictions_fn=spec.predictions_fn, serving_input_fn=serving_input_fn,
                checkpoint_path=path, global_step=step, assets_extra=assets_extra,
                as_text=as_text, strip_default_attrs=strip_default_attrs, clock=self.clock,
                label_vocabulary=self.export_label_vocabulary())

    export_saved_model = export_savedmodel

    def export_label_vocabulary(self) -> list[str] | None:
        """The class names an export records in ``signature.json`` (None: none).

        The canned classifiers give their ``label_vocabulary``, so that the model server's
        ``:classify`` answers with class names, as TF Serving does.
        """
        return None


def check_hooks(hooks) -> list:
    """Return ``hooks`` as a list, checking each is a ``SessionRunHook``."""
    hooks = list(hooks or [])
    for hook in hooks:
        if not isinstance(hook, SessionRunHook):
            raise TypeError(f"All hooks must be `SessionRunHook` instances, given: {hook!r}")
    return hooks
