"""Lightning on the trainer-overhead model of benchmarks/run_all.py (MLP 64-256-256-10).

Run with the python of a venv holding ``torch==2.13.0`` and ``lightning`` (never a learnrun
dependency). Same data and seed as ``benchmarks/bench_estimator_overhead.py`` (batch 128, SGD
0.01, one thread). Prints one JSON line: process CPU seconds of ``Trainer.fit`` for
``lean`` (no logger, checkpoints, progress bar or summary) and ``defaults`` (Trainer defaults
in a temporary directory), and the wall seconds of each.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings

import lightning as L
import torch


class MLP(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                       torch.nn.ReLU(), torch.nn.Linear(256, 10))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(batches, lean: bool) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as root:
        kw = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False) if lean else {}
        trainer = L.Trainer(max_steps=len(batches), max_epochs=1, accelerator="cpu", devices=1,
                            default_root_dir=root, num_sanity_val_steps=0, **kw)
        model = MLP()
        cpu, wall = time.process_time(), time.perf_counter()
        trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
        return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(args.steps, 128, 64, generator=g)
    ys = torch.randint(0, 10, (args.steps, 128), generator=g)
    batches = [(xs[i], ys[i]) for i in range(args.steps)]
    (lean, lean_wall), (defaults, defaults_wall) = fit(batches, True), fit(batches, False)
    print(json.dumps({"lean": lean, "defaults": defaults, "lean_wall": lean_wall,
                      "defaults_wall": defaults_wall}))


if __name__ == "__main__":
    main()
