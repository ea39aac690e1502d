"""The common result type and protocol of every attribution method, and score normalisation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

Normalisation = Literal["sum", "minmax", "softmax"]


@dataclass
class WordAttribution:
    """Scores of one utterance's words (``words`` from :func:`rationalign.attribution.words.split_words`)."""

    words: list[str]
    scores: np.ndarray
    method: str
    target: int
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if self.scores.shape != (len(self.words),):
            raise ValueError(f"{len(self.words)} words but scores of shape {self.scores.shape}")

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` highest-scoring words with their scores (ties keep word order)."""
        order = np.argsort(-self.scores, kind="stable")[:k]
        return [(self.words[i], float(self.scores[i])) for i in order]


@runtime_checkable
class Attributor(Protocol):
    """Every method: ``attribute(texts, targets)`` -> one :class:`WordAttribution` per text."""

    name: str

    def attribute(self, texts: Sequence[str], targets: Sequence[int]) -> list[WordAttribution]: ...


def normalise(scores, how: Normalisation = "sum", temperature: float = 1.0) -> np.ndarray:
    """Put one utterance's scores on a common scale before comparing or fusing priors.

    - ``"sum"``: clip negatives to 0, divide by the sum (an all-zero row stays zero);
    - ``"minmax"``: ``(s - min) / (max - min)`` (a constant row becomes zeros);
    - ``"softmax"``: ``softmax(s / temperature)``.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s.copy()
    if how == "sum":
        s = np.clip(s, 0.0, None)
        total = s.sum(axis=-1, keepdims=True)
        return np.divide(s, total, out=np.zeros_like(s), where=total > 0)
    if how == "minmax":
        lo = s.min(axis=-1, keepdims=True)
        span = s.max(axis=-1, keepdims=True) - lo
        return np.divide(s - lo, span, out=np.zeros_like(s), where=span > 0)
    if how == "softmax":
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        z = s / temperature
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)
    raise ValueError(f"unknown normalisation {how!r}; choose 'sum', 'minmax' or 'softmax'")
