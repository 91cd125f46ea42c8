"""One local training run of the fault suite: ``python -m tests.faults.local_target DIR STEPS SAVE [async]``.

The test experiment's model and input (:mod:`tests.helpers.experiments`), its ``TestHook``
(``STEP`` lines, the ``LRTEST_FAULTS`` plan); exits 143 when preempted, 0 when done.
"""

from __future__ import annotations

import sys

import torch

import learnrun
from learnrun.errors import PreemptedError
from tests.helpers import experiments


def main(argv: list[str]) -> int:
    model_dir, steps, save = argv[0], int(argv[1]), int(argv[2])
    torch.set_num_threads(1)
    config = learnrun.RunConfig(model_dir=model_dir, tf_random_seed=0, device="cpu",
                                save_checkpoints_steps=save, save_checkpoints_secs=None,
                                save_summary_steps=10**9, log_step_count_steps=10**9,
                                keep_checkpoint_max=3, async_checkpoint="async" in argv[3:])
    est = learnrun.Estimator(experiments.model_fn, config=config)
    try:
        est.train(experiments.train_input_fn, hooks=[experiments.TestHook()], max_steps=steps)
    except PreemptedError:
        return 143
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
