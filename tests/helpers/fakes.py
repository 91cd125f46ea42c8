"""Test doubles for the orchestration layer: fake estimators, run config and export strategy.

``FakeEstimator`` implements the Estimator protocol of docs/internals.md without torch, the
way TF's ``experiment_test`` fake did: ``train`` records its arguments and "writes" a
checkpoint, ``evaluate`` returns ``eval_dict`` and raises ``StopIteration`` on call
``max_evals + 1``, ``export_savedmodel`` returns ``<base>/bogus_timestamp``. ``QuadraticEstimator`` gives a loss
that depends only on its hyperparameters, for tuning studies (also imported by the scripts the
tuning tests run in subprocesses).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

from learnrun.config.run_config import _DEFAULT_UID_WHITE_LIST

_UID_WHITELIST = tuple(_DEFAULT_UID_WHITE_LIST)


class FakeRunConfig:
    """The attributes of RunConfig that Experiment and run() read, set directly."""

    def __init__(
        self,
        model_dir: str | None = None,
        cluster_spec: dict | None = None,
        task_type: str | None = None,
        task_id: int = 0,
        master: str = "",
        environment: str = "local",
        save_checkpoints_secs: float | None = 600,
        save_checkpoints_steps: int | None = None,
        **extra: Any,
    ) -> None:
        self.model_dir = model_dir
        self.cluster_spec = dict(cluster_spec or {})
        self.task_type = task_type
        self.task_id = task_id
        self.master = master
        self.environment = environment
        self.save_checkpoints_secs = save_checkpoints_secs
        self.save_checkpoints_steps = save_checkpoints_steps
        self.is_chief = task_type in (None, "chief", "master") and task_id == 0
        self.experimental_max_worker_delay_secs = None
        for key, value in extra.items():
            setattr(self, key, value)

    def uid(self, whitelist: Any = None) -> str:
        whitelist = _UID_WHITELIST if whitelist is None else whitelist
        state = {k: v for k, v in vars(self).items() if k not in whitelist}
        return ", ".join(f"{k}={state[k]!r}" for k in sorted(state))

    def replace(self, **kwargs: Any) -> FakeRunConfig:
        new = copy.deepcopy(self)
        for key, value in kwargs.items():
            setattr(new, key, value)
        return new


class FakeEstimator:
    """An object implementing the Estimator protocol that records every call."""

    def __init__(
        self,
        config: Any = None,
        eval_dict: dict | None = None,
        max_evals: int = 5,
        on_train: Callable[[FakeEstimator, dict], None] | None = None,
        clock: Any = None,
        train_work_secs: float = 0.0,
        eval_work_secs: float = 0.0,
    ) -> None:
        self.config = config if config is not None else FakeRunConfig(model_dir="fake_model_dir")
        self.params = None
        self.eval_dict = eval_dict
        self.max_evals = max_evals
        self.on_train = on_train
        self.clock = clock
        self.train_work_secs = train_work_secs
        self.eval_work_secs = eval_work_secs
        self.train_calls: list[dict] = []
        self.eval_calls: list[dict] = []
        self.export_calls: list[dict] = []
        self.checkpoint: str | None = None

    @property
    def model_dir(self) -> str:
        return self.config.model_dir

    @property
    def fit_count(self) -> int:
        return len(self.train_calls)

    @property
    def eval_count(self) -> int:
        return len(self.eval_calls)

    @property
    def export_count(self) -> int:
        return len(self.export_calls)

    def fake_checkpoint(self, path: str | None = None) -> str:
        self.checkpoint = path or os.path.join(self.model_dir, "model.ckpt-0")
        return self.checkpoint

    def latest_checkpoint(self) -> str | None:
        return self.checkpoint

    def train(self, input_fn, hooks=None, steps=None, max_steps=None, saving_listeners=None):
        kwargs = dict(
            input_fn=input_fn,
            hooks=hooks,
            steps=steps,
            max_steps=max_steps,
            saving_listeners=saving_listeners,
        )
        self.train_calls.append(kwargs)
        if self.clock is not None and self.train_work_secs:
            self.clock.advance(self.train_work_secs)
        if self.on_train is not None:
            self.on_train(self, kwargs)
        if self.checkpoint is None:
            self.fake_checkpoint()
        return sorted((k, repr(v)) for k, v in kwargs.items())

    def evaluate(self, input_fn, steps=None, hooks=None, checkpoint_path=None, name=None):
        self.eval_calls.append(
            dict(
                input_fn=input_fn,
                steps=steps,
                hooks=hooks,
                checkpoint_path=checkpoint_path,
                name=name,
            )
        )
        if self.eval_count > self.max_evals:
            raise StopIteration("fake estimator: too many evaluations")
        if self.clock is not None and self.eval_work_secs:
            self.clock.advance(self.eval_work_secs)
        return self.eval_dict

    def export_savedmodel(
        self,
        export_dir_base,
        serving_input_fn,
        assets_extra=None,
        as_text=False,
        checkpoint_path=None,
        strip_default_attrs=False,
    ):
        self.export_calls.append(
            dict(export_dir_base=export_dir_base, checkpoint_path=checkpoint_path)
        )
        return os.path.join(export_dir_base, "bogus_timestamp")

    export_saved_model = export_savedmodel


class ContribStyleEstimator(FakeEstimator):
    """A fake whose ``evaluate`` takes ``metrics`` (so Experiment accepts ``eval_metrics``)."""

    def evaluate(  # type: ignore[override]
        self, input_fn, steps=None, hooks=None, checkpoint_path=None, name=None, metrics=None
    ):
        result = super().evaluate(input_fn, steps, hooks, checkpoint_path, name)
        self.eval_calls[-1]["metrics"] = metrics
        return result


class FakeExportStrategy:
    """An ExportStrategy look-alike: ``export`` calls the estimator's ``export_savedmodel``."""

    def __init__(self, name: str = "Servo") -> None:
        self.name = name
        self.calls: list[dict] = []

    def export(self, estimator, export_path, checkpoint_path=None, eval_result=None):
        self.calls.append(
            dict(export_path=export_path, checkpoint_path=checkpoint_path, eval_result=eval_result)
        )
        return estimator.export_savedmodel(export_path, None, checkpoint_path=checkpoint_path)


class FakeHook:
    """A stand-in hook object (Experiment passes hooks through without looking at them)."""

    def __init__(self, name: str = "hook") -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"FakeHook({self.name!r})"


def fake_input_fn():
    """An input_fn that is never called by the fakes."""
    return iter(())


class QuadraticEstimator:
    """The Estimator protocol without torch: loss = (lr - 0.01)^2 * 1e4 + units[0] / 1000."""

    def __init__(self, config, params):
        self.config, self.params, self.model_dir = config, params, config.model_dir
        self.step = 0

    def train(self, input_fn, hooks=None, steps=None, max_steps=None, saving_listeners=None):
        os.makedirs(self.model_dir, exist_ok=True)
        self.step = max_steps or steps or 0
        return self

    def evaluate(self, input_fn, steps=None, hooks=None, checkpoint_path=None, name=None):
        loss = (self.params.lr - 0.01) ** 2 * 1e4 + self.params.units[0] / 1000
        return {"loss": loss, "accuracy": 1.0 / (1.0 + loss), "global_step": self.step}

    def latest_checkpoint(self):
        return None
