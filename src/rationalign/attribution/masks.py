"""The machinery shared by every perturbation prior (LIME, CAP): word masks, the kernel, a batched ridge solver.

One sampler, one kernel and one solver serve LIME and CAP, so the two priors differ only in *what* is
regressed (the probability of the gold class, or CAP's class-aware margin) and *who* scores the masked texts.

Masks
    ``z in {0,1}^d`` keeps word ``i`` when ``z_i = 1``; removed words are deleted and the rest joined with
    :func:`~rationalign.attribution.words.join_words`. Every utterance gets the all-ones mask (scored on the
    *original* text, so its probabilities double as soft labels), the ``d`` single-word deletions, then
    random masks that drop ``k ~ U{1..d-1}`` words (LIME's text sampler, except that LIME may also drop
    every word: the empty text has cosine distance 1 and LIME's kernel gives it weight ~3e-4, so leaving it
    out changes the estimate by a negligible amount and saves a call).

    Duplicate masks are scored once and weighted by their multiplicity, so the regression is *exactly* the
    one on all ``M`` draws while short utterances cost far fewer calls. When ``2^d <= M`` every mask is
    enumerated instead and weighted by its *expected* multiplicity under the sampler (the limit the random
    design converges to), which removes all sampling noise at a cost of at most ``M`` calls.

    ``design="balanced"`` (default) draws the random part with the same marginal distribution, aiming at
    less variance: sizes ``k`` are stratified (equal counts per size), subsets are windows of random
    permutations (every word is dropped equally often), and masks come in complementary pairs
    ``(z, 1 - z)``. ``design="iid"`` is LIME's plain i.i.d. sampler. Both converge to the same estimate;
    the balanced one helped slightly on a synthetic model but not measurably with MiniLM on Banking77
    (BENCHMARKS.md, "LIME and CAP: time to an accurate prior").

Kernel
    ``pi(z) = exp(-D(z)^2 / sigma^2)`` with ``D`` the cosine distance between ``z`` and all-ones, i.e.
    ``1 - sqrt(|z| / d)``. LIME's text explainer weights samples by ``sqrt(exp(-(100 D)^2 / 25^2))``, which
    is this kernel with ``sigma = 0.25 * sqrt(2) ~= 0.354``: that is :data:`DEFAULT_SIGMA`.

Solver
    ``argmin_phi sum_z w(z) (f(z) - phi_0 - phi . z)^2 + lambda ||phi||^2`` with an unpenalised intercept
    ``phi_0`` (the design is augmented with a column of ones whose penalty is 0; this is what
    ``sklearn.linear_model.Ridge(fit_intercept=True)`` computes). ``A = X^T W X + lambda P`` is symmetric
    positive definite; all utterances' systems are padded to the same size (padded coefficients get an
    identity row and a zero right-hand side, so they solve to 0) and solved in one
    ``torch.linalg.cholesky_ex`` + ``torch.cholesky_solve`` call.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from rationalign.attribution.base import WordAttribution
from rationalign.attribution.words import join_words, split_words

DEFAULT_SIGMA = 0.25 * math.sqrt(2.0)  # LIME's text default (kernel_width=25 on distance*100, sqrt kernel)
DEFAULT_RIDGE = 1.0  # LIME's default Ridge(alpha=1)
Design = Literal["balanced", "iid"]
DESIGNS: tuple[str, ...] = ("balanced", "iid")

# Where one chunk of padded least-squares data (utterances x masks x columns, float64) stays below ~64 MiB.
_SOLVE_CHUNK_ELEMENTS = 8_000_000


# ----------------------------------------------------------------------------------------------- masks


@dataclass
class MaskSet:
    """The distinct masks of one utterance and how much each counts in the regression.

    ``masks[0]`` is always all-ones. ``counts`` is the multiplicity of each mask among the ``M`` draws
    (its expected multiplicity when ``enumerated``).
    """

    masks: np.ndarray  # bool [m, d]
    counts: np.ndarray  # float64 [m]
    enumerated: bool = False

    @property
    def n_words(self) -> int:
        return self.masks.shape[1]

    def __len__(self) -> int:
        return self.masks.shape[0]


def utterance_rng(seed: int, text: str) -> np.random.Generator:
    """A generator that depends only on ``(seed, text)``: an utterance gets the same masks whatever batch,
    order or process it is explained in (so resumed and uninterrupted runs agree)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *words]))


def _forced_masks(d: int) -> np.ndarray:
    """All-ones, then the ``d`` single-word deletions."""
    forced = np.ones((d + 1, d), dtype=bool)
    forced[np.arange(1, d + 1), np.arange(d)] = False
    return forced


def _iid_draws(d: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """LIME's sampler: ``k ~ U{1..d-1}`` dropped words, chosen uniformly."""
    masks = np.ones((n, d), dtype=bool)
    if n == 0:
        return masks
    sizes = rng.integers(1, d, size=n)  # high is exclusive: 1..d-1
    # A uniformly random k-subset per row: the k smallest of d uniform keys.
    order = np.argsort(rng.random((n, d)), axis=1)
    drop = np.arange(d)[None, :] < sizes[:, None]
    rows = np.repeat(np.arange(n), d).reshape(n, d)
    masks[rows[drop], order[drop]] = False
    return masks


def _balanced_draws(d: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Same marginal law as :func:`_iid_draws`, lower variance (see the module docstring)."""
    masks = np.ones((n, d), dtype=bool)
    n_pairs, odd = divmod(n, 2)
    n_first = n_pairs + odd
    if n_first == 0:
        return masks
    # Stratified sizes for the first mask of each pair: equal counts per k, the remainder at random.
    n_sizes = d - 1
    sizes = np.tile(np.arange(1, d), n_first // n_sizes)
    extra = rng.choice(np.arange(1, d), size=n_first % n_sizes, replace=False)
    sizes = rng.permutation(np.concatenate([sizes, extra]))
    firsts = np.ones((n_first, d), dtype=bool)
    for k in np.unique(sizes):
        rows = np.flatnonzero(sizes == k)
        # Windows of k consecutive positions of random permutations: every word is dropped equally often.
        n_perms = -(-len(rows) // d)
        perms = np.stack([rng.permutation(d) for _ in range(n_perms)])
        starts = np.concatenate([rng.permutation(d) for _ in range(n_perms)])[: len(rows)]
        which_perm = np.arange(len(rows)) // d
        window = (starts[:, None] + np.arange(k)[None, :]) % d
        dropped = perms[which_perm[:, None], window]
        firsts[np.repeat(rows, k), dropped.ravel()] = False
    masks[:n_first] = firsts
    # The antithetic partner drops exactly the words the first one kept (d - k of them, in 1..d-1).
    masks[n_first:] = ~firsts[:n_pairs]
    return masks


def _enumerate_masks(d: int, n_masks: int) -> tuple[np.ndarray, np.ndarray]:
    """Every mask the sampler can produce, weighted by its expected multiplicity at budget ``n_masks``."""
    codes = np.arange(2**d - 1, -1, -1, dtype=np.int64)  # all-ones first
    masks = ((codes[:, None] >> np.arange(d)[None, :]) & 1).astype(bool)
    kept = masks.sum(axis=1)
    dropped = d - kept
    counts = np.zeros(len(masks))
    counts[dropped <= 1] = 1.0  # the forced all-ones and single deletions
    n_random = max(n_masks - 1 - d, 0)
    if d >= 2 and n_random:
        # Each random draw picks k uniformly in 1..d-1, then one of C(d, k) subsets.
        binom = np.array([math.comb(d, int(k)) for k in dropped], dtype=np.float64)
        random_part = np.where((dropped >= 1) & (dropped <= d - 1), n_random / ((d - 1) * binom), 0.0)
        counts += random_part
    keep = counts > 0
    # Codes run down from all-ones, so a stable sort on the number dropped gives: all-ones, the single
    # deletions in word order (dropping word 0 first), then the rest.
    masks, counts, dropped = masks[keep], counts[keep], dropped[keep]
    order = np.argsort(dropped, kind="stable")
    return masks[order], counts[order]


def sample_masks(d: int, n_masks: int, rng: np.random.Generator, design: Design = "balanced") -> MaskSet:
    """The masks of one ``d``-word utterance at a budget of ``n_masks`` draws (see the module docstring)."""
    if n_masks < 1:
        raise ValueError(f"n_masks must be >= 1, got {n_masks}")
    if design not in DESIGNS:
        raise ValueError(f"unknown mask design {design!r}; choose one of {DESIGNS}")
    if d == 0:
        return MaskSet(np.ones((1, 0), dtype=bool), np.ones(1), enumerated=True)
    if 2**d <= n_masks:
        masks, counts = _enumerate_masks(d, n_masks)
        return MaskSet(masks, counts, enumerated=True)
    forced = _forced_masks(d)
    if n_masks <= d + 1:
        # Budget below the forced set: all-ones plus a random choice of single deletions.
        picks = 1 + np.sort(rng.choice(d, size=n_masks - 1, replace=False))
        masks = forced[np.concatenate([[0], picks])]
        return MaskSet(masks, np.ones(len(masks)))
    n_random = n_masks - 1 - d
    draws = _balanced_draws(d, n_random, rng) if design == "balanced" else _iid_draws(d, n_random, rng)
    all_masks = np.concatenate([forced, draws])
    # Deduplicate, keeping first-occurrence order so all-ones stays row 0.
    _, first, inverse = np.unique(
        np.packbits(all_masks, axis=1), axis=0, return_index=True, return_inverse=True
    )
    inverse = inverse.ravel()
    counts_by_unique = np.bincount(inverse, minlength=len(first)).astype(np.float64)
    order = np.argsort(first)
    return MaskSet(all_masks[first[order]], counts_by_unique[order])


# ---------------------------------------------------------------------------------------------- kernel


def cosine_distance_to_ones(masks: np.ndarray) -> np.ndarray:
    """``1 - cos(z, 1) = 1 - sqrt(|z| / d)`` per row (1 for the empty mask, as scikit-learn gives)."""
    masks = np.asarray(masks)
    d = masks.shape[1]
    if d == 0:
        return np.zeros(masks.shape[0])
    return 1.0 - np.sqrt(masks.sum(axis=1) / d)


def kernel_weights(masks: np.ndarray, sigma: float = DEFAULT_SIGMA) -> np.ndarray:
    """``pi(z) = exp(-D(z)^2 / sigma^2)``, ``D`` the cosine distance to all-ones."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    distance = cosine_distance_to_ones(masks)
    return np.exp(-(distance**2) / sigma**2)


# ---------------------------------------------------------------------------------------------- solver


@dataclass
class RidgeSolution:
    """Per-system coefficients (one array of length ``d_i`` each) and intercepts."""

    coefs: list[np.ndarray]
    intercepts: np.ndarray


def _solve_chunk(
    designs: Sequence[np.ndarray], targets: Sequence[np.ndarray], weights: Sequence[np.ndarray], ridge: float
) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(designs)
    d_max = max(z.shape[1] for z in designs)
    m_max = max(z.shape[0] for z in designs)
    cols = d_max + 1  # column 0 is the intercept
    x = torch.zeros(n, m_max, cols, dtype=torch.float64)
    f = torch.zeros(n, m_max, dtype=torch.float64)
    w = torch.zeros(n, m_max, dtype=torch.float64)  # padded rows weigh 0
    penalty = torch.zeros(n, cols, dtype=torch.float64)
    for i, (z, y, wt) in enumerate(zip(designs, targets, weights, strict=True)):
        m, d = z.shape
        x[i, :m, 0] = 1.0
        x[i, :m, 1 : d + 1] = torch.from_numpy(np.asarray(z, dtype=np.float64))
        f[i, :m] = torch.from_numpy(np.asarray(y, dtype=np.float64))
        w[i, :m] = torch.from_numpy(np.asarray(wt, dtype=np.float64))
        penalty[i, 1 : d + 1] = ridge
        penalty[i, d + 1 :] = 1.0  # identity rows for padded coefficients (b = 0 there, so they solve to 0)
    xw = x * w.unsqueeze(-1)
    a = xw.transpose(1, 2) @ x + torch.diag_embed(penalty)
    b = (xw.transpose(1, 2) @ f.unsqueeze(-1)).squeeze(-1)
    chol, info = torch.linalg.cholesky_ex(a)
    solution = torch.cholesky_solve(b.unsqueeze(-1), chol).squeeze(-1)
    failed = torch.nonzero(info).flatten()
    if failed.numel():
        # Singular only when lambda = 0 and the design is rank-deficient: take the minimum-norm solution.
        solution[failed] = (torch.linalg.pinv(a[failed]) @ b[failed].unsqueeze(-1)).squeeze(-1)
    return solution[:, 1:], solution[:, 0]


def solve_weighted_ridge(
    designs: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    weights: Sequence[np.ndarray],
    ridge: float = DEFAULT_RIDGE,
) -> RidgeSolution:
    """Solve many weighted ridge regressions ``f ~ phi_0 + Z phi`` (intercept unpenalised) at once.

    ``designs[i]`` is ``[m_i, d_i]``, ``targets[i]`` and ``weights[i]`` are ``[m_i]``; systems may differ
    in both sizes. Returns coefficients ``[d_i]`` per system and the intercepts.
    """
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    n = len(designs)
    if not (len(targets) == len(weights) == n):
        raise ValueError("designs, targets and weights must have the same length")
    coefs: list[np.ndarray] = [np.zeros(0)] * n
    intercepts = np.zeros(n)
    start = 0
    while start < n:
        # Group systems so one padded chunk stays small; a single huge system is its own chunk.
        stop, size, m_max, d_max = start, 0, 0, 0
        while stop < n:
            m_max = max(m_max, designs[stop].shape[0])
            d_max = max(d_max, designs[stop].shape[1])
            size = (stop - start + 1) * m_max * (d_max + 1)
            if stop > start and size > _SOLVE_CHUNK_ELEMENTS:
                break
            stop += 1
        coef, icpt = _solve_chunk(designs[start:stop], targets[start:stop], weights[start:stop], ridge)
        for j, i in enumerate(range(start, stop)):
            coefs[i] = coef[j, : designs[i].shape[1]].numpy().copy()
        intercepts[start:stop] = icpt.numpy()
        start = stop
    return RidgeSolution(coefs, intercepts)


# --------------------------------------------------------------------------------------- cost counting


@dataclass
class CostReport:
    """What computing priors cost: texts the model/teacher scored, its calls, seconds, per utterance.

    ``tokens``: tokens the teacher ran through its model, when it reports them (an LLM teacher's
    ``cost.tokens``); 0 when it does not.
    """

    utterances: int = 0
    texts_scored: int = 0  # forward passes: one per distinct masked text
    calls: int = 0  # predict_proba invocations
    seconds: float = 0.0
    tokens: int = 0

    @property
    def texts_per_utterance(self) -> float:
        return self.texts_scored / self.utterances if self.utterances else 0.0

    @property
    def seconds_per_utterance(self) -> float:
        return self.seconds / self.utterances if self.utterances else 0.0

    @property
    def tokens_per_utterance(self) -> float:
        return self.tokens / self.utterances if self.utterances else 0.0

    def add(self, other: CostReport) -> None:
        self.utterances += other.utterances
        self.texts_scored += other.texts_scored
        self.calls += other.calls
        self.seconds += other.seconds
        self.tokens += other.tokens

    def minus(self, earlier: CostReport) -> CostReport:
        return CostReport(
            self.utterances - earlier.utterances,
            self.texts_scored - earlier.texts_scored,
            self.calls - earlier.calls,
            self.seconds - earlier.seconds,
            self.tokens - earlier.tokens,
        )

    def copy(self) -> CostReport:
        return CostReport(self.utterances, self.texts_scored, self.calls, self.seconds, self.tokens)

    def to_dict(self) -> dict:
        return {
            "utterances": self.utterances,
            "texts_scored": self.texts_scored,
            "calls": self.calls,
            "seconds": round(self.seconds, 6),
            "tokens": self.tokens,
            "texts_per_utterance": round(self.texts_per_utterance, 3),
            "seconds_per_utterance": round(self.seconds_per_utterance, 6),
            "tokens_per_utterance": round(self.tokens_per_utterance, 3),
        }


# ------------------------------------------------------------------------------ the shared explainer


ScoreFn = Callable[[list[str]], np.ndarray]
TargetFn = Callable[[np.ndarray, int], np.ndarray]


@dataclass
class MaskedScores:
    """What one masking pass produced for an utterance, before regression."""

    words: list[str]
    masks: MaskSet
    probs: np.ndarray  # [m, C] probabilities of every mask's text
    extra: dict = field(default_factory=dict)


class MaskingExplainer:
    """Perturb every utterance of a batch, score all masked texts in large calls, regress, return scores.

    ``score_fn(texts) -> [n, C]`` probabilities. ``target_fn(probs [m, C], target) -> [m]`` turns them into
    the regressed quantity. Subclasses (LIME, CAP) choose both.
    """

    name = "masking"

    def __init__(
        self,
        score_fn: ScoreFn,
        target_fn: TargetFn,
        *,
        n_masks: int,
        sigma: float = DEFAULT_SIGMA,
        ridge: float = DEFAULT_RIDGE,
        seed: int = 0,
        design: Design = "balanced",
        max_texts_per_call: int = 16_384,
    ):
        if n_masks < 1:
            raise ValueError(f"the number of masks must be >= 1, got {n_masks}")
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}")
        if design not in DESIGNS:
            raise ValueError(f"unknown mask design {design!r}; choose one of {DESIGNS}")
        self._score_fn = score_fn
        self._target_fn = target_fn
        self.n_masks = int(n_masks)
        self.sigma = float(sigma)
        self.ridge = float(ridge)
        self.seed = int(seed)
        self.design: Design = design
        self.max_texts_per_call = int(max_texts_per_call)
        self.cost = CostReport()

    def params(self) -> dict:
        """Everything that changes the output, for the prior store's key and run manifests."""
        return {
            "n_masks": self.n_masks,
            "sigma": self.sigma,
            "ridge": self.ridge,
            "seed": self.seed,
            "design": self.design,
        }

    def _score_unique(self, texts: list[str]) -> tuple[np.ndarray, int, int]:
        """Probabilities for ``texts``; each distinct text is scored once, in calls of bounded size."""
        index: dict[str, int] = {}
        unique: list[str] = []
        rows = np.empty(len(texts), dtype=np.int64)
        for i, t in enumerate(texts):
            j = index.get(t)
            if j is None:
                j = index[t] = len(unique)
                unique.append(t)
            rows[i] = j
        parts = []
        calls = 0
        for start in range(0, len(unique), self.max_texts_per_call):
            chunk = unique[start : start + self.max_texts_per_call]
            probs = np.asarray(self._score_fn(chunk), dtype=np.float64)
            if probs.ndim != 2 or probs.shape[0] != len(chunk):
                raise ValueError(
                    f"the scorer returned shape {probs.shape} for {len(chunk)} texts; want [n, C]"
                )
            parts.append(probs)
            calls += 1
        return np.concatenate(parts)[rows], len(unique), calls

    def masked_scores(self, texts: Sequence[str]) -> list[MaskedScores]:
        """Masks and scored probabilities for every utterance, all masked texts in a few large calls."""
        texts = list(texts)
        prepared = []
        all_texts: list[str] = []
        for text in texts:
            words = split_words(text)
            mask_set = sample_masks(len(words), self.n_masks, utterance_rng(self.seed, text), self.design)
            masked = [text]  # row 0 is all-ones: the original text (its probabilities are the soft labels)
            word_array = np.array(words, dtype=object)
            masked.extend(join_words(word_array[z].tolist()) for z in mask_set.masks[1:])
            prepared.append((words, mask_set, len(all_texts)))
            all_texts.extend(masked)
        probs, n_scored, calls = self._score_unique(all_texts) if all_texts else (np.zeros((0, 0)), 0, 0)
        self.cost.texts_scored += n_scored
        self.cost.calls += calls
        return [
            MaskedScores(words, mask_set, probs[offset : offset + len(mask_set)])
            for words, mask_set, offset in prepared
        ]

    def explain(
        self, texts: Sequence[str], targets: Sequence[int]
    ) -> tuple[list[WordAttribution], np.ndarray]:
        """Word attributions for ``texts`` w.r.t. ``targets``, and the probabilities of the unmasked texts."""
        texts, targets = list(texts), [int(t) for t in targets]
        if len(texts) != len(targets):
            raise ValueError(f"{len(texts)} texts but {len(targets)} targets")
        started = time.perf_counter()
        scored = self.masked_scores(texts)
        n_classes = scored[0].probs.shape[1] if scored else 0
        for t in targets:
            if not 0 <= t < n_classes:
                raise ValueError(f"target {t} outside the {n_classes} classes of the scorer")
        designs, values, weights = [], [], []
        for item, target in zip(scored, targets, strict=True):
            designs.append(item.masks.masks)
            values.append(self._target_fn(item.probs, target))
            weights.append(kernel_weights(item.masks.masks, self.sigma) * item.masks.counts)
        solution = solve_weighted_ridge(designs, values, weights, self.ridge)
        out = []
        for item, target, coef, icpt, f in zip(
            scored, targets, solution.coefs, solution.intercepts, values, strict=True
        ):
            meta = {
                "n_masks": len(item.masks),
                "enumerated": item.masks.enumerated,
                "intercept": float(icpt),
                "full_value": float(f[0]),
            }
            out.append(WordAttribution(item.words, coef, self.name, target, meta))
        soft = np.stack([s.probs[0] for s in scored]) if scored else np.zeros((0, n_classes))
        self.cost.utterances += len(texts)
        self.cost.seconds += time.perf_counter() - started
        return out, soft

    def attribute(self, texts: Sequence[str], targets: Sequence[int]) -> list[WordAttribution]:
        return self.explain(texts, targets)[0]
