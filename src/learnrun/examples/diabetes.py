"""Built-in experiment ``diabetes``: a DNNRegressor on the diabetes progression data.

``learnrun run diabetes --model-dir runs/diabetes`` predicts disease progression one year
after baseline from 10 variables (age, sex, bmi, blood pressure, six serum measurements) of
442 patients: 80% train, 20% test (split fixed by ``hparams.split_seed``). Each variable is a
numeric feature standardised with the training set's mean and deviation; the label stays in
its own units, so ``rmse``/``mae`` read directly (predicting the mean gives an rmse near 77;
this model reaches about 54). Set ``model=linear`` for a LinearRegressor on the same columns.
"""

from __future__ import annotations

from typing import Any

from learnrun import feature_column
from learnrun.canned import DNNRegressor, LinearRegressor
from learnrun.examples.common import load_diabetes, make_experiment, seeded, train_test_split
from learnrun.hparams import HParams

FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")
TEST_FRACTION = 0.2


def default_hparams() -> Any:
    """Hyperparameters of the diabetes experiment (all overridable with ``--hparams``)."""

    return HParams(
        model="dnn",
        hidden_units=[16],
        learning_rate=0.01,
        optimizer="Adam",
        batch_size=32,
        train_steps=1000,
        split_seed=0,
        seed=42,
    )


def default_search_space() -> str:
    """What ``learnrun tune diabetes`` searches when no ``--space`` is given."""
    return "learning_rate=loguniform(1e-3,1e-1),hidden_units=choice([16],[32,16],[64,32])"


def serving_input_fn() -> Any:
    """Example serving features: one patient, every column a (1, 1) float tensor."""
    import torch

    return {name: torch.zeros(1, 1) for name in FEATURES}


def experiment_fn(run_config: Any, hparams: Any) -> Any:
    """Build the diabetes Experiment (DNNRegressor, or LinearRegressor with ``model=linear``)."""

    hp = default_hparams() if hparams is None else hparams
    if hp.model not in ("dnn", "linear"):
        raise ValueError(f"hparams.model must be 'dnn' or 'linear', got {hp.model!r}")
    run_config = seeded(run_config, hp)
    x, y = load_diabetes()
    train_idx, test_idx = train_test_split(len(y), TEST_FRACTION, int(hp.split_seed))
    mean, std = x[train_idx].mean(axis=0), x[train_idx].std(axis=0)
    x = (x - mean) / std
    feature_columns = [feature_column.numeric_column(name) for name in FEATURES]
    if hp.model == "linear":
        estimator = LinearRegressor(feature_columns, optimizer=hp.optimizer,
                                    learning_rate=float(hp.learning_rate), config=run_config)
    else:
        estimator = DNNRegressor(
            hidden_units=list(hp.hidden_units), feature_columns=feature_columns,
            optimizer=hp.optimizer, learning_rate=float(hp.learning_rate), config=run_config)
    features = {name: x[:, i : i + 1] for i, name in enumerate(FEATURES)}
    return make_experiment(estimator, features, y.reshape(-1, 1), train_idx, test_idx, hp,
                           serving_input_fn)
