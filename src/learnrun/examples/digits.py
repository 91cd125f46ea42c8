"""Built-in experiment ``digits``: a DNNClassifier on the 8x8 handwritten digits.

``learnrun run digits --model-dir runs/digits`` trains a two-layer network on 80% of the 1797
UCI digits (the split is fixed by ``hparams.split_seed``), evaluates on the other 20%
(reaching about 97% accuracy in well under a minute on one CPU core) and exports the model
to ``model_dir/export/Servo/<timestamp>/``. The pixels (0..16) are fed as one 64-wide
numeric feature ``pixels`` scaled to [0, 1].

Override anything from the command line, e.g.
``learnrun run digits --hparams "hidden_units=[128,64],train_steps=2000"`` or tune it with
``learnrun tune digits --trials 10 --metric accuracy``.
"""

from __future__ import annotations

from typing import Any

from learnrun import feature_column
from learnrun.canned import DNNClassifier
from learnrun.examples.common import load_digits, make_experiment, seeded, train_test_split
from learnrun.hparams import HParams

TEST_FRACTION = 0.2


def default_hparams() -> Any:
    """Hyperparameters of the digits experiment (all overridable with ``--hparams``)."""
    return HParams(
        hidden_units=[64, 32],
        learning_rate=0.003,
        dropout=0.0,
        batch_size=64,
        train_steps=1000,
        optimizer="Adam",
        split_seed=0,
        seed=42,
    )


def default_search_space() -> str:
    """What ``learnrun tune digits`` searches when no ``--space`` is given."""
    return ("learning_rate=loguniform(3e-4,3e-2),hidden_units=choice([32],[64,32],[128,64]),"
            "dropout=uniform(0,0.3)")


def serving_input_fn() -> Any:
    """Example serving features: one image, batch dimension dynamic."""
    import torch

    return {"pixels": torch.zeros(1, 64)}


def experiment_fn(run_config: Any, hparams: Any) -> Any:
    """Build the digits Experiment for ``run_config`` and ``hparams``.

    When ``run_config.tf_random_seed`` is unset, ``hparams.seed`` seeds the weights and the
    shuffling, so two runs with the same hyperparameters give the same model.
    """

    hp = default_hparams() if hparams is None else hparams
    run_config = seeded(run_config, hp)
    pixels, labels = load_digits()
    pixels = pixels / 16.0
    train_idx, test_idx = train_test_split(len(labels), TEST_FRACTION, int(hp.split_seed))
    estimator = DNNClassifier(
        hidden_units=list(hp.hidden_units),
        feature_columns=[feature_column.numeric_column("pixels", shape=64)],
        n_classes=10,
        optimizer=hp.optimizer,
        learning_rate=float(hp.learning_rate),
        dropout=float(hp.dropout) or None,
        config=run_config,
    )
    return make_experiment(estimator, {"pixels": pixels}, labels, train_idx, test_idx, hp,
                           serving_input_fn)
