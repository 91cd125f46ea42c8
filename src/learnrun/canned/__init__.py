"""Canned estimators for tabular data (TF's ``tf.estimator`` canned models) on PyTorch.

``LinearClassifier``, ``LinearRegressor``, ``DNNClassifier``, ``DNNRegressor``,
``DNNLinearCombinedClassifier``, ``DNNLinearCombinedRegressor``: Estimators whose model_fn
builds a network over :mod:`learnrun.feature_column` columns and trains it through a head
(:mod:`learnrun.canned.heads`) with TF's prediction keys and eval metrics.
"""

from learnrun.canned.dnn import DNNClassifier, DNNRegressor
from learnrun.canned.dnn_linear_combined import (
    DNNLinearCombinedClassifier,
    DNNLinearCombinedRegressor,
)
from learnrun.canned.heads import BinaryClassHead, MultiClassHead, RegressionHead
from learnrun.canned.linear import LinearClassifier, LinearRegressor

__all__ = [
    "BinaryClassHead",
    "DNNClassifier",
    "DNNLinearCombinedClassifier",
    "DNNLinearCombinedRegressor",
    "DNNRegressor",
    "LinearClassifier",
    "LinearRegressor",
    "MultiClassHead",
    "RegressionHead",
]
