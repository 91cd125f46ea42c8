"""The experiment of the distributed integration tests (``learnrun run experiments.py:experiment_fn``).

A small MLP regression trained with SGD+momentum on fixed data through the real path:
``learnrun run`` -> ``learnrun.run`` -> Experiment schedule -> Estimator -> Strategy.
Every trainer reads its shard through ``input_context`` with a per-replica batch of
``GLOBAL_BATCH / num_replicas_in_sync``, so synchronous training equals one process on
``GLOBAL_BATCH``. Settings come from environment variables (the launcher passes its
environment to every task):

* ``LRTEST_TRAIN_STEPS`` (default 8; ``none``: until the input ends), ``LRTEST_TRAIN_EPOCHS``
  (default: endless input). RunConfig settings come from ``--config`` (see
  :func:`config_args`): the Experiment must use the RunConfig it is given.
* ``LRTEST_DIE_AT=task@n`` SIGKILLs that task after its n-th local step (a ps task: once
  its global step reaches n); ``LRTEST_SIGTERM_AT=task@n`` sends it SIGTERM;
  ``LRTEST_DIE_ONCE=1`` only while ``model_dir/died`` does not exist (then creates it).
* ``LRTEST_FAULTS=task@n~ms:SIG,...`` (the fault-injection suite): fault k (in order) hits
  ``task`` at its first step boundary with global step >= n, ``ms`` milliseconds later (from
  a thread, so it may land mid-step or mid-save): ``KILL`` (SIGKILL) or ``TERM`` (a storm of
  three SIGTERMs). ``model_dir/fault-<k>`` records that fault k was fired.
* ``LRTEST_NAN_AT=task@n``: that task's n-th training loss is NaN.
* ``LRTEST_LR`` (default 0.05): SGD's learning rate. Asynchronous training (parameter
  servers, where every gradient misses the update in flight) diverges at 0.05 after a few
  hundred steps; tests that train asynchronously for long use a smaller one.
* ``LRTEST_WAIT_FOR=task@n`` gives that task a ``GlobalStepWaiterHook(wait_until_step=n)``
  (what ``delay_workers_by_global_step`` adds with ``n = 8000 * log(task_id + 1)``).

Each trainer prints ``STEP <global step>`` after every update and writes
``model_dir/losses-<task>.json`` (its per-step losses) at the end.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import numpy as np
import torch

import learnrun
from learnrun.hooks import SessionRunHook
from learnrun.model_dir.storage import storage_for

IN, HIDDEN, N_SAMPLES, GLOBAL_BATCH = 8, 16, 512, 16


def make_data() -> tuple[np.ndarray, np.ndarray]:
    """Fixed regression data: ``(x [N, IN], y [N, 1])`` float32."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N_SAMPLES, IN)).astype(np.float32)
    y = (x @ np.linspace(-1, 1, IN, dtype=np.float32)[:, None]
         + 0.1 * rng.standard_normal((N_SAMPLES, 1)).astype(np.float32))
    return x, y


def model_fn(params: Any, config: Any, mode: str) -> learnrun.EstimatorSpec:
    """A 8-16-1 tanh MLP, SGD with momentum, mean squared error."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN), torch.nn.Tanh(),
                                 torch.nn.Linear(HIDDEN, 1))
    loss_fn = torch.nn.functional.mse_loss
    nan_at = _matches(os.environ.get("LRTEST_NAN_AT"), _task(config)) if config else None
    if nan_at is not None:
        calls = [0]

        def loss_fn(outputs, labels):  # this task's nan_at-th training loss is NaN
            calls[0] += 1
            loss = torch.nn.functional.mse_loss(outputs, labels)
            return loss * float("nan") if calls[0] == nan_at else loss
    return learnrun.EstimatorSpec(
        module=module, loss_fn=loss_fn,
        optimizer=torch.optim.SGD(module.parameters(), lr=float(os.environ.get("LRTEST_LR", 0.05)),
                                  momentum=0.9))


def _task(config: Any) -> str:
    return f"{config.task_type or 'local'}:{int(config.task_id or 0)}"


def _matches(spec: str | None, task: str) -> int | None:
    if not spec:
        return None
    who, _, step = spec.partition("@")
    return int(step) if who == task else None


class TestHook(SessionRunHook):
    """Prints each global step, records the losses, injects the failures of the env settings."""

    def begin(self) -> None:
        self.losses: list[float] = []
        self.local_steps = 0

    def after_create_session(self, session: Any, coord: Any = None) -> None:
        self.task = _task(session.config)
        self.model_dir = session.model_dir
        print(f"RESTORED {session.global_step}", flush=True)

    def after_run(self, run_context: Any, run_values: Any) -> None:
        self.local_steps += 1
        self.losses.append(float(run_values.results["loss"]))
        print(f"STEP {run_values.global_step}", flush=True)
        marker = os.path.join(self.model_dir, "died")
        once = os.environ.get("LRTEST_DIE_ONCE") == "1"
        if _matches(os.environ.get("LRTEST_DIE_AT"), self.task) == self.local_steps and not (
                once and os.path.exists(marker)):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        if _matches(os.environ.get("LRTEST_SIGTERM_AT"), self.task) == self.local_steps:
            os.kill(os.getpid(), signal.SIGTERM)
        if os.environ.get("LRTEST_FAULTS"):
            fire_fault(self.model_dir, self.task, run_values.global_step,
                       os.environ["LRTEST_FAULTS"])

    def end(self, session: Any) -> None:
        print(f"STOP {session.global_step}", flush=True)
        st = storage_for(self.model_dir)  # a local directory or a URL (s3://)
        st.put(st.join(self.model_dir, f"losses-{self.task}.json"),
               json.dumps({"losses": self.losses, "step": session.global_step}).encode())


def parse_faults(plan: str) -> list[tuple[str, int, float, str]]:
    """``task@n~ms:SIG,...`` -> ``[(task, n, seconds, "KILL" | "TERM")]``."""
    faults = []
    for entry in filter(None, plan.split(",")):
        who, _, rest = entry.partition("@")
        step, _, rest = rest.partition("~")
        millis, _, sig = rest.partition(":")
        faults.append((who, int(step), float(millis or 0) / 1000.0, sig or "KILL"))
    return faults


def fire_fault(model_dir: str, task: str, global_step: int, plan: str) -> None:
    """Fire the next fault of ``plan`` when it is this task's (see the module docstring)."""
    faults = parse_faults(plan)
    k = sum(1 for name in os.listdir(model_dir) if name.startswith("fault-"))
    if k >= len(faults):
        return
    who, step, delay, sig = faults[k]
    if who != task or global_step < step:
        return
    try:
        os.close(os.open(os.path.join(model_dir, f"fault-{k}"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return

    def hit() -> None:
        time.sleep(delay)
        if sig == "TERM":
            for _ in range(3):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.005)
        else:
            os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=hit, name="lrtest-fault", daemon=True).start()


def _saving_listener() -> Any:
    from learnrun.hooks import CheckpointSaverListener

    class _Reporter(CheckpointSaverListener):
        def after_save(self, session: Any, global_step_value: int) -> None:
            print(f"SAVED {global_step_value}", flush=True)

    return _Reporter()


def _die_with_ps(at_step: int) -> None:
    """In a ps task: SIGKILL this process once its shard's global step reaches ``at_step``."""
    from learnrun.distributed.ps import server as parameter_server

    def watch() -> None:
        while True:
            server = parameter_server._SERVER
            if server is not None and server.global_step >= at_step:
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.01)

    threading.Thread(target=watch, name="lrtest-die", daemon=True).start()


def train_input_fn(input_context: Any = None) -> Any:
    """This trainer's shard of the data, ``GLOBAL_BATCH / num_replicas_in_sync`` per batch."""
    x, y = make_data()
    replicas = getattr(input_context, "num_replicas_in_sync", 1) if input_context else 1
    epochs = os.environ.get("LRTEST_TRAIN_EPOCHS")
    return learnrun.inputs.numpy_input_fn(x, y, batch_size=GLOBAL_BATCH // replicas,
                                          num_epochs=int(epochs) if epochs else None,
                                          shuffle=False)(input_context=input_context)


def eval_input_fn(input_context: Any = None) -> Any:
    """The first 64 examples in batches of 8, one pass (sharded given an input_context)."""
    x, y = make_data()
    return learnrun.inputs.numpy_input_fn(x[:64], y[:64], batch_size=8, num_epochs=1,
                                          shuffle=False)(input_context=input_context)


def config_args(save_steps: int | None = None, timeout: float = 20, keep: int = 5) -> list[str]:
    """``learnrun run`` options of the tests' RunConfig (one final save without ``save_steps``)."""
    pairs = {"tf_random_seed": 0, "save_checkpoints_steps": save_steps or 10**9,
             "save_checkpoints_secs": None, "save_summary_steps": 10**9,
             "log_step_count_steps": 10**9, "keep_checkpoint_max": keep,
             "distributed_timeout_secs": timeout, "device": "'cpu'"}
    return [arg for key, value in pairs.items() for arg in ("--config", f"{key}={value}")]


def _train_steps(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def experiment_fn(run_config: Any, hparams: Any = None) -> learnrun.Experiment:
    """The test Experiment; settings from the ``LRTEST_*`` environment variables."""
    from learnrun.hooks import GlobalStepWaiterHook

    env = os.environ
    task = _task(run_config)
    monitors: list[Any] = [TestHook()]
    wait_for = _matches(env.get("LRTEST_WAIT_FOR"), task)
    if wait_for is not None:
        monitors.append(GlobalStepWaiterHook(wait_until_step=wait_for, poll_secs=0.02,
                                             timeout_secs=60))
    die_at = _matches(env.get("LRTEST_DIE_AT"), task)
    if die_at is not None and run_config.task_type == "ps":
        _die_with_ps(die_at)
    estimator = learnrun.Estimator(model_fn, config=run_config)
    return learnrun.Experiment(
        estimator, train_input_fn, eval_input_fn,
        train_steps=_train_steps(env.get("LRTEST_TRAIN_STEPS", "8")), eval_steps=None,
        train_monitors=monitors, saving_listeners=[_saving_listener()],
        eval_delay_secs=0, continuous_eval_throttle_secs=0.2, local_eval_frequency=None)
