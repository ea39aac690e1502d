"""Word attributions for one utterance (gradient x input) and the deletion counterfactual.

``/explain`` works on its *own* copy of the PyTorch classifier: the attribution code patches the model's
input-embedding layer with a forward hook while it runs, which must never touch the forward passes of
concurrent ``/predict`` batches. Explanations run one at a time behind a bounded gate (429 when too many
wait, 503 when one waits too long), like the prediction queue.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from rationalign.attribution.base import WordAttribution
from rationalign.attribution.gradient import GradientXInput
from rationalign.attribution.words import join_words
from rationalign.models.classifier import IntentClassifier
from rationalign.serving.backends import calibrated
from rationalign.serving.batching import QueueFull, RequestTimeout

Detail = Literal["top_k", "heatmap", "counterfactual"]
DETAILS: tuple[str, ...] = ("top_k", "heatmap", "counterfactual")


@dataclass
class WordScore:
    index: int  # position in split_words(text)
    word: str
    score: float  # raw gradient x input of the target's log-probability
    weight: float  # score / max |score| over the utterance, in [-1, 1]


@dataclass
class Outcome:
    """The classifier's answer on a (possibly edited) text."""

    text: str
    label: str
    probability: float  # of ``label``
    target_probability: float  # of the explained target


@dataclass
class Counterfactual:
    removed: list[str]
    without_rationale: Outcome  # the top-k words deleted
    rationale_only: Outcome  # only the top-k words kept
    prediction_changed: bool  # deleting the rationale changed the predicted label
    rationale_sufficient: bool  # the rationale alone keeps the predicted label
    comprehensiveness: float  # p(target | text) - p(target | text without rationale)
    sufficiency: float  # p(target | text) - p(target | rationale only)


@dataclass
class Explanation:
    text: str
    label: str  # predicted
    probability: float
    target: str  # the label explained (the predicted one unless asked otherwise)
    target_probability: float
    method: str
    words: list[WordScore]  # every word, in text order
    top: list[WordScore]  # the k highest-scoring words, best first
    counterfactual: Counterfactual | None = None
    meta: dict = field(default_factory=dict)


def word_scores(attribution: WordAttribution) -> list[WordScore]:
    scores = np.asarray(attribution.scores, dtype=np.float64)
    peak = float(np.abs(scores).max()) if scores.size else 0.0
    weights = scores / peak if peak > 0 else np.zeros_like(scores)
    return [
        WordScore(i, w, float(s), float(x))
        for i, (w, s, x) in enumerate(zip(attribution.words, scores, weights, strict=True))
    ]


def top_words(scores: list[WordScore], k: int) -> list[WordScore]:
    """The ``k`` highest scores, best first; ties keep text order."""
    return sorted(scores, key=lambda s: (-s.score, s.index))[:k]


class Explainer:
    """Gradient x input explanations on a private copy of a classifier, one request at a time."""

    def __init__(
        self,
        classifier: IntentClassifier,
        *,
        copy_model: bool = True,
        max_waiting: int = 8,
        timeout_s: float = 30.0,
    ):
        self.classifier = copy.deepcopy(classifier) if copy_model else classifier
        self.classifier.model.eval()
        self.method = GradientXInput(self.classifier, output="logprob")
        self.max_waiting = max_waiting
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _probs(self, texts: list[str]) -> np.ndarray:
        logits = self.classifier.logits(texts, batch_size=max(1, len(texts))).numpy()
        return calibrated(logits, self.classifier.temperature)

    def _outcome(self, text: str, probs: np.ndarray, target: int) -> Outcome:
        i = int(probs.argmax())
        return Outcome(text, self.classifier.label_space.name(i), float(probs[i]), float(probs[target]))

    def explain(
        self, text: str, *, detail: Detail = "top_k", k: int = 5, target: int | None = None
    ) -> Explanation:
        """Explain ``text``; raises :class:`QueueFull` / :class:`RequestTimeout` under overload."""
        with self._count_lock:
            if self._in_flight >= self.max_waiting:
                raise QueueFull(f"{self._in_flight} explanations in progress; retry later")
            self._in_flight += 1
        try:
            if not self._lock.acquire(timeout=self.timeout_s):
                raise RequestTimeout("explanation waited too long; the server is overloaded")
            try:
                return self._explain(text, detail, k, target)
            finally:
                self._lock.release()
        finally:
            with self._count_lock:
                self._in_flight -= 1

    def _explain(self, text: str, detail: Detail, k: int, target: int | None) -> Explanation:
        start = time.perf_counter()
        names = self.classifier.label_space
        probs = self._probs([text])[0]
        predicted = int(probs.argmax())
        target = predicted if target is None else int(target)
        attribution = self.method.attribute([text], [target])[0]
        scores = word_scores(attribution)
        top = top_words(scores, k)
        explanation = Explanation(
            text=text,
            label=names.name(predicted),
            probability=float(probs[predicted]),
            target=names.name(target),
            target_probability=float(probs[target]),
            method=f"gradient x input ({attribution.method}, {attribution.meta.get('output', 'logprob')})",
            words=scores,
            top=top,
        )
        if detail == "counterfactual":
            explanation.counterfactual = self._counterfactual(scores, top, probs, target)
        explanation.meta["compute_ms"] = (time.perf_counter() - start) * 1000.0
        return explanation

    def _counterfactual(
        self, scores: list[WordScore], top: list[WordScore], probs: np.ndarray, target: int
    ) -> Counterfactual:
        removed = {s.index for s in top}
        # Edited texts are the kept words joined by spaces: the same convention the evaluation
        # (ERASER comprehensiveness/sufficiency) uses, so the numbers are comparable.
        without = join_words([s.word for s in scores if s.index not in removed])
        only = join_words([s.word for s in scores if s.index in removed])
        edited = self._probs([without, only])
        without_outcome = self._outcome(without, edited[0], target)
        only_outcome = self._outcome(only, edited[1], target)
        label = self.classifier.label_space.name(int(probs.argmax()))
        return Counterfactual(
            removed=[s.word for s in sorted(top, key=lambda s: s.index)],
            without_rationale=without_outcome,
            rationale_only=only_outcome,
            prediction_changed=without_outcome.label != label,
            rationale_sufficient=only_outcome.label == label,
            comprehensiveness=float(probs[target] - edited[0][target]),
            sufficiency=float(probs[target] - edited[1][target]),
        )
