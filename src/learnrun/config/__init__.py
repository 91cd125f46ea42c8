"""Configuration: the cluster role read from the environment, and ``RunConfig``.

* :mod:`learnrun.config.cluster`: ``ClusterSpec``, ``TaskType``, ``ClusterInfo`` (role facts).
* :mod:`learnrun.config.environment`: the only reader of ``TF_CONFIG``, torchrun and SLURM.
* :mod:`learnrun.config.run_config`: ``RunConfig``.
"""
