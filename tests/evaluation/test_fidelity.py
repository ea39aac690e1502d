"""Student-vs-teacher attribution agreement against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rationalign.errors import ConfigError, DataError
from rationalign.evaluation.fidelity import (
    compare_attributions,
    evaluate_fidelity,
    kendall,
    nan_summary,
    spearman,
    top_k_auprc,
    top_k_count,
    top_k_indices,
    top_k_iou,
)

WORDS = ["i", "lost", "my", "card"]
STUDENT = np.array([0.1, 0.4, 0.3, 0.9])  # ranks 1 3 2 4
TEACHER = np.array([0.2, 0.1, 0.5, 0.8])  # ranks 2 1 3 4
# Spearman: d = (-1, 2, -1, 0), sum d^2 = 6, rho = 1 - 6*6 / (4 * 15) = 0.4
# Kendall pairs: (0,1) D, (0,2) C, (0,3) C, (1,2) D, (1,3) C, (2,3) C -> (4 - 2) / 6 = 1/3
# top-2: student {3, 1}, teacher {3, 2} -> IoU 1/3
# AUPRC, positives = teacher top-2 {3, 2}; student order 3(+) 1(-) 2(+) 0(-):
#   AP = (1/1 + 2/3) / 2 = 5/6


def test_rank_correlations_by_hand():
    assert spearman(STUDENT, TEACHER) == pytest.approx(0.4)
    assert kendall(STUDENT, TEACHER) == pytest.approx(1 / 3)


def test_top_k_iou_and_auprc_by_hand():
    assert top_k_iou(STUDENT, TEACHER, 2) == pytest.approx(1 / 3)
    assert top_k_iou(STUDENT, TEACHER, 1) == 1.0
    assert top_k_auprc(STUDENT, TEACHER, 2) == pytest.approx(5 / 6)
    assert math.isnan(top_k_auprc(STUDENT, TEACHER, 4))  # no negatives: uninformative


def test_top_k_selection_conventions():
    assert top_k_indices(np.array([0.5, 0.9, 0.5, 0.1]), 3).tolist() == [1, 0, 2]  # ties: earlier first
    # Long enough that an unstable sort would reorder the ties.
    assert top_k_indices(np.array([1.0, 0.0] * 40), 40).tolist() == list(range(0, 80, 2))
    # ceil(percent / 100 * d), at least 1, at most d; exact multiples do not round up.
    assert [top_k_count(4, p) for p in (1, 5, 10, 20, 50, 100)] == [1, 1, 1, 1, 2, 4]
    assert top_k_count(30, 10) == 3
    assert top_k_count(7, 20) == 2
    with pytest.raises(ConfigError):
        top_k_count(4, 0)


def test_compare_attributions_default_k_is_20_percent():
    result = compare_attributions((WORDS, STUDENT), (WORDS, TEACHER))
    # d = 4 -> k = ceil(0.8) = 1: both put "card" first
    assert result.k == 1 and result.top_k_iou == 1.0 and result.auprc == 1.0
    assert compare_attributions((WORDS, STUDENT), (WORDS, TEACHER), k=2).auprc == pytest.approx(5 / 6)


def test_constant_vectors_give_nan_and_are_counted():
    constant = (["a", "b", "c"], np.array([1.0, 1.0, 1.0]))
    teacher = (["a", "b", "c"], np.array([0.1, 0.5, 0.2]))
    report = evaluate_fidelity([(WORDS, STUDENT), constant], [(WORDS, TEACHER), teacher], k=1)
    second = report.examples[1]
    assert math.isnan(second.spearman) and math.isnan(second.kendall)
    # Top-1 of a constant vector is the first word (tie rule); teacher's is "b" -> IoU 0.
    assert second.top_k_iou == 0.0
    # All student scores tied: one threshold, precision 1/3 at recall 1 -> AP 1/3.
    assert second.auprc == pytest.approx(1 / 3)
    summary = report.summary
    assert summary.spearman.mean == pytest.approx(0.4) and summary.spearman.n_nan == 1
    assert summary.top_k_iou.mean == pytest.approx(0.5) and summary.top_k_iou.n_nan == 0
    assert report.to_dict()["summary"]["kendall"]["n_valid"] == 1


def test_nan_summary():
    summary = nan_summary([0.2, math.nan, 0.4])
    assert summary.mean == pytest.approx(0.3) and summary.n_valid == 2 and summary.n_nan == 1
    assert math.isnan(nan_summary([]).mean)


def test_accepts_word_attribution_like_objects():
    class Attribution:
        def __init__(self, words, scores):
            self.words, self.scores = words, scores

    result = compare_attributions(Attribution(WORDS, STUDENT), Attribution(WORDS, TEACHER))
    assert result.spearman == pytest.approx(0.4)


def test_bad_inputs_raise():
    with pytest.raises(DataError, match="differ from teacher words"):
        compare_attributions((WORDS, STUDENT), (["i", "lost", "a", "card"], TEACHER))
    with pytest.raises(DataError, match="4 words but scores"):
        compare_attributions((WORDS, STUDENT[:3]), (WORDS, TEACHER))
    with pytest.raises(DataError, match="2 student attributions but 1"):
        evaluate_fidelity([(WORDS, STUDENT)] * 2, [(WORDS, TEACHER)])
    with pytest.raises(DataError, match="not a text"):
        compare_attributions(("i lost", [0.1, 0.2]), (WORDS, TEACHER))
    with pytest.raises(DataError):
        spearman([1.0, 2.0], [1.0])
    with pytest.raises(ConfigError):
        compare_attributions((WORDS, STUDENT), (WORDS, TEACHER), k=0)
