"""Out-of-scope detection (CLINC150 ``oos``): scores, AUROC, FPR at 95% TPR, abstain threshold.

Every score here is oriented so that **higher = more in-scope**, and in-scope is the positive class:

- MSP: ``max_c softmax(logits / T)_c`` (Hendrycks & Gimpel 2017).
- energy: ``E(x) = -T * logsumexp(logits / T)`` (Liu et al. 2020); low energy = in-scope, so the
  in-scope score is ``-E(x)``. ``energy`` returns E itself; ``in_scope_scores(..., "energy")`` returns -E.

FPR at TPR: the threshold is the highest ``t`` such that accepting ``score >= t`` keeps at least
``target_tpr`` of the in-scope examples (at least ``ceil(target_tpr * n_in)`` of them); the FPR is the
share of out-of-scope examples with ``score >= t``. This is the lowest FPR among ROC points with
TPR >= target (sklearn's ``roc_curve`` gives the same number). ``choose_abstain_threshold`` picks that
``t`` on the validation split; at test time the model abstains (predicts ``oos``) when ``score < t``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy.special import logsumexp, softmax
from sklearn.metrics import roc_auc_score

from rationalign.errors import ConfigError, DataError
from rationalign.evaluation.metrics import check_label_ids

ScoreMethod = Literal["msp", "energy"]


def _check_logits(logits: Any) -> np.ndarray:
    array = np.asarray(logits, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"logits must be a non-empty [n_examples, n_classes] array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise DataError("logits contain NaN or infinity; fix: check the model's outputs")
    return array


def _check_temperature(temperature: float) -> float:
    if not math.isfinite(temperature) or temperature <= 0:
        raise ConfigError(f"temperature must be a positive finite number, got {temperature!r}")
    return float(temperature)


def max_softmax_probability(logits: Any, temperature: float = 1.0) -> np.ndarray:
    return softmax(_check_logits(logits) / _check_temperature(temperature), axis=1).max(axis=1)


def energy(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """``-T * logsumexp(logits / T)`` per row (low = in-scope)."""
    t = _check_temperature(temperature)
    return -t * logsumexp(_check_logits(logits) / t, axis=1)


def in_scope_scores(logits: Any, method: ScoreMethod = "msp", temperature: float = 1.0) -> np.ndarray:
    """Scores with higher = more in-scope: MSP, or negative energy."""
    if method == "msp":
        return max_softmax_probability(logits, temperature)
    if method == "energy":
        return -energy(logits, temperature)
    raise ConfigError(f"unknown out-of-scope score {method!r}; fix: use 'msp' or 'energy'")


def _check_scores(scores: Any, what: str) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise DataError(f"{what} must be a non-empty 1-D array of scores, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise DataError(f"{what} contains NaN or infinity; fix: check the model's outputs")
    return array


def _check_target_tpr(target_tpr: float) -> None:
    if not 0 < target_tpr <= 1:
        raise ConfigError(f"target_tpr must be in (0, 1], got {target_tpr}")


def ood_auroc(in_scores: Any, oos_scores: Any) -> float:
    """Area under the ROC curve with in-scope as the positive class."""
    positives = _check_scores(in_scores, "in_scores")
    negatives = _check_scores(oos_scores, "oos_scores")
    labels = np.concatenate([np.ones(positives.size), np.zeros(negatives.size)])
    return float(roc_auc_score(labels, np.concatenate([positives, negatives])))


@dataclass(frozen=True)
class AbstainThreshold:
    """Accept (answer in-scope) when ``score >= threshold``; otherwise abstain / predict ``oos``.

    ``tpr``/``fpr`` are measured on the split the threshold was chosen on.
    """

    threshold: float
    target_tpr: float
    tpr: float
    fpr: float

    def accepts(self, scores: Any) -> np.ndarray:
        return _check_scores(scores, "scores") >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_abstain_threshold(
    in_scores_valid: Any, oos_scores_valid: Any, target_tpr: float = 0.95
) -> AbstainThreshold:
    """The highest threshold that accepts at least ``target_tpr`` of the in-scope validation examples.

    Among thresholds reaching the target TPR it has the lowest validation FPR.
    """
    _check_target_tpr(target_tpr)
    positives = np.sort(_check_scores(in_scores_valid, "in_scores_valid"))[::-1]
    negatives = _check_scores(oos_scores_valid, "oos_scores_valid")
    # 1e-9 absorbs float noise: 0.28 * 25 = 7.000000000000001 must need 7 examples, not 8.
    n_accept = min(positives.size, max(1, math.ceil(target_tpr * positives.size - 1e-9)))
    threshold = float(positives[n_accept - 1])
    return AbstainThreshold(
        threshold=threshold,
        target_tpr=target_tpr,
        tpr=float(np.mean(positives >= threshold)),
        fpr=float(np.mean(negatives >= threshold)),
    )


def fpr_at_tpr(in_scores: Any, oos_scores: Any, target_tpr: float = 0.95) -> float:
    """FPR (share of out-of-scope accepted) at the threshold reaching ``target_tpr`` on these scores."""
    return choose_abstain_threshold(in_scores, oos_scores, target_tpr).fpr


def apply_abstain_threshold(predictions: Any, scores: Any, threshold: float, oos_label_id: int) -> np.ndarray:
    """Copy of ``predictions`` with ``oos_label_id`` wherever ``score < threshold``."""
    predicted = check_label_ids(predictions, None, "predictions")
    values = _check_scores(scores, "scores")
    if predicted.size != values.size:
        raise DataError(
            f"{predicted.size} predictions but {values.size} scores; fix: one score per prediction"
        )
    if oos_label_id < 0:
        raise ConfigError(f"oos_label_id must be >= 0, got {oos_label_id}")
    return np.where(values >= threshold, predicted, oos_label_id)


@dataclass(frozen=True)
class OODReport:
    method: str
    auroc: float
    fpr_at_95_tpr: float
    n_in_scope: int
    n_out_of_scope: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_ood(in_scores: Any, oos_scores: Any, method: str = "msp") -> OODReport:
    """AUROC and FPR@95%TPR of already oriented scores (see ``in_scope_scores``)."""
    positives = _check_scores(in_scores, "in_scores")
    negatives = _check_scores(oos_scores, "oos_scores")
    return OODReport(
        method=method,
        auroc=ood_auroc(positives, negatives),
        fpr_at_95_tpr=fpr_at_tpr(positives, negatives, 0.95),
        n_in_scope=int(positives.size),
        n_out_of_scope=int(negatives.size),
    )
