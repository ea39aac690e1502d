"""CAP: the class-aware margin target ranks the discriminative word above the keyword two classes share."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from rationalign.attribution.cap import CAPPrior, class_aware_target
from rationalign.attribution.lime import LimePrior
from rationalign.attribution.words import split_words
from rationalign.data.types import LabelSpace
from rationalign.teachers.base import Teacher

# Two confusable intents share "alarm" with equal weight; "set" / "check" tell them apart. Eight more
# intents with their own keywords make the label space realistic: without "alarm", mass spreads over them.
OTHER_INTENTS = ["weather", "music", "timer", "transfer", "balance", "recipe", "traffic", "joke"]
LABELS = ["alarm_set", "alarm_query", *OTHER_INTENTS]
WORD_WEIGHTS: dict[str, dict[str, float]] = {
    "alarm": {"alarm_set": 4.0, "alarm_query": 4.0},
    "set": {"alarm_set": 1.5},
    "check": {"alarm_query": 1.5},
    **{name: {name: 3.0} for name in OTHER_INTENTS},
}


class BagOfWordsTeacher:
    """A ``Teacher``: softmax over the label space of summed per-word, per-class weights."""

    def __init__(self, labels=LABELS, weights=WORD_WEIGHTS):
        self.label_space = LabelSpace(labels)
        self.weights = weights
        self.texts_scored = 0
        self.calls = 0
        self.largest_call = 0

    def predict_proba(self, texts):
        self.calls += 1
        self.largest_call = max(self.largest_call, len(texts))
        self.texts_scored += len(texts)
        logits = np.zeros((len(texts), len(self.label_space)))
        for i, text in enumerate(texts):
            for word in split_words(text):
                for label, w in self.weights.get(word, {}).items():
                    logits[i, self.label_space.id(label)] += w
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    @property
    def fingerprint(self) -> str:
        return "bow:" + hashlib.sha256(repr(sorted(self.weights.items())).encode()).hexdigest()[:16]


SET_TEXT = "please set an alarm for seven tomorrow"
QUERY_TEXT = "can you check my alarm for tomorrow morning"


def _score(attribution, word):
    return float(attribution.scores[attribution.words.index(word)])


def test_the_bag_of_words_teacher_is_a_teacher():
    assert isinstance(BagOfWordsTeacher(), Teacher)


@pytest.mark.parametrize("n_masks", [64, 256])
def test_margin_ranks_the_discriminative_word_above_the_shared_keyword_and_lime_does_not(n_masks):
    teacher = BagOfWordsTeacher()
    gold = [teacher.label_space.id("alarm_set"), teacher.label_space.id("alarm_query")]
    cap = CAPPrior(teacher, n_masks=n_masks, seed=0).attribute([SET_TEXT, QUERY_TEXT], gold)
    lime = LimePrior(teacher, n_samples=n_masks, seed=0).attribute([SET_TEXT, QUERY_TEXT], gold)
    for cap_attr, lime_attr, cue in zip(cap, lime, ["set", "check"], strict=True):
        # CAP: the discriminative word is the top word, the shared keyword scores ~0 (deleting it hurts
        # both alarm intents alike, so the margin against the closest one does not move).
        assert cap_attr.top(1)[0][0] == cue
        assert _score(cap_attr, cue) > _score(cap_attr, "alarm") + 0.5
        assert abs(_score(cap_attr, "alarm")) < 0.25 * _score(cap_attr, cue)
        # LIME on the gold probability: the shared keyword is the top word, above the discriminative one.
        assert lime_attr.top(1)[0][0] == "alarm"
        assert _score(lime_attr, "alarm") > _score(lime_attr, cue)


def test_log_probability_target_also_prefers_the_shared_keyword():
    # Only the margin is class-aware: log p(y) falls most when "alarm" goes, like LIME.
    teacher = BagOfWordsTeacher()
    (attr,) = CAPPrior(teacher, n_masks=128, target="logprob").attribute([SET_TEXT], [0])
    assert attr.top(1)[0][0] == "alarm"


def test_prob_target_is_exactly_lime_on_the_teacher():
    teacher = BagOfWordsTeacher()
    texts, gold = [SET_TEXT, QUERY_TEXT, "weather"], [0, 1, 2]
    cap = CAPPrior(teacher, n_masks=100, target="prob", seed=5).attribute(texts, gold)
    lime = LimePrior(teacher, n_samples=100, seed=5).attribute(texts, gold)
    for a, b in zip(cap, lime, strict=True):
        np.testing.assert_array_equal(a.scores, b.scores)
        assert a.method == "cap" and b.method == "lime"


def test_soft_labels_come_free_and_cost_is_counted():
    teacher = BagOfWordsTeacher()
    prior = CAPPrior(teacher, n_masks=64, seed=0)
    texts = [SET_TEXT, QUERY_TEXT, "joke"]
    attributions, soft = prior.attribute_with_soft_labels(texts, [0, 1, LABELS.index("joke")])
    assert teacher.calls == 1  # every mask of every utterance, soft labels included, in one call
    np.testing.assert_allclose(soft, BagOfWordsTeacher().predict_proba(texts))
    assert soft.shape == (3, len(LABELS))
    cost = prior.cost
    assert cost.utterances == 3 and cost.calls == 1
    assert cost.texts_scored == teacher.texts_scored
    # 7-word and 8-word utterances sample <= 64 distinct masks; "joke" has 2 (itself and the empty text).
    assert cost.texts_scored <= 64 + 64 + 2
    assert cost.seconds > 0 and cost.seconds_per_utterance == cost.seconds / 3
    assert [a.meta["n_masks"] for a in attributions][-1] == 2
    prior.attribute([SET_TEXT], [0])
    assert prior.cost.utterances == 4 and prior.cost.calls == 2


def test_small_batches_bound_each_teacher_call():
    teacher = BagOfWordsTeacher()
    CAPPrior(teacher, n_masks=64, batch_size=50).attribute([SET_TEXT, QUERY_TEXT], [0, 1])
    assert teacher.largest_call == 50
    assert teacher.calls == -(-teacher.texts_scored // 50) >= 2


def test_class_aware_target_by_hand():
    probs = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(
        class_aware_target(probs, 0), [np.log(0.5 / 0.3), np.log(0.2 / 0.6), np.log(1e-12)]
    )
    np.testing.assert_allclose(class_aware_target(probs, 0, "logprob"), np.log([0.5, 0.2, 1e-12]))
    np.testing.assert_allclose(class_aware_target(probs, 2, "prob"), [0.2, 0.6, 0.0])
    with pytest.raises(ValueError):
        class_aware_target(probs, 0, "nonsense")


def test_seeded_and_fingerprinted():
    teacher = BagOfWordsTeacher()
    a = CAPPrior(teacher, n_masks=48, seed=1).attribute([QUERY_TEXT + " please now"], [1])[0]
    b = CAPPrior(teacher, n_masks=48, seed=1).attribute([QUERY_TEXT + " please now"], [1])[0]
    c = CAPPrior(teacher, n_masks=48, seed=2).attribute([QUERY_TEXT + " please now"], [1])[0]
    np.testing.assert_array_equal(a.scores, b.scores)
    assert not np.array_equal(a.scores, c.scores)
    prior = CAPPrior(teacher)
    assert prior.fingerprint == teacher.fingerprint
    assert prior.params()["target"] == "margin" and prior.params()["n_masks"] == 64
    with pytest.raises(ValueError, match="target"):
        CAPPrior(teacher, target="odds")


class TokenCountingTeacher(BagOfWordsTeacher):
    """Reports tokens like ``LLMTeacher.cost.tokens`` (here: one token per word plus a 10-token prefix)."""

    def __init__(self):
        super().__init__()
        self.cost = type("Cost", (), {"tokens": 0})()

    def predict_proba(self, texts):
        self.cost.tokens += sum(10 + len(split_words(t)) for t in texts)
        return super().predict_proba(texts)


def test_teacher_tokens_are_counted_when_the_teacher_reports_them():
    teacher = TokenCountingTeacher()
    teacher.cost.tokens = 1000  # spent before CAP started: not CAP's
    prior = CAPPrior(teacher, n_masks=32)
    prior.attribute([SET_TEXT, QUERY_TEXT], [0, 1])
    assert prior.cost.tokens == teacher.cost.tokens - 1000 > 10 * prior.cost.texts_scored
    assert prior.cost.tokens_per_utterance == prior.cost.tokens / 2
    assert CAPPrior(BagOfWordsTeacher()).cost.tokens == 0
