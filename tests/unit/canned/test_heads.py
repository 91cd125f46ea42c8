"""Tests for learnrun.canned.heads: loss, prediction keys, metrics, label checks."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from learnrun.canned.heads import (
    BinaryClassHead,
    MultiClassHead,
    RegressionHead,
    classification_head,
)


def _run_metrics(head, outputs, labels):
    metrics = {k: copy.deepcopy(m) for k, m in head.metrics().items()}
    for m in metrics.values():
        m.update(outputs, labels)
    return {k: float(m.compute()) for k, m in metrics.items()}


def test_n_classes_and_argument_errors():
    assert isinstance(classification_head(2), BinaryClassHead)
    assert isinstance(classification_head(3), MultiClassHead)
    with pytest.raises(ValueError, match="n_classes must be > 2: 1."):
        classification_head(1)
    with pytest.raises(ValueError, match="label_vocabulary should be a list or a tuple. Given type"):
        classification_head(2, label_vocabulary="ab")
    with pytest.raises(ValueError, match="label_vocabulary has 3 entries"):
        classification_head(2, label_vocabulary=["a", "b", "c"])
    with pytest.raises(ValueError, match="Invalid loss_reduction: mean"):
        classification_head(2, loss_reduction="mean")
    with pytest.raises(ValueError, match="Invalid label_dimension 0"):
        RegressionHead(0)


def test_binary_loss_predictions_and_metrics():
    head = BinaryClassHead()
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]])
    labels = torch.tensor([1, 0, 0, 1])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits.reshape(-1), labels.float())
    assert torch.allclose(head.loss({"logits": logits}, labels), expected)
    preds = head.predictions({"logits": logits})
    assert set(preds) == {"logits", "logistic", "probabilities", "class_ids", "classes"}
    assert preds["class_ids"].reshape(-1).tolist() == [1, 0, 1, 0]
    assert torch.equal(preds["classes"], preds["class_ids"])  # no vocabulary: a tensor, exportable
    assert torch.allclose(preds["probabilities"].sum(1), torch.ones(4))
    m = _run_metrics(head, {"logits": logits}, labels)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5)
    assert m["label/mean"] == pytest.approx(0.5) and m["accuracy_baseline"] == pytest.approx(0.5)
    assert m["prediction/mean"] == pytest.approx(float(torch.sigmoid(logits).mean()))
    assert m["average_loss"] == pytest.approx(float(expected), rel=1e-5)
    assert m["auc"] == pytest.approx(0.5)


def test_weights_and_sum_reduction():
    head = BinaryClassHead(weight_column="w", loss_reduction="sum")
    logits = torch.tensor([[1.0], [1.0]])
    labels = torch.tensor([1.0, 0.0])
    per = torch.nn.functional.binary_cross_entropy_with_logits(logits.reshape(-1), labels, reduction="none")
    out = {"logits": logits, "weights": torch.tensor([2.0, 0.0])}
    assert torch.allclose(head.loss(out, labels), 2 * per[0])
    assert _run_metrics(head, out, labels)["accuracy"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="weight_column 'w' is not in the features"):
        head.loss({"logits": logits}, labels)


def test_label_vocabulary_and_label_errors():
    head = MultiClassHead(3, label_vocabulary=["a", "b", "c"])
    logits = torch.tensor([[0.0, 5.0, 0.0], [9.0, 0.0, 0.0]])
    assert head.predictions({"logits": logits})["classes"].reshape(-1).tolist() == ["b", "a"]
    loss = head.loss({"logits": logits}, np.array(["b", "a"]))
    assert float(loss) < 0.01
    with pytest.raises(ValueError, match=r"Labels must be in label_vocabulary \['a', 'b', 'c'\]; got 'z'"):
        head.loss({"logits": logits}, ["b", "z"])
    with pytest.raises(ValueError, match="label_vocabulary is set, so labels must be strings"):
        head.loss({"logits": logits}, torch.tensor([0, 1]))
    plain = MultiClassHead(3)
    with pytest.raises(ValueError, match="Labels must <= n_classes - 1; got 3"):
        plain.loss({"logits": logits}, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="Labels must >= 0"):
        plain.loss({"logits": logits}, torch.tensor([0, -1]))
    # -100 is torch's default ignore_index: reported, not skipped (the CPU kernel checks it)
    with pytest.raises(ValueError, match="Labels must >= 0; got -100"):
        plain.loss({"logits": logits}, torch.tensor([0, -100]))
    with pytest.raises(ValueError, match="Labels must <= n_classes - 1; got 7"):
        plain.unreduced_loss(logits, torch.tensor([[7], [0]]))
    with pytest.raises(ValueError, match="labels are strings .* no label_vocabulary"):
        plain.loss({"logits": logits}, ["a", "b"])
    assert _run_metrics(head, {"logits": logits}, ["b", "c"])["accuracy"] == pytest.approx(0.5)


def test_regression_head():
    head = RegressionHead(label_dimension=2)
    logits = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    labels = torch.tensor([[1.0, 0.0], [3.0, 6.0]])
    assert float(head.loss(logits, labels)) == pytest.approx((4 + 4) / 4)
    assert set(head.predictions(logits)) == {"predictions"}
    m = _run_metrics(head, {"logits": logits}, labels)
    assert m["mse"] == pytest.approx(2.0) and m["rmse"] == pytest.approx(math.sqrt(2.0))
    assert m["mae"] == pytest.approx(1.0)
    assert m["label/mean"] == pytest.approx(2.5) and m["prediction/mean"] == pytest.approx(2.5)
    with pytest.raises(ValueError, match="labels have shape \\(2, 3\\) but label_dimension is 2"):
        head.loss(logits, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="regression labels must be numbers"):
        RegressionHead().loss(torch.zeros(1, 1), ["x"])


def test_metric_deepcopy_and_reset_are_independent():
    head = RegressionHead()
    metric = head.metrics()["mse"]
    a = copy.deepcopy(metric)
    a.update({"logits": torch.tensor([[2.0]])}, torch.tensor([0.0]))
    b = copy.deepcopy(metric)
    b.update({"logits": torch.tensor([[1.0]])}, torch.tensor([0.0]))
    assert float(a.compute()) == 4.0 and float(b.compute()) == 1.0
    a.reset()
    a.update({"logits": torch.tensor([[3.0]])}, torch.tensor([0.0]))
    assert float(a.compute()) == 9.0


def _pairwise_weighted_auc(labels, scores, weights):
    """ROC AUC by its definition: the weighted share of (positive, negative) pairs ranked right,
    ties counting one half (what scikit-learn's trapezoidal roc_auc_score gives)."""
    pos, neg = labels == 1, labels == 0
    s_pos, s_neg = scores[pos][:, None], scores[neg][None, :]
    pair_w = weights[pos][:, None] * weights[neg][None, :]
    right = (s_pos > s_neg) + 0.5 * (s_pos == s_neg)
    return float((pair_w * right).sum() / pair_w.sum())


def test_weighted_auc_matches_pairwise_definition_with_ties_and_batches():
    from learnrun.canned.metrics import WeightedBinaryAUROC

    rng = np.random.default_rng(0)
    scores = np.round(rng.random(200), 1)  # many ties
    labels = (rng.random(200) < 0.4).astype(np.int64)
    weights = rng.integers(0, 4, 200).astype(np.float32)
    metric = WeightedBinaryAUROC()
    for part in np.array_split(np.arange(200), 3):  # several update() calls
        metric.update(torch.tensor(scores[part]), torch.tensor(labels[part]), torch.tensor(weights[part]))
    want = _pairwise_weighted_auc(labels, scores, weights.astype(np.float64))
    assert want == pytest.approx(0.5334390, abs=1e-6)  # scikit-learn roc_auc_score, same inputs
    assert float(metric.compute()) == pytest.approx(want, rel=1e-5)
    metric.reset()
    metric.update(torch.tensor([0.2, 0.9]), torch.tensor([1, 1]), torch.ones(2))
    assert float(metric.compute()) == 0.0  # one class only: undefined, reported as 0 like TF


def test_loss_reduction_accepts_tf1_names():
    assert BinaryClassHead(loss_reduction="weighted_sum").loss_reduction == "sum"
    head = RegressionHead(loss_reduction="weighted_sum_over_batch_size")
    assert head.loss_reduction == "sum_over_batch_size"
