"""LIME priors: ours against the ``lime`` package and captum on a bag-of-words model with known weights."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from rationalign.attribution.lime import LimePrior, captum_lime_attribute, lime_package_attribute
from rationalign.attribution.words import split_words

TEXT = "please set an alarm for seven in the morning on my phone now"
# Distinct weights, small enough that the class probability stays in sigmoid's near-linear range.
WEIGHTS = dict(zip(split_words(TEXT), np.linspace(-0.6, 0.9, len(split_words(TEXT))), strict=True))


class BagOfWords:
    """``predict_proba``: softmax of summed per-word weights (class 0) against a constant 0 (class 1)."""

    def __init__(self, weights: dict[str, float]):
        self.weights = weights
        self.calls: list[int] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        s = np.array([sum(self.weights.get(w, 0.0) for w in split_words(t)) for t in texts])
        logits = np.stack([s, np.zeros_like(s)], axis=1)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def _true_weights(text: str) -> list[float]:
    return [WEIGHTS[w] for w in split_words(text)]


@pytest.mark.parametrize("design", ["balanced", "iid"])
def test_ours_recovers_the_weight_ranking(design):
    # 13 words: 2^13 > 1000, so this is the sampled (not enumerated) regime.
    prior = LimePrior(BagOfWords(WEIGHTS), n_samples=1000, seed=0, design=design)
    (attribution,) = prior.attribute([TEXT], [0])
    assert attribution.words == split_words(TEXT)
    assert attribution.method == "lime" and attribution.target == 0
    assert not attribution.meta["enumerated"]
    assert spearmanr(attribution.scores, _true_weights(TEXT)).statistic >= 0.9
    # For class 1 the signs flip.
    (other,) = prior.attribute([TEXT], [1])
    assert spearmanr(other.scores, _true_weights(TEXT)).statistic <= -0.9


def test_lime_package_and_captum_recover_it_too_and_agree_with_ours():
    model = BagOfWords(WEIGHTS)
    ours = LimePrior(model, n_samples=1000, seed=0).attribute([TEXT], [0])[0]
    package = lime_package_attribute(model, TEXT, 0, n_samples=1000, seed=0)
    captum = captum_lime_attribute(model, TEXT, 0, n_samples=600, seed=0)
    true = _true_weights(TEXT)
    for result in (package, captum):
        assert result.words == ours.words
        assert spearmanr(result.scores, true).statistic >= 0.9
    # Same estimator (same kernel, sample law and ridge): the coefficients themselves agree.
    assert np.corrcoef(ours.scores, package.scores)[0, 1] >= 0.97
    assert np.corrcoef(ours.scores, captum.scores)[0, 1] >= 0.95
    np.testing.assert_allclose(ours.scores, package.scores, atol=0.03)


def test_all_masked_texts_of_a_batch_go_out_in_one_call():
    model = BagOfWords(WEIGHTS)
    texts = [TEXT, "set an alarm", "my phone now please", "alarm", ""]
    prior = LimePrior(model, n_samples=300, seed=1)
    results = prior.attribute(texts, [0] * len(texts))
    assert len(model.calls) == 1
    assert [r.words for r in results] == [split_words(t) for t in texts]
    assert results[-1].scores.shape == (0,)
    # Distinct masked texts only: a 3-word utterance has 7 (enumerated), a 1-word one 2.
    assert results[1].meta["n_masks"] == 7 and results[3].meta["n_masks"] == 2
    assert prior.cost.texts_scored == model.calls[0] <= sum(r.meta["n_masks"] for r in results)
    assert prior.cost.utterances == len(texts) and prior.cost.calls == 1
    # A one-word utterance: the word's score is the whole effect of deleting it (shrunk by the ridge).
    single = LimePrior(model, n_samples=64, ridge=0.0).attribute(["alarm"], [0])[0]
    p = model(["alarm", ""])[:, 0]
    assert single.scores[0] == pytest.approx(p[0] - p[1])


def test_large_batches_are_split_into_bounded_calls():
    model = BagOfWords(WEIGHTS)
    prior = LimePrior(model, n_samples=500, max_texts_per_call=128)
    prior.attribute([TEXT, TEXT + " again"], [0, 0])
    assert max(model.calls) <= 128 and len(model.calls) > 2


def test_results_do_not_depend_on_batch_composition_and_are_seeded():
    texts = [TEXT, "set an alarm for my phone in the morning please now", "seven in the morning"]
    together = LimePrior(BagOfWords(WEIGHTS), n_samples=200, seed=3).attribute(texts, [0, 1, 0])
    apart = [
        LimePrior(BagOfWords(WEIGHTS), n_samples=200, seed=3).attribute([t], [y])[0]
        for t, y in zip(texts, [0, 1, 0], strict=True)
    ]
    for a, b in zip(together, apart, strict=True):
        # Same masks and model outputs; only the padded solve's summation order differs (ULPs).
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-12, atol=1e-15)
    again = LimePrior(BagOfWords(WEIGHTS), n_samples=200, seed=3).attribute(texts, [0, 1, 0])
    other_seed = LimePrior(BagOfWords(WEIGHTS), n_samples=200, seed=4).attribute(texts, [0, 1, 0])
    np.testing.assert_array_equal(together[0].scores, again[0].scores)
    assert not np.array_equal(together[0].scores, other_seed[0].scores)


def test_with_a_real_tiny_classifier(tiny_classifier):
    texts = ["block my card please", "set an alarm for seven tomorrow morning"]
    targets = [0, 2]
    prior = LimePrior(tiny_classifier, n_samples=128, seed=0, batch_size=32)
    results, probs = prior.attribute_with_probs(texts, targets)
    np.testing.assert_allclose(probs, tiny_classifier.predict_proba(texts), atol=1e-5)
    for r, t in zip(results, texts, strict=True):
        assert r.words == split_words(t) and np.isfinite(r.scores).all()
    assert (
        prior.fingerprint.startswith("clf:") and prior.fingerprint == LimePrior(tiny_classifier).fingerprint
    )
    one_by_one = [
        LimePrior(tiny_classifier, n_samples=128, seed=0).attribute([t], [y])[0]
        for t, y in zip(texts, targets, strict=True)
    ]
    for a, b in zip(results, one_by_one, strict=True):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="targets"):
        LimePrior(BagOfWords(WEIGHTS)).attribute([TEXT], [0, 1])
    with pytest.raises(ValueError, match="outside"):
        LimePrior(BagOfWords(WEIGHTS)).attribute([TEXT], [5])
    with pytest.raises(ValueError, match="sigma"):
        LimePrior(BagOfWords(WEIGHTS), sigma=0)
    with pytest.raises(TypeError):
        LimePrior(object())
