"""Out-of-scope scores and detection metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from rationalign.errors import ConfigError, DataError
from rationalign.evaluation.ood import (
    apply_abstain_threshold,
    choose_abstain_threshold,
    energy,
    evaluate_ood,
    fpr_at_tpr,
    in_scope_scores,
    max_softmax_probability,
    ood_auroc,
)

IN_SCOPE = np.array([0.9, 0.8, 0.7, 0.6])
OUT_OF_SCOPE = np.array([0.75, 0.5, 0.3])
# AUROC = P(in > oos): 0.9 beats 3, 0.8 beats 3, 0.7 beats 2, 0.6 beats 2 -> 10 / 12
# TPR >= 0.95 needs ceil(3.8) = 4 of 4 in-scope accepted -> threshold 0.6 -> oos >= 0.6: {0.75} -> FPR 1/3
# TPR >= 0.5 needs 2 -> threshold 0.8 -> FPR 0


def test_scores_by_hand():
    logits = np.array([[0.0, math.log(3.0)]])
    assert max_softmax_probability(logits)[0] == pytest.approx(0.75)
    # energy = -T logsumexp(z / T): T = 1 -> -ln(1 + 3); T = 2 -> -2 ln(1 + sqrt 3)
    assert energy(logits)[0] == pytest.approx(-math.log(4.0))
    assert energy(logits, temperature=2.0)[0] == pytest.approx(-2.0 * math.log(1 + math.sqrt(3.0)))
    # in-scope orientation: higher = more in-scope, so energy is negated
    assert in_scope_scores(logits, "energy")[0] == pytest.approx(math.log(4.0))
    assert in_scope_scores(logits, "msp")[0] == pytest.approx(0.75)


def test_auroc_and_fpr_by_hand():
    assert ood_auroc(IN_SCOPE, OUT_OF_SCOPE) == pytest.approx(10 / 12)
    assert fpr_at_tpr(IN_SCOPE, OUT_OF_SCOPE, 0.95) == pytest.approx(1 / 3)
    assert fpr_at_tpr(IN_SCOPE, OUT_OF_SCOPE, 0.5) == 0.0
    report = evaluate_ood(IN_SCOPE, OUT_OF_SCOPE, method="msp")
    assert report.to_dict() == {
        "method": "msp",
        "auroc": pytest.approx(10 / 12),
        "fpr_at_95_tpr": pytest.approx(1 / 3),
        "n_in_scope": 4,
        "n_out_of_scope": 3,
    }


def test_threshold_on_exact_tpr_does_not_round_up():
    # 20 in-scope scores 0..19: 95% TPR needs exactly 19 accepted -> threshold 1, not 0.
    # An out-of-scope score equal to the threshold is accepted (score >= threshold): FPR 2/3.
    chosen = choose_abstain_threshold(np.arange(20.0), np.array([0.5, 1.0, 3.5]), 0.95)
    assert chosen.threshold == 1.0 and chosen.tpr == 0.95 and chosen.fpr == pytest.approx(2 / 3)
    # 0.28 * 25 evaluates to 7.000000000000001 in floats; 7 of 0..24 accepted -> threshold 18, not 17.
    assert choose_abstain_threshold(np.arange(25.0), np.array([0.0]), 0.28).threshold == 18.0


def test_fpr_matches_sklearn_roc_curve():
    rng = np.random.default_rng(0)
    positives, negatives = rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.0, 200)
    labels = np.r_[np.ones(300), np.zeros(200)]
    fpr, tpr, _ = roc_curve(labels, np.r_[positives, negatives], drop_intermediate=False)
    for target in (0.8, 0.9, 0.95):
        expected = fpr[np.argmax(tpr >= target)]  # lowest FPR among points reaching the target TPR
        assert fpr_at_tpr(positives, negatives, target) == pytest.approx(expected)


def test_choose_and_apply_abstain_threshold():
    chosen = choose_abstain_threshold(IN_SCOPE, OUT_OF_SCOPE, target_tpr=0.75)
    # ceil(0.75 * 4) = 3 accepted -> threshold 0.7; validation FPR: only 0.75 >= 0.7 -> 1/3
    assert chosen.threshold == 0.7 and chosen.tpr == 0.75 and chosen.fpr == pytest.approx(1 / 3)
    assert chosen.accepts([0.71, 0.69, 0.7]).tolist() == [True, False, True]
    predicted = apply_abstain_threshold([3, 1, 2], [0.9, 0.5, 0.7], chosen.threshold, oos_label_id=9)
    assert predicted.tolist() == [3, 9, 2]


def test_bad_inputs_raise():
    with pytest.raises(DataError, match="non-empty"):
        ood_auroc([], [0.1])
    with pytest.raises(DataError, match="NaN"):
        ood_auroc([np.nan], [0.1])
    with pytest.raises(ConfigError):
        choose_abstain_threshold(IN_SCOPE, OUT_OF_SCOPE, target_tpr=0.0)
    with pytest.raises(ConfigError, match="unknown out-of-scope score"):
        in_scope_scores([[0.0, 1.0]], "entropy")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        energy([[0.0, 1.0]], temperature=-1.0)
    with pytest.raises(DataError, match="3 predictions but 2 scores"):
        apply_abstain_threshold([1, 2, 3], [0.1, 0.2], 0.5, 0)
