"""Calibration: ECE, MCE, Brier, NLL, reliability-diagram data and temperature scaling.

Binning (Guo et al. 2017): confidence = max class probability; ``n_bins`` equal-width bins over [0, 1],
bin ``b`` holds confidences in ``(b / n_bins, (b + 1) / n_bins]`` (the first bin also holds 0). A bin's
accuracy is the share of its examples whose argmax equals the gold label (argmax ties -> lowest id).

- ECE = sum_b (n_b / N) * |accuracy_b - mean_confidence_b|
- MCE = max over non-empty bins of |accuracy_b - mean_confidence_b|
- Brier (multi-class) = mean over examples of sum_c (p_c - 1[c = y])^2, in [0, 2]
- NLL = mean over examples of -log p_y (p_y clipped at 1e-12 so a hard zero gives a large finite value)

``fit_temperature`` minimises the validation NLL of ``softmax(logits / T)`` over ``log T`` with scipy's
bounded Brent search. The NLL is convex in ``1 / T`` (log-sum-exp of a linear function minus a linear
function), so it is unimodal in ``log T`` and a 1-D bounded search finds the global minimum; no learning
rate or iteration budget to tune, unlike LBFGS on T.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from rationalign.errors import ConfigError, DataError
from rationalign.evaluation.metrics import check_label_ids

DEFAULT_BINS = 15
PROBABILITY_SUM_TOLERANCE = 1e-4
_NLL_FLOOR = 1e-12


def check_probabilities(probs: Any, what: str = "probs") -> np.ndarray:
    """Return ``probs`` as float64 ``[n, C]``; raise ``DataError`` unless rows are distributions."""
    array = np.asarray(probs, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(
            f"{what} must be a non-empty [n_examples, n_classes] array, got shape {array.shape}; "
            "fix: pass predict_proba output for at least one example"
        )
    if not np.all(np.isfinite(array)):
        raise DataError(f"{what} contains NaN or infinity; fix: check the model's outputs")
    if array.min() < 0:
        raise DataError(f"{what} has a negative probability ({array.min():.3g}); fix: pass softmax outputs")
    sums = array.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > PROBABILITY_SUM_TOLERANCE:
        raise DataError(
            f"{what} row {worst} sums to {sums[worst]:.6f}, not 1; "
            "fix: pass probabilities (softmax of logits), not logits or scores"
        )
    return array


def _check_logits(logits: Any) -> np.ndarray:
    array = np.asarray(logits, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(
            f"logits must be a non-empty [n_examples, n_classes] array, got shape {array.shape}; "
            "fix: pass IntentClassifier.logits(texts) for at least one example"
        )
    if not np.all(np.isfinite(array)):
        raise DataError("logits contain NaN or infinity; fix: check the model's outputs")
    return array


def _check_with_labels(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    array = check_probabilities(probs)
    ids = check_label_ids(labels, array.shape[1], "labels")
    if ids.size != array.shape[0]:
        raise DataError(
            f"probs has {array.shape[0]} rows but labels has {ids.size} entries; fix: one label per row"
        )
    return array, ids


def _check_bins(n_bins: int) -> None:
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ConfigError(f"n_bins must be a positive integer, got {n_bins!r}; fix: use 15 (the default)")


@dataclass(frozen=True)
class ReliabilityBin:
    """One bar of a reliability diagram. ``mean_confidence``/``accuracy`` are NaN when ``count`` is 0."""

    lower: float
    upper: float
    count: int
    mean_confidence: float
    accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReliabilityDiagram:
    bins: list[ReliabilityBin]
    n_examples: int

    @property
    def ece(self) -> float:
        return float(
            sum(b.count * abs(b.accuracy - b.mean_confidence) for b in self.bins if b.count) / self.n_examples
        )

    @property
    def mce(self) -> float:
        return float(max(abs(b.accuracy - b.mean_confidence) for b in self.bins if b.count))

    def to_dict(self) -> dict[str, Any]:
        return {"n_examples": self.n_examples, "bins": [b.to_dict() for b in self.bins]}


def reliability_diagram(probs: Any, labels: Any, n_bins: int = DEFAULT_BINS) -> ReliabilityDiagram:
    """Per equal-width confidence bin: count, mean max-probability and accuracy."""
    _check_bins(n_bins)
    array, ids = _check_with_labels(probs, labels)
    confidence = array.max(axis=1)
    correct = (array.argmax(axis=1) == ids).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right=True puts a confidence equal to an inner edge into the lower bin: bins are (lower, upper].
    which = np.digitize(confidence, edges[1:-1], right=True)
    bins = []
    for b in range(n_bins):
        members = which == b
        count = int(members.sum())
        bins.append(
            ReliabilityBin(
                lower=float(edges[b]),
                upper=float(edges[b + 1]),
                count=count,
                mean_confidence=float(confidence[members].mean()) if count else math.nan,
                accuracy=float(correct[members].mean()) if count else math.nan,
            )
        )
    return ReliabilityDiagram(bins=bins, n_examples=int(ids.size))


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = DEFAULT_BINS) -> float:
    return reliability_diagram(probs, labels, n_bins).ece


def maximum_calibration_error(probs: Any, labels: Any, n_bins: int = DEFAULT_BINS) -> float:
    return reliability_diagram(probs, labels, n_bins).mce


def brier_score(probs: Any, labels: Any) -> float:
    """Multi-class Brier score: mean squared distance to the one-hot gold vector, summed over classes."""
    array, ids = _check_with_labels(probs, labels)
    onehot = np.zeros_like(array)
    onehot[np.arange(ids.size), ids] = 1.0
    return float(np.mean(np.sum((array - onehot) ** 2, axis=1)))


def negative_log_likelihood(probs: Any, labels: Any) -> float:
    """Mean ``-log p_y``; probabilities are floored at 1e-12."""
    array, ids = _check_with_labels(probs, labels)
    return float(-np.mean(np.log(np.maximum(array[np.arange(ids.size), ids], _NLL_FLOOR))))


@dataclass(frozen=True)
class CalibrationReport:
    ece: float
    mce: float
    brier: float
    nll: float
    n_examples: int
    n_bins: int
    reliability: ReliabilityDiagram

    def to_dict(self) -> dict[str, Any]:
        return {
            "ece": self.ece,
            "mce": self.mce,
            "brier": self.brier,
            "nll": self.nll,
            "n_examples": self.n_examples,
            "n_bins": self.n_bins,
            "reliability": self.reliability.to_dict(),
        }


def calibration_report(probs: Any, labels: Any, n_bins: int = DEFAULT_BINS) -> CalibrationReport:
    diagram = reliability_diagram(probs, labels, n_bins)
    return CalibrationReport(
        ece=diagram.ece,
        mce=diagram.mce,
        brier=brier_score(probs, labels),
        nll=negative_log_likelihood(probs, labels),
        n_examples=diagram.n_examples,
        n_bins=n_bins,
        reliability=diagram,
    )


def _check_temperature(temperature: float) -> float:
    value = float(temperature)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"temperature must be a positive finite number, got {temperature!r}")
    return value


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """``softmax(logits / temperature)`` row-wise, float64 ``[n, C]``."""
    return softmax(_check_logits(logits) / _check_temperature(temperature), axis=1)


def temperature_nll(logits: Any, labels: Any, temperature: float) -> float:
    """Mean NLL of ``softmax(logits / temperature)`` computed in log space (no underflow)."""
    array = _check_logits(logits)
    ids = check_label_ids(labels, array.shape[1], "labels")
    if ids.size != array.shape[0]:
        raise DataError(
            f"logits has {array.shape[0]} rows but labels has {ids.size} entries; fix: one label per row"
        )
    log_probs = log_softmax(array / _check_temperature(temperature), axis=1)
    return float(-np.mean(log_probs[np.arange(ids.size), ids]))


def fit_temperature(
    logits: Any, labels: Any, bounds: tuple[float, float] = (0.05, 20.0), tolerance: float = 1e-6
) -> float:
    """The temperature ``T`` in ``bounds`` minimising the NLL of ``softmax(logits / T)`` on ``labels``.

    Fit on the validation split only. The optimum sits on a bound when the data push it there (e.g. all
    validation predictions correct and separable -> T at the lower bound); that is the honest answer within
    the allowed range, so it is returned rather than raised.
    """
    low, high = (_check_temperature(b) for b in bounds)
    if low >= high:
        raise ConfigError(f"temperature bounds must satisfy low < high, got {bounds}")
    array = _check_logits(logits)
    ids = check_label_ids(labels, array.shape[1], "labels")
    if ids.size != array.shape[0]:
        raise DataError(
            f"logits has {array.shape[0]} rows but labels has {ids.size} entries; fix: one label per row"
        )
    rows = np.arange(ids.size)

    def nll_of_log_temperature(log_t: float) -> float:
        return float(-np.mean(log_softmax(array * math.exp(-log_t), axis=1)[rows, ids]))

    result = minimize_scalar(
        nll_of_log_temperature,
        bounds=(math.log(low), math.log(high)),
        method="bounded",
        options={"xatol": tolerance},
    )
    best = float(result.x)
    # Brent's bounded search never evaluates the end points exactly; check them so an optimum on a
    # bound is returned as the bound itself.
    for candidate in (math.log(low), math.log(high)):
        if nll_of_log_temperature(candidate) < nll_of_log_temperature(best):
            best = candidate
    return float(math.exp(best))


@dataclass(frozen=True)
class TemperatureFit:
    temperature: float
    nll_before: float
    nll_after: float
    n_examples: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_temperature_report(
    logits: Any, labels: Any, bounds: tuple[float, float] = (0.05, 20.0)
) -> TemperatureFit:
    """``fit_temperature`` plus the NLL before and after, for the run manifest."""
    temperature = fit_temperature(logits, labels, bounds)
    return TemperatureFit(
        temperature=temperature,
        nll_before=temperature_nll(logits, labels, 1.0),
        nll_after=temperature_nll(logits, labels, temperature),
        n_examples=int(np.asarray(logits).shape[0]),
    )
