"""Calibration metrics and temperature scaling against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rationalign.errors import ConfigError, DataError
from rationalign.evaluation.calibration import (
    apply_temperature,
    brier_score,
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    fit_temperature_report,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_diagram,
    temperature_nll,
)

# Five binary predictions; confidence = max prob. 15 bins of width 1/15 (edges ... 0.6, 0.667, 0.733,
# 0.8, 0.867, 0.933 ...), none of these confidences sits on an edge.
PROBS = np.array([[0.90, 0.10], [0.82, 0.18], [0.30, 0.70], [0.38, 0.62], [0.12, 0.88]])
LABELS = np.array([0, 1, 1, 1, 0])
# conf  correct  bin (lower, upper]
# 0.90  yes      13 (0.867, 0.933]
# 0.82  no       12 (0.8, 0.867]
# 0.70  yes      10 (0.667, 0.733]
# 0.62  yes       9 (0.6, 0.667]
# 0.88  no       13
# bin 13: mean conf 0.89, accuracy 0.5 -> gap 0.39, weight 2/5
# ECE = (2 * 0.39 + 0.82 + 0.30 + 0.38) / 5 = 2.28 / 5 = 0.456
# (per-example gaps would give 2.48 / 5 = 0.496: the bin averaging matters)
# MCE = max(0.39, 0.82, 0.30, 0.38) = 0.82


def test_ece_and_mce_by_hand():
    assert expected_calibration_error(PROBS, LABELS) == pytest.approx(0.456)
    assert maximum_calibration_error(PROBS, LABELS) == pytest.approx(0.82)


def test_reliability_bins_by_hand():
    diagram = reliability_diagram(PROBS, LABELS)
    assert len(diagram.bins) == 15
    filled = {i: b for i, b in enumerate(diagram.bins) if b.count}
    assert {i: b.count for i, b in filled.items()} == {9: 1, 10: 1, 12: 1, 13: 2}
    assert filled[13].mean_confidence == pytest.approx(0.89)
    assert filled[13].accuracy == pytest.approx(0.5)
    assert filled[12].accuracy == 0.0
    assert filled[13].lower == pytest.approx(13 / 15) and filled[13].upper == pytest.approx(14 / 15)
    assert math.isnan(diagram.bins[0].accuracy)


def test_bins_are_closed_on_the_right():
    # With 2 bins, confidence exactly 0.5 belongs to (0, 0.5] and 1.0 to (0.5, 1].
    diagram = reliability_diagram([[0.5, 0.5], [1.0, 0.0]], [1, 0], n_bins=2)
    assert [b.count for b in diagram.bins] == [1, 1]
    # bin 0: conf 0.5, argmax 0 != 1 -> acc 0; bin 1: conf 1, correct. ECE = (0.5 + 0) / 2
    assert diagram.ece == pytest.approx(0.25)


def test_brier_by_hand():
    # sum over classes of squared error per example (binary: 2 * (1 - p_y)^2):
    # 2*0.1^2 + 2*0.82^2 + 2*0.3^2 + 2*0.38^2 + 2*0.88^2
    # = 0.02 + 1.3448 + 0.18 + 0.2888 + 1.5488 = 3.3824 -> / 5 = 0.67648
    assert brier_score(PROBS, LABELS) == pytest.approx(0.67648)
    # Three classes: p = (0.5, 0.3, 0.2), y = 2 -> 0.25 + 0.09 + 0.64 = 0.98
    assert brier_score([[0.5, 0.3, 0.2]], [2]) == pytest.approx(0.98)


def test_nll_by_hand():
    expected = -(math.log(0.9) + math.log(0.18) + math.log(0.7) + math.log(0.62) + math.log(0.12)) / 5
    assert expected == pytest.approx(0.9550266, abs=1e-6)
    assert negative_log_likelihood(PROBS, LABELS) == pytest.approx(expected)
    # A hard zero on the gold class is floored, not infinite.
    assert math.isfinite(negative_log_likelihood([[1.0, 0.0]], [1]))


def test_report_to_dict():
    data = calibration_report(PROBS, LABELS).to_dict()
    assert data["ece"] == pytest.approx(0.456)
    assert data["n_bins"] == 15 and len(data["reliability"]["bins"]) == 15


def test_apply_temperature_by_hand():
    logits = np.array([[0.0, math.log(3.0)]])
    np.testing.assert_allclose(apply_temperature(logits, 1.0), [[0.25, 0.75]])
    # T = 2: softmax(0, ln(3)/2) = (1, sqrt 3) / (1 + sqrt 3)
    root3 = math.sqrt(3.0)
    np.testing.assert_allclose(apply_temperature(logits, 2.0), [[1 / (1 + root3), root3 / (1 + root3)]])


def test_fit_temperature_closed_form():
    # Three examples with logits (1, 0), labels 0, 0, 1. With beta = 1/T, p_0 = sigmoid(beta):
    # NLL(beta) = -2 log s - log(1 - s); d/dbeta = -2 (1 - s) + s = 0 -> s = 2/3 -> beta = ln 2.
    # So T* = 1 / ln 2 = 1.442695...
    logits = np.array([[1.0, 0.0]] * 3)
    labels = np.array([0, 0, 1])
    assert fit_temperature(logits, labels) == pytest.approx(1 / math.log(2), rel=1e-4)


def test_fit_temperature_matches_dense_grid_and_scales_with_logits():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=200)
    logits = rng.normal(size=(200, 5)) * 3.0
    logits[np.arange(200), labels] += 4.0  # mostly right but over-confident
    fitted = fit_temperature(logits, labels)
    grid = np.exp(np.linspace(math.log(0.05), math.log(20), 4001))
    best = grid[np.argmin([temperature_nll(logits, labels, t) for t in grid])]
    assert fitted == pytest.approx(best, rel=2e-3)
    assert temperature_nll(logits, labels, fitted) <= temperature_nll(logits, labels, 1.0)
    # softmax(c z / (c T)) = softmax(z / T): the optimum scales with the logits.
    assert fit_temperature(2.0 * logits, labels) == pytest.approx(2.0 * fitted, rel=1e-3)
    report = fit_temperature_report(logits, labels)
    assert report.nll_after <= report.nll_before and report.temperature == pytest.approx(fitted)


def test_fit_temperature_returns_bound_when_data_push_there():
    # All correct with a margin: the NLL keeps falling as T -> 0, so the lower bound is the answer.
    logits = np.array([[2.0, 0.0], [0.0, 2.0]])
    assert fit_temperature(logits, [0, 1], bounds=(0.1, 10.0)) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("probs", "labels", "fragment"),
    [
        ([[0.6, 0.6]], [0], "sums to 1.2"),
        ([[0.5, 0.5]], [2], "outside 0..1"),
        ([[0.5, 0.5], [0.5, 0.5]], [0], "2 rows but labels has 1"),
        ([[1.5, -0.5]], [0], "negative"),
        (np.zeros((0, 2)), [], "non-empty"),
        ([[np.nan, 1.0]], [0], "NaN"),
    ],
)
def test_bad_probabilities_raise(probs, labels, fragment):
    with pytest.raises(DataError, match=fragment):
        expected_calibration_error(probs, labels)


def test_bad_config_raises():
    with pytest.raises(ConfigError):
        expected_calibration_error(PROBS, LABELS, n_bins=0)
    with pytest.raises(ConfigError):
        apply_temperature([[0.0, 1.0]], 0.0)
    with pytest.raises(ConfigError):
        fit_temperature([[0.0, 1.0]], [0], bounds=(2.0, 1.0))
    with pytest.raises(DataError):
        fit_temperature([[0.0, 1.0]], [0, 1])
