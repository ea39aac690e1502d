"""Counterfactual rationale checks on a tiny additive model, decided by hand.

p(class 1 | text) = 0.05 + 0.5 [card] + 0.25 [lost] + 0.1 [my]; argmax is class 1 when that is > 0.5.
"""

from __future__ import annotations

import numpy as np
import pytest

from rationalign.errors import ConfigError, DataError
from rationalign.evaluation.counterfactual import evaluate_counterfactual

WEIGHTS = {"card": 0.5, "lost": 0.25, "my": 0.1}
CALLS: list[int] = []


def additive_model(texts: list[str]) -> np.ndarray:
    CALLS.append(len(texts))
    p1 = np.array([0.05 + sum(WEIGHTS.get(w, 0.0) for w in set(t.split())) for t in texts])
    return np.stack([1 - p1, p1], axis=1)


WORDS = ["i", "lost", "my", "card"]
# d = 4 -> k = ceil(0.2 * 4) = 1
# Good rationale "card": full p1 0.9 -> class 1; without card "i lost my" 0.4 -> class 0 (removal passes);
#   only "card" 0.55 -> class 1 (rationale-only passes).
GOOD = (WORDS, np.array([0.1, 0.2, 0.5, 0.9]))
# Bad rationale "i": without it "lost my card" 0.9 -> class 1 (fails); only "i" 0.05 -> class 0 (fails).
BAD = (WORDS, np.array([0.9, 0.1, 0.2, 0.3]))


def test_checks_by_hand():
    report = evaluate_counterfactual(additive_model, [GOOD, BAD])
    good, bad = report.examples
    assert (good.k, good.rationale, good.predicted) == (1, ["card"], 1)
    assert good.removal_changes_prediction and good.rationale_only_keeps_prediction and good.passed_both
    assert good.probability == pytest.approx(0.9)
    assert good.probability_without_rationale == pytest.approx(0.4)
    assert good.probability_rationale_only == pytest.approx(0.55)
    assert bad.rationale == ["i"]
    assert not bad.removal_changes_prediction and not bad.rationale_only_keeps_prediction
    assert (report.removal_pass_rate, report.rationale_only_pass_rate, report.both_pass_rate) == (
        0.5,
        0.5,
        0.5,
    )
    data = report.to_dict()
    assert data["n_examples"] == 2 and data["examples"][0]["passed_both"] is True


def test_explicit_k_and_partial_pass():
    words = ["lost", "my", "card"]
    scores = np.array([0.9, 0.1, 0.5])
    # k = 1 (ceil(0.6)): rationale "lost"; without it "my card" 0.65 -> class 1 (fails);
    #   only "lost" 0.3 -> class 0 (fails).
    one = evaluate_counterfactual(additive_model, [(words, scores)]).examples[0]
    assert one.rationale == ["lost"] and not one.removal_changes_prediction
    assert not one.rationale_only_keeps_prediction
    # k = 2: rationale "lost card" (original order); without it "my" 0.15 -> class 0 (passes);
    #   only "lost card" 0.8 -> class 1 (passes).
    two = evaluate_counterfactual(additive_model, [(words, scores)], k=2).examples[0]
    assert two.rationale == ["lost", "card"] and two.passed_both
    # k = 60%: ceil(1.8) = 2, the same rationale
    assert evaluate_counterfactual(additive_model, [(words, scores)], k_percent=60).examples[0].k == 2


def test_one_batched_call_for_many_utterances():
    CALLS.clear()
    evaluate_counterfactual(additive_model, [GOOD, BAD] * 50)
    assert len(CALLS) == 1  # 100 utterances, deduplicated texts, one call


def test_bad_inputs_raise():
    with pytest.raises(DataError, match="no attributions"):
        evaluate_counterfactual(additive_model, [])
    with pytest.raises(DataError, match="4 words but scores"):
        evaluate_counterfactual(additive_model, [(WORDS, [1.0])])
    with pytest.raises(ConfigError):
        evaluate_counterfactual(additive_model, [GOOD], k=0)
    with pytest.raises(ConfigError):
        evaluate_counterfactual(additive_model, [GOOD], k_percent=150)
    with pytest.raises(DataError, match="sums to"):
        evaluate_counterfactual(lambda texts: np.full((len(texts), 2), 0.9), [GOOD])
