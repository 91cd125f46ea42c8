"""Drive session hooks without a training loop.

``FakeSession`` stands in for the run session the hooks see, ``run_steps`` runs hooks through
the documented trace, ``FakeEstimator`` only evaluates (for early stopping and validation).
"""

from __future__ import annotations

import torch

from learnrun.hooks import RunContext, RunValues, SessionRunHook
from learnrun.model_dir import eval_results


class FakeSession:
    """What hooks read and call on the session; ``write_checkpoint`` records the step."""

    def __init__(self, model_dir="unused", global_step=0, is_chief=True, estimator=None):
        self.model_dir = str(model_dir)
        self.global_step = global_step
        self.is_chief = is_chief
        self.estimator = estimator
        self.last_step = None
        self.optimizer = None
        self.stop_requested = False
        self.saved: list[int] = []
        self.shared = global_step
        self.last_checkpoint_path = None

    def request_stop(self):
        self.stop_requested = True

    def shared_global_step(self):
        return self.shared

    def checkpoint_step(self, directory):
        return self.saved[-1] if self.saved else None

    def write_checkpoint(self, directory):
        self.saved.append(self.global_step)
        self.last_checkpoint_path = f"{directory}/ckpt-{self.global_step}"
        return self.last_checkpoint_path


def run_steps(hooks, session, n, loss=1.0):
    """Drive hooks through the documented trace for ``n`` steps; return steps actually run."""
    for hook in hooks:
        hook.begin()
    for hook in hooks:
        hook.after_create_session(session, None)
    ran = 0
    while ran < n and not session.stop_requested:
        ctx = RunContext(session)
        for hook in hooks:
            hook.before_run(ctx)
        session.global_step += 1
        ran += 1
        values = RunValues({"loss": torch.tensor(loss)}, session.global_step)
        for hook in hooks:
            hook.after_run(ctx, values)
    for hook in hooks:
        hook.end(session)
    return ran


class FakeEstimator:
    """An estimator whose ``evaluate`` returns ``loss = 1 / number of evaluations``."""

    def __init__(self, model_dir):
        self.model_dir = str(model_dir)
        self.checkpoint = None
        self.evaluations = []

    def eval_dir(self, name=None):
        return eval_results.eval_dir(self.model_dir, name)

    def latest_checkpoint(self):
        return self.checkpoint

    def evaluate(self, input_fn, steps=None, hooks=None, checkpoint_path=None, name=None):
        self.evaluations.append(self.checkpoint)
        return {"loss": 1.0 / len(self.evaluations), "global_step": len(self.evaluations)}


class StartStep(SessionRunHook):
    """Records the global step training starts from (after the restore)."""

    def __init__(self) -> None:
        self.start = None

    def after_create_session(self, session, coord=None) -> None:
        self.start = session.global_step
