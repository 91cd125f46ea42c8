"""A task of a test cluster: drives a Strategy exactly as the Estimator's loop does.

Run as ``python _trainer.py --model-dir D --steps N [...]`` with TF_CONFIG or torchrun
variables set (by ``learnrun.distributed.launch``). Prints ``STEP <global step>`` after each
update, ``SAVED <step>`` per checkpoint, ``STOP <step>`` at the end, and writes
``<model_dir>/losses-<task>.json``. ``--die-at TASK@STEP`` SIGKILLs that task after that
local step; ``--sigterm-at TASK@STEP`` sends it SIGTERM (through the real handler).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import types

import torch

from learnrun.cluster import resolve_cluster
from learnrun.distributed import exit_process, strategy_for_config
from learnrun.distributed.parameter_server import serve_config
from learnrun.estimator.checkpoint import CheckpointManager, latest_checkpoint, load_checkpoint

IN, HIDDEN, N_SAMPLES = 8, 16, 512


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN), torch.nn.Tanh(),
                               torch.nn.Linear(HIDDEN, 1))


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(N_SAMPLES, IN, generator=gen)
    y = x @ torch.linspace(-1, 1, IN).unsqueeze(1) + 0.1 * torch.randn(N_SAMPLES, 1, generator=gen)
    return x, y


def batch(x, y, index: int, global_batch: int, shards: int, shard: int):
    """Batch ``index`` of the global batches; this shard's rows of it."""
    start = (index * global_batch) % (N_SAMPLES - global_batch + 1)
    rows = slice(start + shard, start + global_batch, shards)
    return x[rows], y[rows]


def make_optimizer(module):
    return torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9)


def single_process_losses(steps: int, global_batch: int) -> list[float]:
    """Reference: the same training in this process alone."""
    module, (x, y) = make_model(), make_data()
    opt = make_optimizer(module)
    losses = []
    for i in range(steps):
        xb, yb = batch(x, y, i, global_batch, 1, 0)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(module(xb), yb)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def _matches(spec: str | None, task: str) -> int | None:
    if not spec:
        return None
    who, _, step = spec.partition("@")
    return int(step) if who == task else None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--save-every", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--die-at")
    parser.add_argument("--sigterm-at")
    parser.add_argument("--die-once", action="store_true",
                        help="--die-at only when model_dir has no 'died' marker (then write it)")
    args = parser.parse_args(argv)

    info = resolve_cluster()
    config = types.SimpleNamespace(
        task_type=info.task_type, task_id=info.task_id, cluster_spec=info.cluster_spec,
        is_chief=info.is_chief, num_ps_replicas=info.num_ps_replicas, rank=info.rank,
        world_size=info.world_size, master_addr=info.master_addr, master_port=info.master_port,
        cluster_source=info.source, distributed_timeout_secs=args.timeout, device="cpu")
    task = f"{info.task_type}:{info.task_id}"
    if info.task_type == "ps":
        serve_config(config)
        print("PS DONE", flush=True)
        return 0

    preempted = []
    signal.signal(signal.SIGTERM, lambda s, f: preempted.append(s))
    strategy = strategy_for_config(config)
    success = False
    try:
        strategy.setup()
        module, (x, y) = make_model(), make_data()
        opt = make_optimizer(module)
        step = 0
        path = latest_checkpoint(args.model_dir)
        if path:
            ckpt = load_checkpoint(path)
            module.load_state_dict(ckpt.weights)
            opt.load_state_dict(ckpt.state["optimizer"])
            step = int(ckpt.meta["step"])
            print(f"RESTORED {step}", flush=True)
        wrapped = strategy.prepare(module, opt)
        step = strategy.after_restore(wrapped, opt, step)
        ctx = strategy.input_context()
        manager = CheckpointManager(args.model_dir) if strategy.is_chief else None
        last_saved, local_steps, losses = step, 0, []

        def save() -> None:
            weights, opt_state = strategy.state_for_checkpoint(wrapped, opt)
            manager.save(step, weights, {"optimizer": opt_state}, {"step": step})
            print(f"SAVED {step}", flush=True)

        while True:
            local_stop = step >= args.steps
            if preempted:
                strategy.notify_preempted()
                local_stop = True
            if strategy.should_stop(local_stop):
                break
            strategy.before_step(wrapped)
            index = step if ctx.num_replicas_in_sync > 1 else local_steps
            xb, yb = batch(x, y, index, args.global_batch, ctx.num_input_pipelines,
                           ctx.input_pipeline_id)
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(wrapped(xb), yb)
            loss.backward()
            step = strategy.apply_update(wrapped, opt, None, None, step)
            local_steps += 1
            losses.append(strategy.reduce_sum(float(loss.detach())) / ctx.num_replicas_in_sync)
            print(f"STEP {step}", flush=True)
            marker = os.path.join(args.model_dir, "died")
            if _matches(args.die_at, task) == local_steps and not (
                    args.die_once and os.path.exists(marker)):
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
            if _matches(args.sigterm_at, task) == local_steps:
                os.kill(os.getpid(), signal.SIGTERM)
            if manager and args.save_every and step - last_saved >= args.save_every:
                save()
                last_saved = step
        print(f"STOP {step}", flush=True)
        if manager and (step != last_saved or not path):
            save()
        with open(os.path.join(args.model_dir, f"losses-{task}.json"), "w") as f:
            json.dump({"losses": losses, "step": step, "local_steps": local_steps}, f)
        success = True
    except Exception as err:
        print(f"FAILED {task}: {type(err).__name__}: {err}", flush=True)
    finally:
        strategy.teardown(success)
    if not success:
        return 1
    return 143 if strategy.preempted else 0


if __name__ == "__main__":
    exit_process(main(sys.argv[1:]))
