"""Counterfactual rationale checks: is the rationale necessary and sufficient for the prediction?

Per utterance, with the model's own prediction ``c = argmax p(x)`` (ties -> lowest id) and the rationale =
the top-k words of the attribution (``k`` given, or ``ceil(k_percent / 100 * d)``, at least 1; ties ->
earlier word first):

- *removal check* passes when deleting the rationale changes the prediction: ``argmax p(x \\ r) != c``;
- *rationale-only check* passes when keeping only the rationale keeps it: ``argmax p(r) == c``.

Words are deleted and the rest joined with single spaces, exactly as in ``faithfulness``; the unperturbed
text is ``" ".join(words)`` too. All texts go to the model in chunks of ``batch_size``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rationalign.errors import ConfigError, DataError
from rationalign.evaluation.faithfulness import (
    DEFAULT_BATCH_SIZE,
    PredictProba,
    TextPool,
    join_words,
    only_words,
    without_words,
)
from rationalign.evaluation.fidelity import (
    DEFAULT_TOP_K_PERCENT,
    WordScores,
    as_word_scores,
    top_k_count,
    top_k_indices,
)


@dataclass(frozen=True)
class CounterfactualResult:
    n_words: int
    k: int
    rationale: list[str]
    predicted: int
    predicted_without_rationale: int
    predicted_rationale_only: int
    probability: float
    probability_without_rationale: float
    probability_rationale_only: float

    @property
    def removal_changes_prediction(self) -> bool:
        return self.predicted_without_rationale != self.predicted

    @property
    def rationale_only_keeps_prediction(self) -> bool:
        return self.predicted_rationale_only == self.predicted

    @property
    def passed_both(self) -> bool:
        return self.removal_changes_prediction and self.rationale_only_keeps_prediction

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "removal_changes_prediction": self.removal_changes_prediction,
            "rationale_only_keeps_prediction": self.rationale_only_keeps_prediction,
            "passed_both": self.passed_both,
        }


@dataclass(frozen=True)
class CounterfactualReport:
    examples: list[CounterfactualResult] = field(repr=False)
    removal_pass_rate: float
    rationale_only_pass_rate: float
    both_pass_rate: float

    @property
    def n_examples(self) -> int:
        return len(self.examples)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_examples": self.n_examples,
            "removal_pass_rate": self.removal_pass_rate,
            "rationale_only_pass_rate": self.rationale_only_pass_rate,
            "both_pass_rate": self.both_pass_rate,
            "examples": [e.to_dict() for e in self.examples],
        }


def evaluate_counterfactual(
    predict_proba: PredictProba,
    attributions: Sequence[WordScores],
    k: int | None = None,
    k_percent: float = DEFAULT_TOP_K_PERCENT,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> CounterfactualReport:
    """Per-utterance removal / rationale-only checks and their pass rates.

    ``probability_*`` fields are the probability of the original prediction ``c`` on each text.
    """
    if not attributions:
        raise DataError("no attributions to evaluate; fix: pass at least one utterance")
    if k is not None and k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    items = [as_word_scores(a, f"example {i}") for i, a in enumerate(attributions)]
    pool = TextPool()
    plans = []
    for words, scores in items:
        chosen_k = min(k, len(words)) if k is not None else top_k_count(len(words), k_percent)
        rationale = top_k_indices(scores, chosen_k)
        plans.append(
            (
                chosen_k,
                sorted(rationale.tolist()),
                pool.add(join_words(words)),
                pool.add(without_words(words, rationale)),
                pool.add(only_words(words, rationale)),
            )
        )
    probs = pool.run(predict_proba, batch_size)
    labels = probs.argmax(axis=1)
    results = []
    for (words, _), (chosen_k, rationale, full, removed, kept) in zip(items, plans, strict=True):
        predicted = int(labels[full])
        results.append(
            CounterfactualResult(
                n_words=len(words),
                k=chosen_k,
                rationale=[words[i] for i in rationale],
                predicted=predicted,
                predicted_without_rationale=int(labels[removed]),
                predicted_rationale_only=int(labels[kept]),
                probability=float(probs[full, predicted]),
                probability_without_rationale=float(probs[removed, predicted]),
                probability_rationale_only=float(probs[kept, predicted]),
            )
        )
    return CounterfactualReport(
        examples=results,
        removal_pass_rate=float(np.mean([r.removal_changes_prediction for r in results])),
        rationale_only_pass_rate=float(np.mean([r.rationale_only_keeps_prediction for r in results])),
        both_pass_rate=float(np.mean([r.passed_both for r in results])),
    )
