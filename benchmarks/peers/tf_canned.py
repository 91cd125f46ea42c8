"""TensorFlow 2.15's ``tf.estimator`` canned classifiers on a workload of bench_canned.py.

Run by ``benchmarks/bench_canned.py`` with the python of a venv holding
``tensorflow-cpu==2.15.1`` and ``numpy<2`` (never a learnrun dependency). Reads the arrays
from ``--data`` (``x_train, y_train, x_test, y_test``), trains ``--steps`` steps on one thread
(intra/inter-op parallelism 1) with ``tf.keras.optimizers.legacy.Adam``, and prints one JSON
line: ``seconds`` (process CPU time of ``train``), ``wall`` and test ``accuracy``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", choices=["dnn", "linear", "combined"], required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--classes", type=int, required=True)
    parser.add_argument("--hidden", required=True)
    args = parser.parse_args()
    tf.get_logger().setLevel("ERROR")
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    data = np.load(args.data)
    hidden = [int(u) for u in args.hidden.split(",")]
    cols = [tf.feature_column.numeric_column("x", shape=(data["x_train"].shape[1],))]

    def adam():
        return tf.keras.optimizers.legacy.Adam(learning_rate=args.lr)

    def train_input_fn():
        ds = tf.data.Dataset.from_tensor_slices(({"x": data["x_train"]}, data["y_train"]))
        return ds.shuffle(len(data["y_train"]), seed=0).repeat().batch(args.batch)

    def test_input_fn():
        return tf.data.Dataset.from_tensor_slices(({"x": data["x_test"]}, data["y_test"])).batch(1024)

    session = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
    with tempfile.TemporaryDirectory() as model_dir:
        config = tf.estimator.RunConfig(model_dir=model_dir, tf_random_seed=0, session_config=session)
        if args.model == "dnn":
            est = tf.estimator.DNNClassifier(hidden, cols, n_classes=args.classes, optimizer=adam,
                                             config=config)
        elif args.model == "linear":
            est = tf.estimator.LinearClassifier(cols, n_classes=args.classes, optimizer=adam,
                                                config=config)
        else:
            est = tf.estimator.DNNLinearCombinedClassifier(
                linear_feature_columns=cols, linear_optimizer=adam, dnn_feature_columns=cols,
                dnn_optimizer=adam, dnn_hidden_units=hidden, n_classes=args.classes, config=config)
        cpu, wall = time.process_time(), time.perf_counter()
        est.train(train_input_fn, steps=args.steps)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        accuracy = est.evaluate(test_input_fn)["accuracy"]
    print(json.dumps({"seconds": cpu, "wall": wall, "accuracy": float(accuracy)}))


if __name__ == "__main__":
    main()
