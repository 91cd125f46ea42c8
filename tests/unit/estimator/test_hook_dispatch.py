"""The training loop calls only the hook methods that do something, in the hooks' order."""

from __future__ import annotations

import torch

from learnrun.config.run_config import RunConfig
from learnrun.estimator.estimator import Estimator
from learnrun.estimator.spec import EstimatorSpec
from learnrun.estimator.train_loop import hook_dispatch
from learnrun.hooks import SessionRunArgs, SessionRunHook


class EndOnly(SessionRunHook):
    def end(self, session):
        pass


class Before(SessionRunHook):
    def before_run(self, run_context):
        return None


class After(SessionRunHook):
    def after_run(self, run_context, run_values):
        pass


class Duck:  # not a SessionRunHook: every method is called
    def before_run(self, run_context):
        return None

    def after_run(self, run_context, run_values):
        pass


def test_dispatch_skips_inherited_no_ops_and_keeps_order():
    end_only, before, after, duck = EndOnly(), Before(), After(), Duck()
    patched = EndOnly()
    patched.after_run = lambda ctx, values: None  # an instance override counts
    befores, afters = hook_dispatch([end_only, after, before, duck, patched])
    assert befores == [before, duck]
    assert afters == [after, duck, patched]


class Trace(SessionRunHook):
    def __init__(self, name, log, fetches=None):
        self.name, self.log, self.fetches = name, log, fetches

    def before_run(self, run_context):
        self.log.append(("before_run", self.name))
        return SessionRunArgs(self.fetches) if self.fetches else None

    def after_run(self, run_context, run_values):
        self.log.append(("after_run", self.name, run_values.global_step, dict(run_values.fetched)))


class AfterOnly(SessionRunHook):
    def __init__(self, log):
        self.log = log

    def after_run(self, run_context, run_values):
        self.log.append(("after_run", "after-only", run_values.global_step, dict(run_values.fetched)))
        if run_values.global_step == 2:
            run_context.request_stop()


def test_trace_and_fetches_through_train(tmp_path):
    def model_fn():
        torch.manual_seed(0)
        module = torch.nn.Linear(2, 1)
        return EstimatorSpec(module=module, loss_fn=torch.nn.functional.mse_loss,
                             optimizer=torch.optim.SGD(module.parameters(), lr=0.1))

    batches = [(torch.ones(4, 2), torch.zeros(4, 1))] * 5
    log: list = []
    hooks = [Trace("a", log), EndOnly(), Trace("b", log, fetches=["global_step"]), AfterOnly(log)]
    est = Estimator(model_fn, config=RunConfig(model_dir=str(tmp_path), device="cpu"))
    est.train(lambda: batches, steps=5, hooks=hooks)
    # Fetches requested by any hook reach every after_run of that step; none are read otherwise.
    expected = []
    for step in (1, 2):
        expected += [("before_run", "a"), ("before_run", "b"),
                     ("after_run", "a", step, {"global_step": step}),
                     ("after_run", "b", step, {"global_step": step}),
                     ("after_run", "after-only", step, {"global_step": step})]
    assert log == expected
