"""Fidelity of the student's word attributions to the teacher's, plus the score-vector helpers
(top-k selection, rank correlations, NaN-aware means) that the other evaluation modules share.

Conventions used everywhere in ``rationalign.evaluation``:

- Top-k words: the ``k`` highest scores, ties broken by word position (earlier word first), i.e. a stable
  sort on descending score. ``k`` from a percentage is ``ceil(percent / 100 * d)``, at least 1 and at most
  ``d`` (a 3-word utterance at 20% still has a 1-word rationale, rather than an empty one).
- Rank correlations are undefined (NaN) for fewer than two words or a constant vector; aggregates use
  ``nanmean`` and report how many values were NaN (``NanMean``). Kendall is scipy's tau-b (tie-aware).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from scipy.stats import kendalltau, spearmanr
from sklearn.metrics import average_precision_score

from rationalign.errors import ConfigError, DataError

DEFAULT_TOP_K_PERCENT = 20.0


@runtime_checkable
class HasWordScores(Protocol):
    """Anything with ``words`` and ``scores``, e.g. ``attribution.WordAttribution``."""

    words: Sequence[str]
    scores: Any


WordScores = tuple[Sequence[str], Any] | HasWordScores


def as_word_scores(item: WordScores, where: str = "attribution") -> tuple[list[str], np.ndarray]:
    """Unpack a ``(words, scores)`` pair or a ``WordAttribution``-like object and validate it."""
    if isinstance(item, HasWordScores):
        words, scores = item.words, item.scores
    else:
        try:
            words, scores = item
        except (TypeError, ValueError):
            raise DataError(
                f"{where}: expected (words, scores) or an object with .words and .scores, "
                f"got {type(item).__name__}; fix: pass WordAttribution objects"
            ) from None
    return check_word_scores(words, scores, where)


def check_word_scores(
    words: Sequence[str], scores: Any, where: str = "attribution"
) -> tuple[list[str], np.ndarray]:
    """Words must be a non-empty list of strings and scores a finite 1-D array of the same length."""
    if isinstance(words, str) or not all(isinstance(w, str) for w in words):
        raise DataError(
            f"{where}: words must be a list of strings; fix: pass the segmented words, not a text"
        )
    word_list = list(words)
    if not word_list:
        raise DataError(f"{where}: the utterance has no words; fix: drop empty utterances before evaluating")
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1 or array.size != len(word_list):
        raise DataError(
            f"{where}: {len(word_list)} words but scores has shape {array.shape}; "
            "fix: one score per word from the shared word segmentation"
        )
    if not np.all(np.isfinite(array)):
        raise DataError(f"{where}: scores contain NaN or infinity; fix: check the attribution method")
    return word_list, array


def top_k_count(n_words: int, percent: float) -> int:
    """``ceil(percent / 100 * n_words)`` clipped to ``[1, n_words]``."""
    if not 0 < percent <= 100:
        raise ConfigError(f"top-k percentage must be in (0, 100], got {percent}")
    if n_words < 1:
        raise DataError("cannot select top-k words of an empty utterance; fix: drop empty utterances")
    # Multiplying before dividing keeps integer percentages exact; the 1e-9 guards non-integer ones
    # against float noise just above a whole number (which would add a word).
    return min(n_words, max(1, math.ceil(percent * n_words / 100 - 1e-9)))


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, highest first; ties -> earlier position first."""
    if k < 0:
        raise ConfigError(f"k must be >= 0, got {k}")
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]


def _is_constant(values: np.ndarray) -> bool:
    return values.size < 2 or bool(np.all(values == values[0]))


def _paired(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise DataError(f"score vectors must be 1-D and the same length, got {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise DataError("score vectors contain NaN or infinity; fix: check the attribution method")
    return x, y


def spearman(a: Any, b: Any) -> float:
    """Spearman rank correlation; NaN when either vector is constant or shorter than 2."""
    x, y = _paired(a, b)
    if _is_constant(x) or _is_constant(y):
        return math.nan
    return float(spearmanr(x, y).statistic)


def kendall(a: Any, b: Any) -> float:
    """Kendall tau-b; NaN when either vector is constant or shorter than 2."""
    x, y = _paired(a, b)
    if _is_constant(x) or _is_constant(y):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(kendalltau(x, y).statistic)


def top_k_iou(a: Any, b: Any, k: int) -> float:
    """|top-k(a) ∩ top-k(b)| / |top-k(a) ∪ top-k(b)|, with ``k`` clipped to the vector length."""
    x, y = _paired(a, b)
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    k = min(k, x.size)
    first, second = set(top_k_indices(x, k).tolist()), set(top_k_indices(y, k).tolist())
    return len(first & second) / len(first | second)


def top_k_auprc(student: Any, teacher: Any, k: int) -> float:
    """Average precision of ``student`` scores at recovering the teacher's top-``k`` words.

    NaN when ``k >= d`` (every word is a positive, so any ranking scores 1 and the value says nothing).
    """
    x, y = _paired(student, teacher)
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    if k >= x.size:
        return math.nan
    positives = np.zeros(x.size, dtype=np.int64)
    positives[top_k_indices(y, k)] = 1
    return float(average_precision_score(positives, x))


@dataclass(frozen=True)
class NanMean:
    """A mean over values that may be NaN: ``mean`` ignores NaNs, ``n_nan`` says how many there were."""

    mean: float
    n_valid: int
    n_nan: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def nan_summary(values: Sequence[float]) -> NanMean:
    array = np.asarray(values, dtype=np.float64)
    valid = ~np.isnan(array)
    n_valid = int(valid.sum())
    return NanMean(
        mean=float(array[valid].mean()) if n_valid else math.nan,
        n_valid=n_valid,
        n_nan=int(array.size - n_valid),
    )


@dataclass(frozen=True)
class FidelityResult:
    """Agreement of one utterance's student and teacher word scores."""

    n_words: int
    k: int
    spearman: float
    kendall: float
    top_k_iou: float
    auprc: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FidelitySummary:
    n_examples: int
    spearman: NanMean
    kendall: NanMean
    top_k_iou: NanMean
    auprc: NanMean

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_examples": self.n_examples,
            "spearman": self.spearman.to_dict(),
            "kendall": self.kendall.to_dict(),
            "top_k_iou": self.top_k_iou.to_dict(),
            "auprc": self.auprc.to_dict(),
        }


@dataclass(frozen=True)
class FidelityReport:
    examples: list[FidelityResult]
    summary: FidelitySummary

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary.to_dict(), "examples": [e.to_dict() for e in self.examples]}


def compare_attributions(
    student: WordScores,
    teacher: WordScores,
    k: int | None = None,
    k_percent: float = DEFAULT_TOP_K_PERCENT,
    where: str = "example",
) -> FidelityResult:
    """Fidelity of one student attribution to the teacher's on the same words.

    ``k`` fixes the number of top words; otherwise ``top_k_count(d, k_percent)``.
    """
    student_words, student_scores = as_word_scores(student, f"{where} (student)")
    teacher_words, teacher_scores = as_word_scores(teacher, f"{where} (teacher)")
    if student_words != teacher_words:
        raise DataError(
            f"{where}: student words {student_words} differ from teacher words {teacher_words}; "
            "fix: segment both with rationalign.attribution's word segmentation of the same text"
        )
    n_words = len(student_words)
    if k is not None and k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    chosen_k = min(k, n_words) if k is not None else top_k_count(n_words, k_percent)
    return FidelityResult(
        n_words=n_words,
        k=chosen_k,
        spearman=spearman(student_scores, teacher_scores),
        kendall=kendall(student_scores, teacher_scores),
        top_k_iou=top_k_iou(student_scores, teacher_scores, chosen_k),
        auprc=top_k_auprc(student_scores, teacher_scores, chosen_k),
    )


def evaluate_fidelity(
    student: Sequence[WordScores],
    teacher: Sequence[WordScores],
    k: int | None = None,
    k_percent: float = DEFAULT_TOP_K_PERCENT,
) -> FidelityReport:
    """Per-utterance fidelity and NaN-aware means over a set of utterances."""
    if len(student) != len(teacher):
        raise DataError(
            f"{len(student)} student attributions but {len(teacher)} teacher attributions; "
            "fix: attribute the same utterances with both"
        )
    if not student:
        raise DataError("no attributions to compare; fix: pass at least one utterance")
    results = [
        compare_attributions(s, t, k=k, k_percent=k_percent, where=f"example {i}")
        for i, (s, t) in enumerate(zip(student, teacher, strict=True))
    ]
    summary = FidelitySummary(
        n_examples=len(results),
        spearman=nan_summary([r.spearman for r in results]),
        kendall=nan_summary([r.kendall for r in results]),
        top_k_iou=nan_summary([r.top_k_iou for r in results]),
        auprc=nan_summary([r.auprc for r in results]),
    )
    return FidelityReport(examples=results, summary=summary)
