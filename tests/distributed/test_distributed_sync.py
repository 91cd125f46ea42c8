"""Synchronous data parallel (DDP over gloo) with real processes on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from _helpers import run_cluster

from learnrun.estimator.checkpoint import checkpoint_step, latest_checkpoint, load_checkpoint

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(90)]

# Losses of 2 DDP ranks (per-rank means averaged by DDP, each on half of the global batch) equal
# single-process losses on the whole batch up to float32 summation order.
RTOL = 1e-5


def _trainer_module():
    spec = importlib.util.spec_from_file_location(
        "learnrun_test_trainer", Path(__file__).with_name("_trainer.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _losses(model_dir: Path, task: str) -> list[float]:
    return json.loads((model_dir / f"losses-{task}.json").read_text())["losses"]


def test_torchrun_roles_two_process_ddp_equals_single_process(tmp_path):
    """torchrun-style variables give the same roles (the TF_CONFIG path: test_estimator_cluster)."""
    roles_from = "torchrun"
    steps = 6
    cluster, code, out, _ = run_cluster(tmp_path, "--steps", str(steps), num_workers=1,
                                        roles_from=roles_from)
    assert code == 0, out.text
    assert cluster.codes == {"chief:0": 0, "worker:0": 0}
    reference = _trainer_module().single_process_losses(steps, 16)
    for task in ("chief:0", "worker:0"):
        assert _losses(tmp_path, task) == pytest.approx(reference, rel=RTOL)
    # The checkpoint holds the weights single-process training reaches.
    trainer = _trainer_module()
    module, (x, y) = trainer.make_model(), trainer.make_data()
    opt = trainer.make_optimizer(module)
    for i in range(steps):
        xb, yb = trainer.batch(x, y, i, 16, 1, 0)
        opt.zero_grad()
        torch.nn.functional.mse_loss(module(xb), yb).backward()
        opt.step()
    ckpt = load_checkpoint(latest_checkpoint(str(tmp_path)))
    assert checkpoint_step(latest_checkpoint(str(tmp_path))) == steps
    for name, value in module.state_dict().items():
        torch.testing.assert_close(ckpt.weights[name], value, rtol=RTOL, atol=1e-6)
    assert out.values("chief:0", "SAVED") == [steps]
    assert out.values("worker:0", "SAVED") == []  # only the chief writes checkpoints


def test_killed_member_ends_the_group(tmp_path):
    cluster, code, out, secs = run_cluster(
        tmp_path, "--steps", "100000", "--timeout", "10", "--die-at", "worker:0@3",
        num_workers=1, stop_on_failure=False, timeout=60)
    assert cluster.codes["worker:0"] == 137
    assert cluster.codes["chief:0"] == 1, out.text
    assert "FAILED chief:0" in out.text
    assert secs < 45
