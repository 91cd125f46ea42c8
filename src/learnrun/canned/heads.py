"""Heads: loss, predictions and eval metrics on top of logits (TF's canned heads).

A canned module returns ``outputs = {"logits": (batch, logits_dimension)}`` plus
``"weights": (batch,)`` when the features hold the weight column. A head turns that into:

* ``loss(outputs, labels)``: the weighted loss reduced by ``loss_reduction``
  (``"sum_over_batch_size"``: sum of weighted losses / number of loss elements; ``"sum"``);
* ``predictions(outputs)``: TF's prediction keys (``logits``, ``logistic``, ``probabilities``,
  ``class_ids``, ``classes``; ``predictions`` for regression). With a ``label_vocabulary``,
  ``classes`` is a numpy array of those strings (left out while ``torch.export`` traces);
  without one it is the int64 class-id tensor (TF gives the id as a string), so the model
  exports: exported programs return tensors only;
* ``metrics()``: torchmetrics objects (from :mod:`learnrun.canned.metrics`, imported on first
  use) updated as ``update(outputs, labels)``, each a small
  wrapper that maps logits and labels to what the wrapped metric needs. Weighted like TF,
  except ``auc_precision_recall``, which ignores example weights. ``auc`` is the exact
  weighted ROC AUC (TF approximates it over 200 thresholds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

LOSS_REDUCTIONS = ("sum_over_batch_size", "sum")
#: TF 1.x ``tf.losses.Reduction`` values of the same reductions.
_LOSS_REDUCTION_ALIASES = {"weighted_sum_over_batch_size": "sum_over_batch_size", "weighted_sum": "sum"}


#: ``ignore_index`` for cross-entropy: the smallest int64, which no valid class id is (torch's
#: default, -100, would silently skip a label of -100 instead of reporting it).
_NO_IGNORED_ID = -(2**63)


def _nan_to_zero(value: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(value, nan=0.0)


def _baseline(value: torch.Tensor) -> torch.Tensor:
    return torch.maximum(value, 1 - value)


def _tracing() -> bool:
    compiler = getattr(torch, "compiler", None)
    if compiler is None:
        return False
    exporting = getattr(compiler, "is_exporting", None)
    return bool((exporting is not None and exporting()) or compiler.is_compiling())


class Head:
    """Common label, weight and loss handling; subclasses fix the loss and metrics."""

    logits_dimension: int = 1

    def __init__(self, weight_column: str | None = None,
                 loss_reduction: str = "sum_over_batch_size") -> None:
        loss_reduction = _LOSS_REDUCTION_ALIASES.get(loss_reduction, loss_reduction)  # type: ignore[arg-type]
        if loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(
                f"Invalid loss_reduction: {loss_reduction}. Use one of {list(LOSS_REDUCTIONS)} "
                f"(TF 1.x's {sorted(_LOSS_REDUCTION_ALIASES)} are accepted too)."
            )
        self.weight_column = weight_column
        self.loss_reduction = loss_reduction

    # -- pieces -------------------------------------------------------------------------------
    @staticmethod
    def logits(outputs: Any) -> torch.Tensor:
        return outputs["logits"] if isinstance(outputs, Mapping) else outputs

    def weights(self, outputs: Any, batch: int, device: torch.device, required: bool) -> torch.Tensor:
        weights = outputs.get("weights") if isinstance(outputs, Mapping) else None
        if weights is None:
            if required and self.weight_column is not None:
                raise ValueError(
                    f"weight_column {self.weight_column!r} is not in the features; the input_fn "
                    "must provide it for training and evaluation."
                )
            return torch.ones(batch, device=device)
        return weights.reshape(batch).to(device=device, dtype=torch.float32)

    def unreduced_loss(self, logits: torch.Tensor, labels: Any) -> torch.Tensor:
        raise NotImplementedError

    def mean_loss(self, logits: torch.Tensor, labels: Any) -> torch.Tensor:
        """The unweighted mean of :meth:`unreduced_loss` over every element."""
        return self.unreduced_loss(logits, labels).mean()

    def loss(self, outputs: Any, labels: Any) -> torch.Tensor:
        """The training loss: weighted, reduced by ``loss_reduction``.

        Without a weight column it is :meth:`mean_loss` (or the plain sum): the same value
        without building and multiplying a tensor of ones.
        """
        if type(outputs) is dict:  # CannedModule's output, without the Mapping checks
            logits, given = outputs["logits"], outputs.get("weights")
        else:
            logits = self.logits(outputs)
            given = outputs.get("weights") if isinstance(outputs, Mapping) else None
        if self.weight_column is None and given is None:
            if self.loss_reduction == "sum":
                return self.unreduced_loss(logits, labels).sum()
            return self.mean_loss(logits, labels)
        per_example = self.unreduced_loss(logits, labels)  # (batch, k)
        weights = self.weights(outputs, logits.shape[0], logits.device, required=True)
        total = (per_example * weights[:, None]).sum()
        if self.loss_reduction == "sum":
            return total
        return total / max(per_example.numel(), 1)

    def _average_loss(self, outputs: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted mean of the unreduced loss over every element (TF: all label dimensions)."""
        logits = self.logits(outputs)
        per_element = self.unreduced_loss(logits, labels).detach()  # (batch, k)
        weights = self.weights(outputs, logits.shape[0], logits.device, True)
        return per_element, weights[:, None].expand_as(per_element)


class _ClassificationHead(Head):
    def __init__(self, n_classes: int, label_vocabulary: Sequence[str] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        if label_vocabulary is not None:
            if not isinstance(label_vocabulary, (list, tuple)):
                raise ValueError(
                    f"label_vocabulary should be a list or a tuple. Given type: {type(label_vocabulary)}"
                )
            bad = [v for v in label_vocabulary if not isinstance(v, str)]
            if bad:
                raise ValueError(
                    f"label_vocabulary must hold strings (the class names), got {bad[0]!r} of type "
                    f"{type(bad[0]).__name__} in {list(label_vocabulary)}. Without a vocabulary, "
                    "labels are integer class ids 0..n_classes-1."
                )
            if len(label_vocabulary) != n_classes:
                raise ValueError(
                    f"label_vocabulary has {len(label_vocabulary)} entries {list(label_vocabulary)} "
                    f"but n_classes is {n_classes}; give one label per class."
                )
            if len(set(label_vocabulary)) != len(label_vocabulary):
                raise ValueError(f"label_vocabulary has duplicates: {list(label_vocabulary)}.")
        self.n_classes = n_classes
        self.label_vocabulary = None if label_vocabulary is None else [str(v) for v in label_vocabulary]

    def class_ids(self, labels: Any, device: torch.device, check_range: bool = True) -> torch.Tensor:
        """Labels as int64 ids ``(batch,)``, checked against the classes.

        ``check_range=False`` leaves out the range check (one reduction and a host sync) for a
        caller whose next op checks the range itself (cross-entropy on the CPU).
        """
        if (type(labels) is torch.Tensor and labels.dtype == torch.int64 and labels.dim() == 1
                and labels.device == device and self.label_vocabulary is None):
            if check_range:
                self._check_range(labels)
            return labels  # the common case: ids already (batch,) on the device
        if isinstance(labels, Mapping) or labels is None:
            raise ValueError(
                f"labels must be a tensor or an array of one label per example, got "
                f"{type(labels).__name__}."
            )
        if not isinstance(labels, torch.Tensor):
            arr = np.asarray(labels)
            if arr.dtype.kind in "USO":
                if self.label_vocabulary is None:
                    raise ValueError(
                        f"labels are strings (e.g. {arr.reshape(-1)[0]!r}) but no label_vocabulary "
                        "was given; pass label_vocabulary=[...] listing every class."
                    )
                table = {v: i for i, v in enumerate(self.label_vocabulary)}
                flat = [v.decode() if isinstance(v, bytes) else str(v) for v in arr.reshape(-1)]
                unknown = [v for v in flat if v not in table]
                if unknown:
                    raise ValueError(
                        f"Labels must be in label_vocabulary {self.label_vocabulary}; got {unknown[0]!r}."
                    )
                return torch.tensor([table[v] for v in flat], dtype=torch.int64, device=device)
            labels = torch.as_tensor(arr)
        if self.label_vocabulary is not None:
            raise ValueError(
                f"label_vocabulary is set, so labels must be strings from {self.label_vocabulary}; "
                f"got a tensor of dtype {labels.dtype}."
            )
        labels = labels.to(device)
        if labels.dim() > 1 and labels.shape[-1] == 1:
            labels = labels.reshape(labels.shape[0])
        if labels.dim() != 1:
            raise ValueError(
                f"labels must have shape (batch,) or (batch, 1) for classification, got {tuple(labels.shape)}."
            )
        if labels.dtype.is_floating_point and not torch.equal(labels, labels.round()):
            raise ValueError(f"Labels must be integer class ids; got {labels[labels != labels.round()][0].item()}.")
        labels = labels.to(torch.int64)
        if check_range:
            self._check_range(labels)
        return labels

    def _check_range(self, ids: torch.Tensor) -> None:
        """ValueError unless every id is in ``[0, n_classes)``."""
        if ids.numel():
            low, high = torch.stack(torch.aminmax(ids)).tolist()  # one host sync for both checks
            if high > self.n_classes - 1:
                raise ValueError(f"Labels must <= n_classes - 1; got {high} with n_classes={self.n_classes}.")
            if low < 0:
                raise ValueError(f"Labels must >= 0; got {low}.")

    def _classes(self, class_ids: torch.Tensor) -> Any:
        if self.label_vocabulary is None:
            return class_ids  # a tensor, so models without a vocabulary export
        if _tracing():
            return None
        ids = class_ids.detach().cpu().numpy()
        return np.asarray(self.label_vocabulary, dtype=object)[ids]

    def _accuracy(self, outputs: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(outputs)
        ids = self.class_ids(labels, logits.device)
        correct = (self.predicted_ids(logits) == ids).to(torch.float32)
        return correct, self.weights(outputs, logits.shape[0], logits.device, True)

    def predicted_ids(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class BinaryClassHead(_ClassificationHead):
    """Logistic regression over one logit per example (``n_classes=2``)."""

    logits_dimension = 1

    def __init__(self, weight_column: str | None = None, label_vocabulary: Sequence[str] | None = None,
                 loss_reduction: str = "sum_over_batch_size") -> None:
        super().__init__(2, label_vocabulary, weight_column=weight_column, loss_reduction=loss_reduction)

    def unreduced_loss(self, logits, labels):
        ids = self.class_ids(labels, logits.device)
        return F.binary_cross_entropy_with_logits(logits, ids[:, None].to(logits.dtype), reduction="none")

    def mean_loss(self, logits, labels):
        ids = self.class_ids(labels, logits.device)
        return F.binary_cross_entropy_with_logits(logits, ids[:, None].to(logits.dtype))

    def predicted_ids(self, logits):
        return (logits.reshape(-1) > 0).to(torch.int64)

    def predictions(self, outputs: Any) -> dict[str, Any]:
        logits = self.logits(outputs)
        logistic = torch.sigmoid(logits)
        class_ids = (logits > 0).to(torch.int64)
        preds: dict[str, Any] = {"logits": logits, "logistic": logistic,
                                 "probabilities": torch.cat([1 - logistic, logistic], dim=1),
                                 "class_ids": class_ids}
        classes = self._classes(class_ids)
        if classes is not None:
            preds["classes"] = classes
        return preds

    def _label_float(self, outputs, labels):
        logits = self.logits(outputs)
        return (self.class_ids(labels, logits.device).to(torch.float32),
                self.weights(outputs, logits.shape[0], logits.device, True))

    def _prob_mean(self, outputs, labels):
        logits = self.logits(outputs)
        return (torch.sigmoid(logits.detach()).reshape(-1),
                self.weights(outputs, logits.shape[0], logits.device, True))

    def _precision(self, outputs, labels):
        label, weight = self._label_float(outputs, labels)
        return label, weight * self.predicted_ids(self.logits(outputs)).to(torch.float32)

    def _recall(self, outputs, labels):
        label, weight = self._label_float(outputs, labels)
        return self.predicted_ids(self.logits(outputs)).to(torch.float32), weight * label

    def _scores(self, outputs, labels):
        logits = self.logits(outputs)
        return torch.sigmoid(logits.detach()).reshape(-1), self.class_ids(labels, logits.device)

    def _weighted_scores(self, outputs, labels):
        scores, ids = self._scores(outputs, labels)
        return scores, ids, self.weights(outputs, ids.shape[0], ids.device, True)

    def metrics(self) -> dict[str, Any]:
        """accuracy, accuracy_baseline, auc, auc_precision_recall, average_loss, label/mean,
        precision, prediction/mean, recall."""
        from learnrun.canned import metrics as m  # reason: torchmetrics loads only for evaluation

        mean = m.MeanMetric
        return {
            "accuracy": m.HeadMetric(mean(), self._accuracy),
            "accuracy_baseline": m.HeadMetric(mean(), self._label_float, _baseline),
            "auc": m.HeadMetric(m.WeightedBinaryAUROC(), self._weighted_scores),
            "auc_precision_recall": m.HeadMetric(m.binary_average_precision(), self._scores),
            "average_loss": m.HeadMetric(mean(), self._average_loss),
            "label/mean": m.HeadMetric(mean(), self._label_float),
            "precision": m.HeadMetric(mean(), self._precision, _nan_to_zero),
            "prediction/mean": m.HeadMetric(mean(), self._prob_mean),
            "recall": m.HeadMetric(mean(), self._recall, _nan_to_zero),
        }


class MultiClassHead(_ClassificationHead):
    """Softmax cross-entropy over ``n_classes`` logits (``n_classes > 2``)."""

    def __init__(self, n_classes: int, weight_column: str | None = None,
                 label_vocabulary: Sequence[str] | None = None,
                 loss_reduction: str = "sum_over_batch_size") -> None:
        if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)):
            raise ValueError(f"n_classes must be an integer (2 or more), got {n_classes!r}.")
        n_classes = int(n_classes)
        if n_classes <= 2:
            raise ValueError(
                f"n_classes must be > 2: {n_classes}. (n_classes=2 gives a binary head; a "
                "classifier needs at least 2 classes.)"
            )
        super().__init__(n_classes, label_vocabulary, weight_column=weight_column, loss_reduction=loss_reduction)
        self.logits_dimension = n_classes

    def unreduced_loss(self, logits, labels):
        return self._cross_entropy(logits, labels, "none")[:, None]

    def mean_loss(self, logits, labels):
        return self._cross_entropy(logits, labels, "mean")

    def _cross_entropy(self, logits: torch.Tensor, labels: Any, reduction: str) -> torch.Tensor:
        """Cross-entropy of the class ids of ``labels``, whose range is checked once.

        On the CPU torch's kernel checks every target itself (IndexError "Target 12 is out of
        bounds"), so no separate check runs: an out-of-range label is reported with this
        head's message when the kernel refuses it. ``ignore_index`` is set to the one int64
        value no label takes, so that no label (say -100, torch's default) is skipped
        silently. On other devices an out-of-range target is a device-side assert, so the ids
        are checked first.
        """
        if logits.device.type != "cpu":
            return F.cross_entropy(logits, self.class_ids(labels, logits.device), reduction=reduction)
        ids = self.class_ids(labels, logits.device, check_range=False)
        try:
            return F.cross_entropy(logits, ids, reduction=reduction, ignore_index=_NO_IGNORED_ID)
        except IndexError:
            self._check_range(ids)  # raises this head's message
            raise

    def predicted_ids(self, logits):
        return logits.argmax(dim=1)

    def predictions(self, outputs: Any) -> dict[str, Any]:
        logits = self.logits(outputs)
        class_ids = logits.argmax(dim=1, keepdim=True)
        preds: dict[str, Any] = {"logits": logits, "probabilities": torch.softmax(logits, dim=1),
                                 "class_ids": class_ids}
        classes = self._classes(class_ids)
        if classes is not None:
            preds["classes"] = classes
        return preds

    def metrics(self) -> dict[str, Any]:
        """accuracy and average_loss."""
        from learnrun.canned import metrics as m  # reason: torchmetrics loads only for evaluation

        return {"accuracy": m.HeadMetric(m.MeanMetric(), self._accuracy),
                "average_loss": m.HeadMetric(m.MeanMetric(), self._average_loss)}


class RegressionHead(Head):
    """Mean squared error over ``label_dimension`` outputs."""

    def __init__(self, label_dimension: int = 1, weight_column: str | None = None,
                 loss_reduction: str = "sum_over_batch_size") -> None:
        if isinstance(label_dimension, bool) or not isinstance(label_dimension, int) or label_dimension < 1:
            raise ValueError(f"Invalid label_dimension {label_dimension}.")
        super().__init__(weight_column=weight_column, loss_reduction=loss_reduction)
        self.logits_dimension = label_dimension

    def targets(self, labels: Any, device: torch.device) -> torch.Tensor:
        """Labels as float32 ``(batch, label_dimension)``."""
        if isinstance(labels, Mapping) or labels is None:
            raise ValueError(f"labels must be a tensor or an array, got {type(labels).__name__}.")
        if not isinstance(labels, torch.Tensor):
            arr = np.asarray(labels)
            if arr.dtype.kind not in "biuf":
                raise ValueError(f"regression labels must be numbers, got dtype {arr.dtype} (e.g. {arr.reshape(-1)[0]!r}).")
            labels = torch.as_tensor(arr)
        labels = labels.to(device=device, dtype=torch.float32)
        batch = labels.shape[0] if labels.dim() else 1
        if labels.numel() != batch * self.logits_dimension:
            raise ValueError(
                f"labels have shape {tuple(labels.shape)} but label_dimension is "
                f"{self.logits_dimension}; expected (batch, {self.logits_dimension})."
            )
        return labels.reshape(batch, self.logits_dimension)

    def unreduced_loss(self, logits, labels):
        return (logits - self.targets(labels, logits.device)) ** 2

    def mean_loss(self, logits, labels):
        return F.mse_loss(logits, self.targets(labels, logits.device))

    def predictions(self, outputs: Any) -> dict[str, Any]:
        return {"predictions": self.logits(outputs)}

    def _err(self, outputs, labels, fn):
        logits = self.logits(outputs).detach()
        diff = fn(logits - self.targets(labels, logits.device))
        weights = self.weights(outputs, logits.shape[0], logits.device, True)
        return diff, weights[:, None].expand_as(diff)

    def _squared(self, outputs, labels):
        return self._err(outputs, labels, torch.square)

    def _absolute(self, outputs, labels):
        return self._err(outputs, labels, torch.abs)

    def _label_mean(self, outputs, labels):
        logits = self.logits(outputs)
        target = self.targets(labels, logits.device)
        return target, self.weights(outputs, logits.shape[0], logits.device, True)[:, None].expand_as(target)

    def _prediction_mean(self, outputs, labels):
        logits = self.logits(outputs).detach()
        return logits, self.weights(outputs, logits.shape[0], logits.device, True)[:, None].expand_as(logits)

    def metrics(self) -> dict[str, Any]:
        """average_loss, label/mean, prediction/mean, mse, rmse, mae."""
        from learnrun.canned import metrics as m  # reason: torchmetrics loads only for evaluation

        mean = m.MeanMetric
        return {
            "average_loss": m.HeadMetric(mean(), self._average_loss),
            "label/mean": m.HeadMetric(mean(), self._label_mean),
            "prediction/mean": m.HeadMetric(mean(), self._prediction_mean),
            "mse": m.HeadMetric(mean(), self._squared),
            "rmse": m.HeadMetric(mean(), self._squared, torch.sqrt),
            "mae": m.HeadMetric(mean(), self._absolute),
        }


def classification_head(n_classes: int, weight_column: str | None = None,
                        label_vocabulary: Sequence[str] | None = None,
                        loss_reduction: str = "sum_over_batch_size") -> Head:
    """Binary head for ``n_classes == 2``, multi-class head otherwise (TF's rule and texts)."""
    if not isinstance(n_classes, bool) and isinstance(n_classes, (int, np.integer)) and n_classes == 2:
        return BinaryClassHead(weight_column, label_vocabulary, loss_reduction)
    return MultiClassHead(n_classes, weight_column, label_vocabulary, loss_reduction)
