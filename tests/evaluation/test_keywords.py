"""Label keywords from PMI and from priors, sharedness, and the most confusable class."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rationalign.attribution.base import WordAttribution
from rationalign.data.types import IntentDataset, LabelSpace
from rationalign.errors import ConfigError, DataError
from rationalign.evaluation.keywords import (
    STOPWORDS,
    confusable_from_confusion,
    confusable_from_keywords,
    confusable_from_probs,
    content_words,
    label_carrying_positions,
    most_confusable,
    pmi_keywords,
    pmi_stats,
    prior_keywords,
)

# refund_status: "refund" in every utterance, "card" in half; card_block: "block"/"card"; alarm: "alarm".
CORPUS = [
    *[("where is my refund", "refund_status")] * 2,
    ("my refund for the card is late", "refund_status"),
    ("card refund still pending", "refund_status"),
    ("please block my card", "card_block"),
    ("block the card now", "card_block"),
    ("my card was stolen, block it", "card_block"),
    ("freeze my card", "card_block"),
    ("set an alarm", "alarm_set"),
    ("alarm at six", "alarm_set"),
    ("wake me with an alarm", "alarm_set"),
    ("unique word zebra alarm", "alarm_set"),
]


@pytest.fixture()
def corpus() -> IntentDataset:
    return IntentDataset.from_pairs(CORPUS, name="toy")


def test_content_words_drop_stopwords_punctuation_and_numbers():
    assert content_words("Where is MY card? 42 times, please!") == ["card", "times"]


def test_pmi_matches_the_formula(corpus):
    stats = pmi_stats(corpus, alpha=1.0)
    # "refund": 4 utterances, all refund_status; 3 labels; p(refund_status) = 4/12.
    expected = math.log((4 + 1) / (4 + 3)) - math.log(4 / 12)
    assert stats.score("refund", "refund_status") == pytest.approx(expected)
    # "card": 4 of its 6 utterances in card_block, 2 in refund_status: smoothed p(refund_status | card)
    # = 3/9 equals the prior 4/12 (PMI 0), so it is a keyword of card_block only.
    assert stats.count("card", "card_block") == 4
    assert stats.score("card", "card_block") == pytest.approx(math.log(5 / 9) - math.log(4 / 12))
    assert stats.score("card", "refund_status") == pytest.approx(0.0)  # no association: not a keyword
    assert stats.score("card", "alarm_set") < 0
    assert stats.score("never-seen", "alarm_set") == 0.0


def test_top_keywords_have_the_known_answer(corpus):
    table = pmi_keywords(corpus, top_k=3, min_count=2)
    assert table.top("refund_status", 1) == ["refund"]
    assert table.top("alarm_set", 1) == ["alarm"]
    assert table.top("card_block")[:2] == ["block", "card"]  # block: 3/3 exclusive; card: 4/6
    assert "zebra" not in table.top("alarm_set")  # seen once: below min_count
    assert not any(w in STOPWORDS for y in table.by_label for w in table.top(y))
    assert table.labels_of("card") == ["card_block"]
    assert (
        pmi_keywords(corpus, top_k=3, min_count=1).rank("zebra", "alarm_set") is None
    )  # PMI of 1 count is low


def test_sharedness(corpus):
    stats = pmi_stats(corpus)
    assert stats.sharedness("refund", "refund_status", "card_block") < 0.25
    assert stats.sharedness("card", "refund_status", "card_block") > 0.5
    assert stats.sharedness("card", "card_block", "refund_status") == pytest.approx(
        stats.sharedness("card", "refund_status", "card_block")
    )


def test_prior_keywords_average_the_attributions():
    priors = [
        WordAttribution(["block", "my", "card"], np.array([0.9, 0.0, 0.3]), "cap", 0),
        WordAttribution(["block", "the", "card"], np.array([0.7, 0.1, 0.5]), "cap", 0),
        WordAttribution(["set", "alarm"], np.array([0.2, 0.8]), "cap", 1),
        WordAttribution(["alarm", "please"], np.array([0.6, 0.4]), "cap", 1),
    ]
    table = prior_keywords(priors, ["card_block", "card_block", "alarm_set", "alarm_set"], min_count=2)
    assert table.source == "prior"
    assert table.top("card_block") == ["block", "card"]
    assert table.by_label["card_block"][0].score == pytest.approx(0.8)
    assert table.top("alarm_set") == ["alarm"]  # "set" occurs once; "please" is a stopword
    with pytest.raises(DataError, match="one label per prior"):
        prior_keywords(priors, ["card_block"])


def test_label_carrying_positions_from_keywords_and_from_a_prior(corpus):
    table = pmi_keywords(corpus, top_k=5)
    words = ["please", "block", "my", "card"]
    assert label_carrying_positions(words, "card_block", keywords=table) == [1, 3]
    prior = WordAttribution(words, np.array([0.9, 0.1, 0.5, 0.4]), "cap", 0)
    # "please" is a stopword, "my" too: the content words by prior score.
    assert label_carrying_positions(words, "card_block", prior=prior) == [3, 1]
    with pytest.raises(DataError, match="differ"):
        label_carrying_positions(["other"], "card_block", prior=prior)
    with pytest.raises(ConfigError):
        label_carrying_positions(words, "card_block")


def test_most_confusable_without_a_model(tiny_data_dir):
    from rationalign.data import load_dataset

    stats = pmi_stats(load_dataset(tiny_data_dir / "train.jsonl"))
    confusable = confusable_from_keywords(stats)
    assert confusable["card_block"] == "card_activate"
    assert confusable["card_activate"] == "card_block"
    assert confusable["alarm_set"] == "alarm_query"
    assert confusable["alarm_query"] == "alarm_set"


def test_most_confusable_from_model_outputs():
    space = LabelSpace(["a", "b", "c"])
    probs = np.array([[0.7, 0.1, 0.2], [0.6, 0.1, 0.3], [0.1, 0.8, 0.1], [0.2, 0.1, 0.7]])
    gold = [0, 0, 1, 2]
    assert confusable_from_probs(probs, gold, space) == {"a": "c", "b": "a", "c": "a"}
    assert most_confusable(probs=probs, gold=gold, label_space=space) == {"a": "c", "b": "a", "c": "a"}
    confusion = np.array([[5, 0, 3], [1, 6, 0], [0, 4, 2]])
    assert confusable_from_confusion(confusion, space) == {"a": "c", "b": "c", "c": "b"}
    with pytest.raises(DataError, match="do not match"):
        confusable_from_probs(probs[:, :2], gold, space)
    with pytest.raises(ConfigError):
        most_confusable()


def test_bad_inputs():
    with pytest.raises(DataError, match="no examples"):
        pmi_stats(IntentDataset([], name="empty"))
    with pytest.raises(ConfigError):
        pmi_keywords(IntentDataset.from_pairs(CORPUS), top_k=0)
    with pytest.raises(ConfigError):
        pmi_stats(IntentDataset.from_pairs(CORPUS), alpha=0)
