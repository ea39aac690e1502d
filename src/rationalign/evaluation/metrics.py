"""Classification metrics on integer label ids: accuracy, macro-F1, per-class table, confusion matrix.

Inputs are label ids (``0 .. num_labels - 1``), as produced by ``LabelSpace.ids``. Every function checks
its inputs and raises ``DataError`` with the fix when they are inconsistent, because these metrics end up
in reports and a silently broadcast or truncated array would give a plausible but wrong number.

sklearn does the arithmetic; this module owns validation, the label grid and the typed results.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import f1_score, precision_recall_fscore_support

from rationalign.errors import ConfigError, DataError


def check_label_ids(values: Any, num_labels: int | None, what: str) -> np.ndarray:
    """Return ``values`` as a 1-D int64 array, checking it is non-empty, integral and in range."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise DataError(
            f"{what} must be a 1-D sequence of label ids, got shape {array.shape}; fix: flatten it"
        )
    if array.size == 0:
        raise DataError(f"{what} is empty; fix: evaluate on at least one example")
    if array.dtype.kind not in "iu":
        if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
            array = array.astype(np.int64)
        else:
            raise DataError(
                f"{what} must hold integer label ids, got dtype {array.dtype}; "
                "fix: map label names to ids with LabelSpace.ids"
            )
    array = array.astype(np.int64, copy=False)
    if array.min() < 0 or (num_labels is not None and array.max() >= num_labels):
        raise DataError(
            f"{what} has label id {int(array.min() if array.min() < 0 else array.max())} outside "
            f"0..{(num_labels or 0) - 1}; fix: use ids from the model's label space"
        )
    return array


def _check_pair(y_true: Any, y_pred: Any, num_labels: int | None) -> tuple[np.ndarray, np.ndarray]:
    if num_labels is not None and num_labels < 1:
        raise ConfigError(f"num_labels must be >= 1, got {num_labels}; fix: pass len(label_space)")
    true = check_label_ids(y_true, num_labels, "y_true")
    pred = check_label_ids(y_pred, num_labels, "y_pred")
    if true.shape != pred.shape:
        raise DataError(
            f"y_true has {true.size} labels but y_pred has {pred.size}; fix: predict every evaluated example"
        )
    return true, pred


def accuracy(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    """Fraction of examples whose predicted id equals the gold id."""
    true, pred = _check_pair(y_true, y_pred, None)
    return float(np.mean(true == pred))


def macro_f1(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_labels: int | None = None
) -> float:
    """Unweighted mean of per-class F1 over the labels that occur in ``y_true`` or ``y_pred``.

    This is sklearn's ``f1_score(average="macro")`` convention (the one intent-classification papers
    report): a label that is neither gold nor predicted anywhere in the evaluated set contributes nothing,
    rather than an F1 of 0. ``num_labels`` only range-checks the ids.
    """
    true, pred = _check_pair(y_true, y_pred, num_labels)
    return float(f1_score(true, pred, average="macro", zero_division=0))


@dataclass(frozen=True)
class ClassScores:
    """One row of the per-class table. Precision/recall are 0 where undefined (no predictions/support)."""

    label_id: int
    label: str
    precision: float
    recall: float
    f1: float
    support: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ConfusedPair:
    """``count`` gold ``true_label`` examples were predicted as ``predicted_label``.

    ``rate`` = count / support of the gold label (the share of that intent lost to this confusion).
    """

    true_label_id: int
    true_label: str
    predicted_label_id: int
    predicted_label: str
    count: int
    rate: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ClassificationReport:
    accuracy: float
    macro_f1: float
    n_examples: int
    per_class: list[ClassScores]
    confusion: np.ndarray = field(repr=False)
    most_confused: list[ConfusedPair]

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "n_examples": self.n_examples,
            "per_class": [row.to_dict() for row in self.per_class],
            "confusion": self.confusion.tolist(),
            "most_confused": [pair.to_dict() for pair in self.most_confused],
        }


def _names(label_names: Iterable[str]) -> tuple[str, ...]:
    names = tuple(label_names)
    if not names:
        raise ConfigError("label_names is empty; fix: pass the model's label space")
    return names


def per_class_scores(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, label_names: Iterable[str]
) -> list[ClassScores]:
    """Precision, recall, F1 and support for every label of the label space, in label-id order."""
    names = _names(label_names)
    true, pred = _check_pair(y_true, y_pred, len(names))
    labels = np.arange(len(names))
    precision, recall, f1, support = precision_recall_fscore_support(
        true, pred, labels=labels, zero_division=0
    )
    return [
        ClassScores(int(i), names[i], float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
        for i in labels
    ]


def confusion_matrix(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_labels: int
) -> np.ndarray:
    """``[num_labels, num_labels]`` counts; row = gold id, column = predicted id."""
    true, pred = _check_pair(y_true, y_pred, num_labels)
    return sk_confusion_matrix(true, pred, labels=np.arange(num_labels)).astype(np.int64)


def most_confused_pairs(
    confusion: np.ndarray, label_names: Iterable[str], top: int = 10
) -> list[ConfusedPair]:
    """The ``top`` off-diagonal cells with the largest counts (ties: lower gold id, then predicted id).

    Cells with a zero count are never returned, so the list can be shorter than ``top``.
    """
    names = _names(label_names)
    matrix = np.asarray(confusion)
    if matrix.shape != (len(names), len(names)):
        raise DataError(
            f"confusion matrix has shape {matrix.shape} but there are {len(names)} labels; "
            "fix: build it with confusion_matrix(..., num_labels=len(label_names))"
        )
    if top < 0:
        raise ConfigError(f"top must be >= 0, got {top}")
    support = matrix.sum(axis=1)
    cells = [
        (int(matrix[i, j]), i, j)
        for i in range(len(names))
        for j in range(len(names))
        if i != j and matrix[i, j] > 0
    ]
    cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))
    return [
        ConfusedPair(i, names[i], j, names[j], count, count / int(support[i])) for count, i, j in cells[:top]
    ]


def classification_report(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    label_names: Iterable[str],
    top_confused: int = 10,
) -> ClassificationReport:
    """Everything above in one typed object (``to_dict()`` for JSON)."""
    names = _names(label_names)
    true, pred = _check_pair(y_true, y_pred, len(names))
    matrix = confusion_matrix(true, pred, len(names))
    return ClassificationReport(
        accuracy=accuracy(true, pred),
        macro_f1=macro_f1(true, pred, len(names)),
        n_examples=int(true.size),
        per_class=per_class_scores(true, pred, names),
        confusion=matrix,
        most_confused=most_confused_pairs(matrix, names, top_confused),
    )
