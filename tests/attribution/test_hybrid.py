"""CAP-Hybrid fusion, checked against answers computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from rationalign.attribution.base import WordAttribution
from rationalign.attribution.hybrid import HybridPrior, fuse

WORDS = ["set", "an", "alarm"]


def attr(scores, method, words=WORDS, target=0):
    return WordAttribution(list(words), np.asarray(scores, dtype=float), method, target)


CAP = attr([3.0, 0.0, 1.0], "cap")  # sum-normalised: [0.75, 0, 0.25]
LIME = attr([1.0, -2.0, 1.0], "lime")  # negatives clipped: [0.5, 0, 0.5]
IG = attr([2.0, 2.0, 4.0], "ig")  # [0.25, 0.25, 0.5]


def test_mean_of_sum_normalised_priors():
    (fused,) = fuse([[CAP], [LIME], [IG]], how="mean")
    np.testing.assert_allclose(fused.scores, [1.5 / 3, 0.25 / 3, 1.25 / 3])
    assert fused.scores.sum() == pytest.approx(1.0)
    assert fused.words == WORDS and fused.method == "cap-hybrid" and fused.target == 0
    assert fused.meta == {"components": ["cap", "lime", "ig"], "how": "mean", "normalise": "sum"}


def test_max_and_weighted():
    (fmax,) = fuse([[CAP], [LIME], [IG]], how="max")
    np.testing.assert_allclose(fmax.scores, [0.75, 0.25, 0.5])
    (fw,) = fuse([[CAP], [LIME], [IG]], how="weighted", weights=[2, 1, 1])
    # (2 * cap + lime + ig) / 4
    np.testing.assert_allclose(fw.scores, [(1.5 + 0.5 + 0.25) / 4, 0.25 / 4, (0.5 + 0.5 + 0.5) / 4])
    assert fw.meta["weights"] == [0.5, 0.25, 0.25]


def test_minmax_and_softmax_normalisation():
    (fused,) = fuse([[CAP], [LIME]], how="mean", normalise="minmax")
    # cap: (s - 0) / 3 = [1, 0, 1/3]; lime: (s + 2) / 3 = [1, 0, 1]
    np.testing.assert_allclose(fused.scores, [1.0, 0.0, 2 / 3])
    (soft,) = fuse([[CAP]], how="mean", normalise="softmax", temperature=2.0)
    e = np.exp(np.array([3.0, 0.0, 1.0]) / 2.0)
    np.testing.assert_allclose(soft.scores, e / e.sum())


def test_several_utterances_and_empty_ones():
    other = ["wake", "me"]
    cap = [CAP, attr([1.0, 3.0], "cap", other), attr([], "cap", [])]
    lime = [LIME, attr([0.0, 0.0], "lime", other), attr([], "lime", [])]
    fused = fuse([cap, lime], how="mean")
    assert [f.words for f in fused] == [WORDS, other, []]
    # An all-zero prior stays zero after "sum" normalisation: the mean halves the other one.
    np.testing.assert_allclose(fused[1].scores, [0.125, 0.375])
    assert fused[2].scores.shape == (0,)


def test_mismatches_are_clear_errors():
    with pytest.raises(ValueError, match="same segmentation"):
        fuse([[CAP], [attr([1, 2, 3], "lime", ["set", "a", "alarm"])]])
    with pytest.raises(ValueError, match="target"):
        fuse([[CAP], [attr([1, 2, 3], "lime", target=1)]])
    with pytest.raises(ValueError, match="utterances"):
        fuse([[CAP, CAP], [LIME]])
    with pytest.raises(ValueError, match=r"one weight per method|weights for"):
        fuse([[CAP], [LIME]], how="weighted", weights=[1.0])
    with pytest.raises(ValueError, match="needs one weight"):
        fuse([[CAP], [LIME]], how="weighted")
    with pytest.raises(ValueError, match="only used"):
        fuse([[CAP], [LIME]], how="mean", weights=[1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        fuse([[CAP], [LIME]], how="weighted", weights=[1, -1])
    with pytest.raises(ValueError, match="fusion"):
        fuse([[CAP]], how="median")
    with pytest.raises(ValueError, match="normalisation"):
        fuse([[CAP]], normalise="zscore")
    with pytest.raises(ValueError, match="nothing"):
        fuse([])


class Fixed:
    """An attributor returning fixed scores per text, counting calls."""

    def __init__(self, name, table):
        self.name = name
        self.table = table
        self.calls = 0
        self.fingerprint = f"fixed-{name}"

    def params(self):
        return {"k": 1}

    def attribute(self, texts, targets):
        self.calls += 1
        return [
            WordAttribution(t.split(), np.asarray(self.table[t], float), self.name, y)
            for t, y in zip(texts, targets, strict=True)
        ]


def test_hybrid_prior_composes_attributors():
    a = Fixed("cap", {"set an alarm": [3.0, 0.0, 1.0], "wake me": [1.0, 1.0]})
    b = Fixed("lime", {"set an alarm": [1.0, -2.0, 1.0], "wake me": [0.0, 2.0]})
    hybrid = HybridPrior([a, b], how="max")
    fused = hybrid.attribute(["set an alarm", "wake me"], [0, 1])
    np.testing.assert_allclose(fused[0].scores, [0.75, 0.0, 0.5])
    np.testing.assert_allclose(fused[1].scores, [0.5, 1.0])
    assert fused[1].target == 1 and a.calls == b.calls == 1
    assert hybrid.params()["components"] == [
        {"name": "cap", "params": {"k": 1}},
        {"name": "lime", "params": {"k": 1}},
    ]
    assert hybrid.fingerprint != HybridPrior([a]).fingerprint
    with pytest.raises(ValueError):
        HybridPrior([])
