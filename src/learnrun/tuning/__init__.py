"""Hyperparameter tuning: ``OptunaTuner`` and the search-space mini-language.

* :mod:`learnrun.tuning.optuna`: ``OptunaTuner``, a :class:`learnrun.Tuner` on optuna.
* :mod:`learnrun.tuning.search_space`: ``parse_search_space``, ``Dimension``, ``SearchSpaceError``.
"""

from __future__ import annotations

from learnrun.tuning.optuna import OptunaTuner
from learnrun.tuning.search_space import Dimension, SearchSpaceError, parse_search_space

__all__ = ["OptunaTuner", "SearchSpaceError", "Dimension", "parse_search_space"]
