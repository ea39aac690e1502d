"""Faithfulness of word attributions to the model they explain (ERASER; DeYoung et al. 2020).

The model is any ``predict_proba(texts: list[str]) -> np.ndarray[n, C]``. Every perturbed text of every
utterance is collected first, duplicates are dropped, and the model is called once per chunk of
``batch_size`` texts (never once per utterance).

**Removing words** deletes them and joins the remaining words with single spaces. The unperturbed input is
joined the same way (``" ".join(words)``), so the comparison measures the words, not whitespace or
punctuation spacing. Removing every word gives the empty string, which is passed to the model as is.

Per utterance with words ``w_1..w_d``, attribution scores ``s`` and target class ``y``
(``p_y(t)`` = the model's probability of ``y`` for text ``t``, ``x`` = all words):

- top-k words: ``k = ceil(percent / 100 * d)``, at least 1 (see ``fidelity.top_k_count``); ties in ``s``
  -> earlier word first.
- comprehensiveness(k) = p_y(x) - p_y(x without its top-k words)
- sufficiency(k) = p_y(x) - p_y(only the top-k words, in their original order)
- AOPC comprehensiveness / sufficiency = mean over the percentage grid (default 1, 5, 10, 20, 50 %).
  Short utterances map several percentages to the same ``k``; by default each grid point still counts
  (ERASER's mean over bins). ``deduplicate_k=True`` averages over the distinct ``k`` values instead, which
  is what ferret does (it skips a rationale identical to the previous one).
- soft comprehensiveness / sufficiency (Zhao & Aletras 2023, applied to text): scores are min-max
  normalised to ``q`` in [0, 1] per utterance (a constant vector gives ``q = 0.5`` everywhere). Soft
  sufficiency keeps each word independently with probability ``q_i``; soft comprehensiveness keeps it
  with probability ``1 - q_i``. Each is ``p_y(x) - mean over n_soft_samples masks of p_y(masked x)``, with
  masks drawn from ``numpy.random.default_rng([seed, utterance_index])`` (reproducible whatever the
  batch composition). The paper scales embeddings by ``q``; a text-level model can only keep or delete
  a word, and the Bernoulli keep mask is the expectation-preserving text equivalent.
- leave-one-out Kendall tau: Kendall tau-b between ``s`` and the drop ``p_y(x) - p_y(x without w_i)`` for
  each word deleted alone (ferret's ``taucorr_loo``). NaN for one word or a constant vector.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rationalign.errors import ConfigError, DataError
from rationalign.evaluation.calibration import check_probabilities
from rationalign.evaluation.fidelity import (
    NanMean,
    WordScores,
    as_word_scores,
    check_word_scores,
    kendall,
    nan_summary,
    top_k_count,
    top_k_indices,
)

PredictProba = Callable[[list[str]], np.ndarray]

DEFAULT_PERCENTAGES: tuple[float, ...] = (1.0, 5.0, 10.0, 20.0, 50.0)
DEFAULT_BATCH_SIZE = 512


def join_words(words: Sequence[str]) -> str:
    """The one text form of a word list that every perturbation metric feeds the model."""
    return " ".join(words)


def without_words(words: Sequence[str], drop: Sequence[int] | np.ndarray) -> str:
    """``words`` minus the positions in ``drop``, joined with single spaces."""
    dropped = {int(i) for i in drop}
    return join_words([w for i, w in enumerate(words) if i not in dropped])


def only_words(words: Sequence[str], keep: Sequence[int] | np.ndarray) -> str:
    """Only the positions in ``keep``, in their original order, joined with single spaces."""
    kept = {int(i) for i in keep}
    return join_words([w for i, w in enumerate(words) if i in kept])


class TextPool:
    """Collects texts, deduplicated, so the model sees each distinct text once, in large chunks."""

    def __init__(self) -> None:
        self._rows: dict[str, int] = {}

    def add(self, text: str) -> int:
        """Register ``text``; return its row in the probability matrix ``run`` will return."""
        return self._rows.setdefault(text, len(self._rows))

    def __len__(self) -> int:
        return len(self._rows)

    def run(self, predict_proba: PredictProba, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        return predict_in_chunks(predict_proba, list(self._rows), batch_size)


def predict_in_chunks(
    predict_proba: PredictProba, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE
) -> np.ndarray:
    """Call ``predict_proba`` on consecutive chunks of ``batch_size`` texts and stack the results.

    Each chunk's output is checked: one row per text, the same number of classes, rows that sum to 1.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if not texts:
        raise DataError("no texts to predict; fix: pass at least one utterance")
    outputs = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        probs = check_probabilities(predict_proba(chunk), "predict_proba output")
        if probs.shape[0] != len(chunk):
            raise DataError(
                f"predict_proba returned {probs.shape[0]} rows for {len(chunk)} texts; "
                "fix: return one probability row per input text"
            )
        if outputs and probs.shape[1] != outputs[0].shape[1]:
            raise DataError(
                f"predict_proba returned {probs.shape[1]} classes, earlier {outputs[0].shape[1]}; "
                "fix: the model must always score the full label space"
            )
        outputs.append(probs)
    return np.concatenate(outputs, axis=0)


def check_targets(targets: Sequence[int], n_examples: int, num_classes: int) -> list[int]:
    values = list(targets)
    if len(values) != n_examples:
        raise DataError(
            f"{n_examples} attributions but {len(values)} targets; fix: one target class per utterance"
        )
    for i, target in enumerate(values):
        if isinstance(target, bool) or not isinstance(target, int | np.integer):
            raise DataError(f"example {i}: target {target!r} is not an integer class id")
        if not 0 <= int(target) < num_classes:
            raise DataError(
                f"example {i}: target {int(target)} outside 0..{num_classes - 1}; "
                "fix: use ids from the model's label space"
            )
    return [int(t) for t in values]


def normalise_min_max(scores: np.ndarray) -> np.ndarray:
    """Scores rescaled to [0, 1]; a constant vector maps to 0.5 everywhere (no word preferred)."""
    low, high = float(scores.min()), float(scores.max())
    if high == low:
        return np.full(scores.shape, 0.5)
    return (scores - low) / (high - low)


@dataclass(frozen=True)
class FaithfulnessConfig:
    percentages: tuple[float, ...] = DEFAULT_PERCENTAGES
    deduplicate_k: bool = False
    soft: bool = True
    n_soft_samples: int = 20
    leave_one_out: bool = True
    seed: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        if not self.percentages:
            raise ConfigError("percentages is empty; fix: use e.g. (1, 5, 10, 20, 50)")
        for percent in self.percentages:
            if not 0 < percent <= 100:
                raise ConfigError(f"percentage {percent} must be in (0, 100]")
        if self.soft and self.n_soft_samples < 1:
            raise ConfigError(f"n_soft_samples must be >= 1, got {self.n_soft_samples}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FaithfulnessResult:
    """Faithfulness of one utterance's attribution. Lists are aligned with ``percentages``.

    ``soft_*`` and ``loo_kendall_tau`` are NaN when not computed (or undefined for tau).
    """

    target: int
    n_words: int
    base_probability: float
    percentages: tuple[float, ...]
    ks: list[int]
    comprehensiveness: list[float]
    sufficiency: list[float]
    aopc_comprehensiveness: float
    aopc_sufficiency: float
    soft_comprehensiveness: float = math.nan
    soft_sufficiency: float = math.nan
    loo_kendall_tau: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FaithfulnessSummary:
    n_examples: int
    percentages: tuple[float, ...]
    comprehensiveness: list[float]
    sufficiency: list[float]
    aopc_comprehensiveness: float
    aopc_sufficiency: float
    soft_comprehensiveness: NanMean
    soft_sufficiency: NanMean
    loo_kendall_tau: NanMean

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FaithfulnessReport:
    config: FaithfulnessConfig
    examples: list[FaithfulnessResult] = field(repr=False)
    summary: FaithfulnessSummary
    n_model_texts: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "summary": self.summary.to_dict(),
            "n_model_texts": self.n_model_texts,
            "examples": [e.to_dict() for e in self.examples],
        }


@dataclass
class _Plan:
    """Rows in the pooled probability matrix that one utterance needs."""

    base: int
    ks: list[int]
    comprehensiveness: list[int]
    sufficiency: list[int]
    soft_comprehensiveness: list[int]
    soft_sufficiency: list[int]
    leave_one_out: list[int]


def _plan_example(
    pool: TextPool, index: int, words: list[str], scores: np.ndarray, config: FaithfulnessConfig
) -> _Plan:
    d = len(words)
    ks = [top_k_count(d, p) for p in config.percentages]
    order = top_k_indices(scores, d)
    plan = _Plan(
        base=pool.add(join_words(words)),
        ks=ks,
        comprehensiveness=[pool.add(without_words(words, order[:k])) for k in ks],
        sufficiency=[pool.add(only_words(words, order[:k])) for k in ks],
        soft_comprehensiveness=[],
        soft_sufficiency=[],
        leave_one_out=[],
    )
    if config.soft:
        keep_probability = normalise_min_max(scores)
        rng = np.random.default_rng([config.seed, index])
        # Draw order is fixed (comprehensiveness masks, then sufficiency masks) for reproducibility.
        comp_masks = rng.random((config.n_soft_samples, d)) < (1.0 - keep_probability)
        suff_masks = rng.random((config.n_soft_samples, d)) < keep_probability
        plan.soft_comprehensiveness = [pool.add(only_words(words, np.flatnonzero(m))) for m in comp_masks]
        plan.soft_sufficiency = [pool.add(only_words(words, np.flatnonzero(m))) for m in suff_masks]
    if config.leave_one_out:
        plan.leave_one_out = [pool.add(without_words(words, [i])) for i in range(d)]
    return plan


def _aopc(values: list[float], ks: list[int], deduplicate_k: bool) -> float:
    if not deduplicate_k:
        return float(np.mean(values))
    first_of_each_k = {}
    for k, value in zip(ks, values, strict=True):
        first_of_each_k.setdefault(k, value)
    return float(np.mean(list(first_of_each_k.values())))


def evaluate_faithfulness(
    predict_proba: PredictProba,
    attributions: Sequence[WordScores],
    targets: Sequence[int],
    config: FaithfulnessConfig | None = None,
) -> FaithfulnessReport:
    """ERASER comprehensiveness / sufficiency / AOPC, soft variants and leave-one-out tau.

    ``attributions`` are ``(words, scores)`` pairs or ``WordAttribution`` objects; ``targets`` the class
    each attribution explains (usually the model's prediction or the gold label).
    """
    config = config or FaithfulnessConfig()
    if not attributions:
        raise DataError("no attributions to evaluate; fix: pass at least one utterance")
    if len(targets) != len(attributions):
        raise DataError(
            f"{len(attributions)} attributions but {len(targets)} targets; fix: one target per utterance"
        )
    items = [as_word_scores(a, f"example {i}") for i, a in enumerate(attributions)]
    pool = TextPool()
    plans = [_plan_example(pool, i, words, scores, config) for i, (words, scores) in enumerate(items)]
    probs = pool.run(predict_proba, config.batch_size)
    target_ids = check_targets(targets, len(items), probs.shape[1])

    results = []
    for (words, scores), plan, target in zip(items, plans, target_ids, strict=True):
        p = probs[:, target]
        base = float(p[plan.base])
        comprehensiveness = [base - float(p[row]) for row in plan.comprehensiveness]
        sufficiency = [base - float(p[row]) for row in plan.sufficiency]
        soft_comp = soft_suff = loo_tau = math.nan
        if config.soft:
            soft_comp = base - float(np.mean(p[plan.soft_comprehensiveness]))
            soft_suff = base - float(np.mean(p[plan.soft_sufficiency]))
        if config.leave_one_out:
            loo_tau = kendall(scores, base - p[plan.leave_one_out])
        results.append(
            FaithfulnessResult(
                target=target,
                n_words=len(words),
                base_probability=base,
                percentages=tuple(config.percentages),
                ks=plan.ks,
                comprehensiveness=comprehensiveness,
                sufficiency=sufficiency,
                aopc_comprehensiveness=_aopc(comprehensiveness, plan.ks, config.deduplicate_k),
                aopc_sufficiency=_aopc(sufficiency, plan.ks, config.deduplicate_k),
                soft_comprehensiveness=soft_comp,
                soft_sufficiency=soft_suff,
                loo_kendall_tau=loo_tau,
            )
        )
    summary = FaithfulnessSummary(
        n_examples=len(results),
        percentages=tuple(config.percentages),
        comprehensiveness=np.mean([r.comprehensiveness for r in results], axis=0).tolist(),
        sufficiency=np.mean([r.sufficiency for r in results], axis=0).tolist(),
        aopc_comprehensiveness=float(np.mean([r.aopc_comprehensiveness for r in results])),
        aopc_sufficiency=float(np.mean([r.aopc_sufficiency for r in results])),
        soft_comprehensiveness=nan_summary([r.soft_comprehensiveness for r in results]),
        soft_sufficiency=nan_summary([r.soft_sufficiency for r in results]),
        loo_kendall_tau=nan_summary([r.loo_kendall_tau for r in results]),
    )
    return FaithfulnessReport(config=config, examples=results, summary=summary, n_model_texts=len(pool))


def faithfulness_of_words(
    predict_proba: PredictProba,
    words: Sequence[str],
    scores: Any,
    target: int,
    config: FaithfulnessConfig | None = None,
) -> FaithfulnessResult:
    """Convenience for one utterance (still one batched model call)."""
    checked = check_word_scores(words, scores)
    return evaluate_faithfulness(predict_proba, [checked], [target], config).examples[0]
