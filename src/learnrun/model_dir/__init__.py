"""The model directory: the protocol between roles. This package alone reads and writes it.

* :mod:`learnrun.model_dir.checkpoints`: ``ckpt-<step>/`` directories, the ``checkpoint`` index,
  retention and loading.
* :mod:`learnrun.model_dir.serialization`: what a checkpoint's files hold (weights, state, RNG).
* :mod:`learnrun.model_dir.summaries`: TensorBoard event files.
* :mod:`learnrun.model_dir.eval_results`: ``eval_<name>/results.jsonl``.
"""
