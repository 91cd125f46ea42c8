"""The ``learnrun`` command line: ``run``, ``tune``, ``checkpoints``, ``launch``.

* :mod:`learnrun.cli.main`: the parser, the commands and ``main()`` (the console script).
* :mod:`learnrun.cli.targets`: resolving ``TARGET`` to an ``experiment_fn``.
* :mod:`learnrun.cli.overrides`: ``--hparams`` and ``--config``.
* :mod:`learnrun.cli.report`: what the commands print.
"""
