"""The shared mask sampler, kernel and batched ridge solver."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics.pairwise import cosine_distances

from rationalign.attribution.masks import (
    DEFAULT_SIGMA,
    CostReport,
    cosine_distance_to_ones,
    kernel_weights,
    sample_masks,
    solve_weighted_ridge,
    utterance_rng,
)


@pytest.mark.parametrize("design", ["balanced", "iid"])
@pytest.mark.parametrize("d", [8, 12, 30])
def test_sampled_masks_start_with_all_ones_then_single_deletions(d, design):
    masks = sample_masks(d, 200, np.random.default_rng(0), design)
    assert not masks.enumerated
    assert masks.masks[0].all()
    np.testing.assert_array_equal(masks.masks[1 : d + 1], ~np.eye(d, dtype=bool))
    dropped = d - masks.masks.sum(axis=1)
    assert dropped.min() == 0 and dropped.max() <= d - 1  # never the empty text
    # Distinct rows, multiplicities adding up to the budget.
    assert len(np.unique(masks.masks, axis=0)) == len(masks)
    assert masks.counts.sum() == 200
    assert (masks.counts >= 1).all()


def test_duplicates_are_scored_once_and_counted():
    # d = 4 has only 15 possible masks; a budget of 12 < 2^4 samples with repeats.
    masks = sample_masks(4, 12, np.random.default_rng(3), "iid")
    assert masks.counts.sum() == 12
    assert len(masks) < 12
    assert len(np.unique(masks.masks, axis=0)) == len(masks)


@pytest.mark.parametrize("d", [1, 2, 3, 6])
def test_small_utterances_enumerate_every_mask_with_expected_counts(d):
    budget = 64
    masks = sample_masks(d, budget, np.random.default_rng(0))
    assert masks.enumerated
    # Every mask except the empty text (design probability 0) for d >= 2; d = 1 keeps its single deletion.
    assert len(masks) == (2**d - 1 if d >= 2 else 2)
    assert masks.masks[0].all()
    np.testing.assert_array_equal(masks.masks[1 : d + 1], ~np.eye(d, dtype=bool))
    if d >= 2:
        assert masks.counts.sum() == pytest.approx(budget)
        # A mask dropping k words: forced once if k <= 1, plus (M - 1 - d) / ((d - 1) C(d, k)).
        dropped = d - masks.masks.sum(axis=1)
        n_random = budget - 1 - d
        expected = (dropped <= 1) + np.array(
            [n_random / ((d - 1) * math.comb(d, k)) if k else 0 for k in dropped]
        )
        np.testing.assert_allclose(masks.counts, expected)


def test_expected_counts_are_what_sampling_converges_to():
    d, budget = 5, 31  # 2^5 > 31: sampled; compare average counts to the enumerated expectation at 32
    enumerated = sample_masks(d, 32, np.random.default_rng(0))
    assert enumerated.enumerated
    rng = np.random.default_rng(1)
    totals = {tuple(z): 0.0 for z in enumerated.masks}
    n_runs = 3000
    for _ in range(n_runs):
        draw = sample_masks(d, budget, rng, "iid")
        for z, c in zip(draw.masks, draw.counts, strict=True):
            totals[tuple(z)] += c
    empirical = np.array([totals[tuple(z)] / n_runs for z in enumerated.masks])
    # Same law at budget 31: subtract one random draw's worth from the budget-32 expectation.
    dropped = d - enumerated.masks.sum(axis=1)
    per_draw = np.array([1 / ((d - 1) * math.comb(d, k)) if 1 <= k <= d - 1 else 0 for k in dropped])
    np.testing.assert_allclose(empirical, enumerated.counts - per_draw, atol=0.08)


def test_balanced_design_stratifies_sizes_and_pairs_complements():
    d, budget = 9, 1 + 9 + 16 * 8
    masks = sample_masks(d, budget, np.random.default_rng(0), "balanced")
    assert masks.counts.sum() == budget
    # Rebuild the multiset of random draws: counts minus the forced rows.
    counts = masks.counts.copy()
    counts[: d + 1] -= 1
    dropped = d - masks.masks.sum(axis=1)
    per_size = np.bincount(dropped, weights=counts, minlength=d)[1:d]
    np.testing.assert_array_equal(per_size, np.full(d - 1, 16))  # exactly 16 draws per size
    # Every drawn mask's complement was drawn as often.
    index = {tuple(z): i for i, z in enumerate(masks.masks)}
    for z, c in zip(masks.masks, counts, strict=True):
        if c:
            assert counts[index[tuple(~z)]] == c


def test_masks_depend_only_on_seed_and_text():
    a = sample_masks(15, 100, utterance_rng(7, "some text"))
    b = sample_masks(15, 100, utterance_rng(7, "some text"))
    c = sample_masks(15, 100, utterance_rng(8, "some text"))
    d = sample_masks(15, 100, utterance_rng(7, "other text"))
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.masks.shape != c.masks.shape or not np.array_equal(a.masks, c.masks)
    assert a.masks.shape != d.masks.shape or not np.array_equal(a.masks, d.masks)


def test_budget_below_the_forced_set_keeps_all_ones():
    masks = sample_masks(20, 5, np.random.default_rng(0))
    assert len(masks) == 5 and masks.masks[0].all()
    assert ((20 - masks.masks[1:].sum(axis=1)) == 1).all()


def test_kernel_matches_lime_text_default():
    rng = np.random.default_rng(0)
    masks = rng.random((50, 11)) < 0.6
    masks[0] = True
    masks[1] = False  # the empty text: cosine distance 1, as scikit-learn defines it
    ours = cosine_distance_to_ones(masks)
    reference = cosine_distances(masks.astype(float), np.ones((1, 11))).ravel()
    np.testing.assert_allclose(ours, reference, atol=1e-12)
    # LIME's text explainer: sqrt(exp(-(100 d)^2 / 25^2)).
    lime_weights = np.sqrt(np.exp(-((reference * 100) ** 2) / 25**2))
    np.testing.assert_allclose(kernel_weights(masks), lime_weights, rtol=1e-12)
    np.testing.assert_allclose(kernel_weights(masks, sigma=1.0), np.exp(-(reference**2)))
    assert pytest.approx(0.3535533905932738) == DEFAULT_SIGMA


def _random_systems(seed, n=9, binary=True):
    rng = np.random.default_rng(seed)
    systems = []
    for _ in range(n):
        d = int(rng.integers(1, 25))
        m = int(rng.integers(d + 2, 120))
        z = (rng.random((m, d)) < 0.5).astype(float) if binary else rng.normal(size=(m, d))
        f = z @ rng.normal(size=d) + 0.3 * rng.normal(size=m) + 2.0
        w = rng.random(m) + 0.05
        systems.append((z, f, w))
    return systems


@pytest.mark.parametrize("ridge", [0.0, 0.5, 3.0])
@pytest.mark.parametrize("binary", [True, False])
def test_batched_solver_matches_sklearn_ridge_with_sample_weights(ridge, binary):
    systems = _random_systems(int(ridge * 10) + binary, binary=binary)
    solution = solve_weighted_ridge(
        [s[0] for s in systems], [s[1] for s in systems], [s[2] for s in systems], ridge
    )
    for (z, f, w), coef, intercept in zip(systems, solution.coefs, solution.intercepts, strict=True):
        assert coef.shape == (z.shape[1],)
        if ridge == 0.0:
            # Weighted least squares with an intercept, from numpy's lstsq on sqrt(w)-scaled rows.
            x = np.hstack([np.ones((len(z), 1)), z]) * np.sqrt(w)[:, None]
            expected, *_ = np.linalg.lstsq(x, f * np.sqrt(w), rcond=None)
            np.testing.assert_allclose(coef, expected[1:], rtol=1e-7, atol=1e-8)
            assert intercept == pytest.approx(expected[0], rel=1e-7, abs=1e-8)
        else:
            model = Ridge(alpha=ridge, fit_intercept=True, solver="cholesky").fit(z, f, sample_weight=w)
            np.testing.assert_allclose(coef, model.coef_, rtol=1e-7, atol=1e-9)
            assert intercept == pytest.approx(model.intercept_, rel=1e-7, abs=1e-9)


def test_solver_chunks_large_batches_and_handles_rank_deficiency(monkeypatch):
    from rationalign.attribution import masks as masks_module

    monkeypatch.setattr(masks_module, "_SOLVE_CHUNK_ELEMENTS", 500)  # force many small chunks
    systems = _random_systems(5, n=12)
    chunked = solve_weighted_ridge(
        [s[0] for s in systems], [s[1] for s in systems], [s[2] for s in systems], 1.0
    )
    monkeypatch.setattr(masks_module, "_SOLVE_CHUNK_ELEMENTS", 10**9)
    whole = solve_weighted_ridge(
        [s[0] for s in systems], [s[1] for s in systems], [s[2] for s in systems], 1.0
    )
    for a, b in zip(chunked.coefs, whole.coefs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    # Two identical columns and no ridge: singular; the minimum-norm solution splits the effect evenly.
    z = np.array([[1, 1], [0, 0], [1, 1], [0, 0]], dtype=float)
    f = np.array([3.0, 1.0, 3.0, 1.0])
    sol = solve_weighted_ridge([z], [f], [np.ones(4)], 0.0)
    np.testing.assert_allclose(sol.coefs[0], [1.0, 1.0], atol=1e-8)
    assert sol.intercepts[0] == pytest.approx(1.0)


def test_empty_utterance_and_zero_word_system():
    masks = sample_masks(0, 64, np.random.default_rng(0))
    assert masks.masks.shape == (1, 0)
    sol = solve_weighted_ridge([np.zeros((1, 0))], [np.array([0.7])], [np.ones(1)], 1.0)
    assert sol.coefs[0].shape == (0,)
    assert sol.intercepts[0] == pytest.approx(0.7)


def test_cost_report_arithmetic():
    a = CostReport(utterances=4, texts_scored=100, calls=2, seconds=2.0)
    assert a.texts_per_utterance == 25 and a.seconds_per_utterance == 0.5
    b = a.copy()
    b.add(CostReport(1, 10, 1, 1.0))
    assert b.minus(a) == CostReport(1, 10, 1, 1.0)
    assert CostReport().seconds_per_utterance == 0.0
    assert a.to_dict()["texts_per_utterance"] == 25
