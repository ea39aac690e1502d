"""Classification metrics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from rationalign.errors import ConfigError, DataError, RationalignError
from rationalign.evaluation.metrics import (
    accuracy,
    classification_report,
    confusion_matrix,
    macro_f1,
    most_confused_pairs,
    per_class_scores,
)

NAMES = ("card", "alarm", "balance")
# index:     0  1  2  3  4  5
Y_TRUE = [0, 0, 1, 1, 2, 2]
Y_PRED = [0, 1, 1, 1, 2, 0]
# Correct at 0, 2, 3, 4 -> accuracy 4/6.
# class 0: TP 1 (i0), FP 1 (i5), FN 1 (i1) -> P 1/2, R 1/2, F1 1/2
# class 1: TP 2 (i2,i3), FP 1 (i1), FN 0 -> P 2/3, R 1, F1 2*(2/3)/(5/3) = 4/5
# class 2: TP 1 (i4), FP 0, FN 1 (i5) -> P 1, R 1/2, F1 2*(1/2)/(3/2) = 2/3
# macro-F1 = (1/2 + 4/5 + 2/3) / 3 = 59/90


def test_accuracy_by_hand():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)


def test_macro_f1_by_hand():
    assert macro_f1(Y_TRUE, Y_PRED, num_labels=3) == pytest.approx(59 / 90)


def test_macro_f1_ignores_labels_absent_from_gold_and_predictions():
    # Label 2 never occurs: it must not pull the mean down to 1/3 (sklearn's macro convention).
    # Labels 0 and 1: both perfect -> 1.0.
    assert macro_f1([0, 1, 0], [0, 1, 0], num_labels=3) == pytest.approx(1.0)


def test_per_class_table_by_hand():
    rows = per_class_scores(Y_TRUE, Y_PRED, NAMES)
    got = [(r.label, r.precision, r.recall, r.f1, r.support) for r in rows]
    expected = [
        ("card", 1 / 2, 1 / 2, 1 / 2, 2),
        ("alarm", 2 / 3, 1.0, 4 / 5, 2),
        ("balance", 1.0, 1 / 2, 2 / 3, 2),
    ]
    for (name, p, r, f, s), (e_name, e_p, e_r, e_f, e_s) in zip(got, expected, strict=True):
        assert name == e_name and s == e_s
        assert (p, r, f) == pytest.approx((e_p, e_r, e_f))


def test_confusion_matrix_and_most_confused_by_hand():
    matrix = confusion_matrix(Y_TRUE, Y_PRED, 3)
    # rows = gold, columns = predicted
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    pairs = most_confused_pairs(matrix, NAMES, top=5)
    # Two off-diagonal cells with count 1; tie broken by gold id: (card->alarm) before (balance->card).
    assert [(p.true_label, p.predicted_label, p.count, p.rate) for p in pairs] == [
        ("card", "alarm", 1, 0.5),
        ("balance", "card", 1, 0.5),
    ]
    assert len(most_confused_pairs(matrix, NAMES, top=1)) == 1


def test_most_confused_orders_by_count():
    matrix = np.array([[5, 1, 0], [3, 4, 0], [0, 2, 9]])
    pairs = most_confused_pairs(matrix, NAMES, top=3)
    # counts 3 (alarm->card, rate 3/7), 2 (balance->alarm, 2/11), 1 (card->alarm, 1/6)
    assert [(p.true_label_id, p.predicted_label_id, p.count) for p in pairs] == [
        (1, 0, 3),
        (2, 1, 2),
        (0, 1, 1),
    ]
    assert pairs[0].rate == pytest.approx(3 / 7)


def test_report_round_trips_to_json_types():
    report = classification_report(Y_TRUE, Y_PRED, NAMES)
    data = report.to_dict()
    assert data["accuracy"] == pytest.approx(4 / 6)
    assert data["macro_f1"] == pytest.approx(59 / 90)
    assert data["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert data["per_class"][1]["f1"] == pytest.approx(0.8)
    assert data["n_examples"] == 6


@pytest.mark.parametrize(
    ("y_true", "y_pred", "fragment"),
    [
        ([0, 1], [0], "y_true has 2 labels but y_pred has 1"),
        ([], [], "empty"),
        ([0, 3], [0, 1], "outside 0..2"),
        ([0, -1], [0, 1], "outside"),
        ([0, 0.5], [0, 1], "integer label ids"),
        (["card"], ["card"], "integer label ids"),
    ],
)
def test_bad_labels_raise_data_error(y_true, y_pred, fragment):
    with pytest.raises(DataError, match=fragment) as info:
        per_class_scores(y_true, y_pred, NAMES)
    assert isinstance(info.value, RationalignError)


def test_bad_confusion_shape_and_top():
    with pytest.raises(DataError, match="shape"):
        most_confused_pairs(np.zeros((2, 2)), NAMES)
    with pytest.raises(ConfigError):
        most_confused_pairs(np.zeros((3, 3)), NAMES, top=-1)
    with pytest.raises(ConfigError):
        per_class_scores([0], [0], [])
