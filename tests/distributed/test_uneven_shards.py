"""Synchronous training whose shards end at different steps stops every trainer together."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from learnrun.distributed import launch
from tests.helpers.distributed import Collector, cluster_env

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(120)]

EXPERIMENT = '''
import numpy as np
import torch
import learnrun

# 9 examples over 2 trainers: the chief's shard has 5 (2 batches of 4), the worker's 4 (1 batch).
X = np.arange(18, dtype=np.float32).reshape(9, 2) / 10
Y = X.sum(1, keepdims=True)


def model_fn(params):
    torch.manual_seed(0)
    module = torch.nn.Linear(2, 1)
    return learnrun.EstimatorSpec(module=module, loss_fn=torch.nn.functional.mse_loss,
                                  optimizer=torch.optim.SGD(module.parameters(), lr=0.01))


def experiment_fn(run_config, hparams):
    input_fn = learnrun.inputs.numpy_input_fn(X, Y, batch_size=4, num_epochs=1, shuffle=False)
    estimator = learnrun.Estimator(model_fn, config=run_config)
    return learnrun.Experiment(estimator, input_fn, input_fn, train_steps=100, eval_steps=None,
                               eval_delay_secs=0)
'''


def test_trainer_whose_shard_ends_first_stops_the_group(tmp_path: Path):
    target = tmp_path / "uneven.py"
    target.write_text(EXPERIMENT)
    out = Collector()
    env = cluster_env()
    args = ["--model-dir", str(tmp_path / "model"), "--config", "save_checkpoints_secs=None",
            "--config", "save_checkpoints_steps=1000", "--config", "distributed_timeout_secs=60",
            "--config", "device='cpu'"]
    start = time.monotonic()
    code = launch(str(target), num_workers=1, run_args=args, env=env, output=out, timeout=100,
                  python=sys.executable)
    elapsed = time.monotonic() - start
    assert code == 0, out.text
    # both stopped after the worker's only batch, long before the 60 s collective timeout
    assert elapsed < 50, out.text
    assert "Input exhausted at global step 1" in out.text, out.text
    from learnrun.model_dir.checkpoints import checkpoint_step, latest_checkpoint

    assert checkpoint_step(latest_checkpoint(str(tmp_path / "model"))) == 1
