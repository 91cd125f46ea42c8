"""Asynchronous parameter servers: ps tasks hold the parameters, trainers pull and push.

* :mod:`learnrun.distributed.ps.server`: the ``serve`` schedule of a ps task (shards, optimizer).
* :mod:`learnrun.distributed.ps.trainer`: ``ParameterServerStrategy``, a trainer's engine.
* :mod:`learnrun.distributed.ps.transport`: the socket transport between them.
"""
