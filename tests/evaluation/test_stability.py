"""Attribution stability under perturbations, with a lookup-table attribution computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from rationalign.errors import ConfigError, DataError
from rationalign.evaluation.stability import (
    align_words,
    casing,
    evaluate_stability,
    make_synonym_perturbation,
    punctuation,
    typo,
)

# Case-insensitive word scores; any unknown word (e.g. a typo) scores 0.
TABLE = {"i": 0.1, "lost": 0.5, "my": 0.2, "card": 0.9, "please": 0.3, "bank": 0.4}


class LookupAttribution:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, texts: list[str], targets: list[int]) -> list[tuple[list[str], np.ndarray]]:
        self.calls += 1
        assert len(texts) == len(targets)
        out = []
        for text in texts:
            words = text.split()
            out.append((words, np.array([TABLE.get(w.lower().strip("?.,!"), 0.0) for w in words])))
        return out


def test_typo_swaps_inner_letters_of_long_words_only():
    rng = np.random.default_rng(0)
    # "card" is the only word of >= 4 letters; its only inner pair is (a, r) -> "crad".
    assert typo("my card", rng) == "my crad"
    assert typo("a an the", rng) is None  # no word long enough
    assert typo("book", rng) is None  # inner letters equal: a swap would change nothing
    for seed in range(20):
        out = typo("please block my stolen card", np.random.default_rng(seed))
        original, changed = ["please", "block", "my", "stolen", "card"], out.split()
        diffs = [(a, b) for a, b in zip(original, changed, strict=True) if a != b]
        assert len(diffs) == 1
        a, b = diffs[0]
        assert sorted(a) == sorted(b) and a[0] == b[0] and a[-1] == b[-1]


def test_casing_and_punctuation():
    rng = np.random.default_rng(0)
    assert casing("what is my balance", rng) in {"WHAT IS MY BALANCE", "What Is My Balance"}
    assert casing("A", rng) == "a"  # upper and title leave "A" unchanged
    assert casing("7", rng) is None
    assert punctuation("what is it?", rng) == "what is it"
    assert punctuation("what is it", rng) in {"what is it?", "what is it.", "what is it,"}
    assert punctuation("?", rng) is None


def test_alignment():
    assert align_words(["a", "b"], ["A", "c"]) == ([(0, 0), (1, 1)], "position")
    pairs, how = align_words(["i", "lost", "my", "card"], ["I", "lost", "my", "bank", "card"])
    assert how == "lowercase" and pairs == [(0, 0), (1, 1), (2, 2), (3, 4)]


def test_stability_by_hand():
    attribute = LookupAttribution()
    synonyms = {"card": "bank card"}
    report = evaluate_stability(
        attribute,
        ["i lost my card", "a b"],
        [1, 0],
        synonym=synonyms.get,
        seed=0,
    )
    assert attribute.calls == 2  # originals once, all perturbed texts once
    by_kind = {(r.perturbation, r.index): r for r in report.results}

    # casing: scores are case-insensitive -> identical ranking
    assert by_kind[("casing", 0)].spearman == pytest.approx(1.0)
    assert by_kind[("casing", 0)].top_k_iou == 1.0

    # typo hits "lost" or "card" (the only words of >= 4 letters); the typo'd word then scores 0.
    # original (0.1, 0.5, 0.2, 0.9), ranks 1 3 2 4
    # "i lost my crad": (0.1, 0.5, 0.2, 0), ranks 2 4 3 1, sum d^2 = 12, rho = 1 - 72/60 = -0.2; top-1 3 vs 1
    # "i lsot my card": (0.1, 0, 0.2, 0.9), ranks 2 1 3 4, sum d^2 = 6, rho = 1 - 36/60 = 0.4; top-1 both 3
    typo_result = by_kind[("typo", 0)]
    expected = {"i lost my crad": (-0.2, 0.0), "i lsot my card": (0.4, 1.0)}[typo_result.perturbed_text]
    assert (typo_result.spearman, typo_result.top_k_iou) == pytest.approx(expected)
    assert typo_result.alignment == "position"

    # synonym "card" -> "bank card": 5 words vs 4, aligned by lowercase matching; aligned scores equal
    synonym_result = by_kind[("synonym", 0)]
    assert synonym_result.perturbed_text == "i lost my bank card"
    assert synonym_result.alignment == "lowercase" and synonym_result.n_aligned == 4
    assert synonym_result.spearman == pytest.approx(1.0)

    # "a b": typo and synonym do not apply (skipped); casing and punctuation do, but every score is 0
    # -> Spearman undefined (NaN, counted), top-1 IoU 1 (both pick the first word)
    typo_summary = report.summary("typo")
    assert typo_summary.n_applied == 1 and typo_summary.n_skipped == 1
    casing_summary = report.summary("casing")
    assert casing_summary.n_applied == 2 and casing_summary.spearman.n_nan == 1
    assert casing_summary.spearman.mean == pytest.approx(1.0)
    assert report.summary("synonym").n_skipped == 1


def test_seeded_and_custom_perturbations():
    texts = ["please block my lost card", "i lost my bank card today"]
    first = evaluate_stability(LookupAttribution(), texts, [0, 1], seed=5)
    second = evaluate_stability(LookupAttribution(), texts, [0, 1], seed=5)
    assert [r.perturbed_text for r in first.results] == [r.perturbed_text for r in second.results]

    def prefix(text: str, rng: np.random.Generator) -> str:
        return "please " + text

    def unchanged(text: str, rng: np.random.Generator) -> str:
        return text

    report = evaluate_stability(
        LookupAttribution(), ["i lost my card"], [1], perturbations={"prefix": prefix, "same": unchanged}
    )
    # A perturbation that changes nothing is skipped, not scored as perfectly stable.
    assert report.summary("same").n_applied == 0 and report.summary("same").n_skipped == 1
    result = report.results[0]
    assert result.alignment == "lowercase" and result.n_aligned == 4 and result.spearman == pytest.approx(1.0)
    assert report.to_dict()["summaries"][0]["perturbation"] == "prefix"


def test_bad_inputs_raise():
    attribute = LookupAttribution()
    with pytest.raises(ConfigError, match="synonym callable"):
        evaluate_stability(attribute, ["i lost my card"], [1], perturbations=["synonym"])
    with pytest.raises(ConfigError, match="unknown perturbation"):
        evaluate_stability(attribute, ["i lost my card"], [1], perturbations=["shuffle"])
    with pytest.raises(DataError, match="1 texts but 2 targets"):
        evaluate_stability(attribute, ["i lost my card"], [1, 2])
    with pytest.raises(DataError, match="no texts"):
        evaluate_stability(attribute, [], [])
    with pytest.raises(DataError, match="attribute returned 0 attributions"):
        evaluate_stability(lambda texts, targets: [], ["i lost my card"], [1])
    with pytest.raises(ConfigError):
        evaluate_stability(attribute, ["i lost my card"], [1], k_percent=0)
    assert make_synonym_perturbation(lambda w: None)("i lost", np.random.default_rng(0)) is None
