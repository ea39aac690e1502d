"""CAP-Hybrid: fuse several word priors (CAP, LIME, IG, ...) into one per utterance.

Each prior is first normalised per utterance the same way (default ``"sum"``: clip negatives, divide by
the sum; ``"minmax"``; ``"softmax"`` with a temperature), then fused word by word by ``"mean"``, ``"max"``
or ``"weighted"`` mean (``weights`` per method, normalised to sum 1). The fused scores are not normalised
again: a mean of sum-normalised maps already sums to 1; a max does not, and the alignment loss normalises
its inputs itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Literal

import numpy as np

from rationalign.attribution.base import Attributor, Normalisation, WordAttribution
from rationalign.attribution.base import normalise as normalise_scores

Fusion = Literal["mean", "max", "weighted"]
FUSIONS: tuple[str, ...] = ("mean", "max", "weighted")
NORMALISATIONS: tuple[str, ...] = ("sum", "minmax", "softmax")


def _check_weights(how: str, weights: Sequence[float] | None, n_methods: int) -> np.ndarray | None:
    if how not in FUSIONS:
        raise ValueError(f"unknown fusion {how!r}; choose one of {FUSIONS}")
    if how != "weighted":
        if weights is not None:
            raise ValueError(f"weights are only used with how='weighted', not {how!r}")
        return None
    if weights is None:
        raise ValueError("how='weighted' needs one weight per method")
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_methods,):
        raise ValueError(f"{w.size} weights for {n_methods} methods; give one per method")
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {list(w)}")
    return w / w.sum()


def fuse(
    attributions: Sequence[Sequence[WordAttribution]],
    how: Fusion = "mean",
    weights: Sequence[float] | None = None,
    normalise: Normalisation = "sum",
    *,
    temperature: float = 1.0,
    method: str = "cap-hybrid",
) -> list[WordAttribution]:
    """Fuse ``attributions[m][i]`` (method ``m``, utterance ``i``) into one attribution per utterance.

    Every method must cover the same utterances with the same words and targets (a clear ``ValueError``
    says which one differs, and where).
    """
    if normalise not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalise!r}; choose one of {NORMALISATIONS}")
    if not attributions:
        raise ValueError("nothing to fuse: give at least one method's attributions")
    w = _check_weights(how, weights, len(attributions))
    n = len(attributions[0])
    for m, per_method in enumerate(attributions):
        if len(per_method) != n:
            raise ValueError(f"method #{m} has {len(per_method)} utterances, method #0 has {n}")
    fused: list[WordAttribution] = []
    for i in range(n):
        items = [per_method[i] for per_method in attributions]
        first = items[0]
        for m, item in enumerate(items[1:], start=1):
            if item.words != first.words:
                raise ValueError(
                    f"utterance {i}: method #{m} ({item.method}) has words {item.words}, method #0 "
                    f"({first.method}) has {first.words}; every prior must use the same segmentation"
                )
            if item.target != first.target:
                raise ValueError(
                    f"utterance {i}: method #{m} ({item.method}) explains target {item.target}, "
                    f"method #0 ({first.method}) target {first.target}"
                )
        stacked = np.stack([normalise_scores(item.scores, normalise, temperature) for item in items])
        if stacked.shape[1] == 0:
            scores = np.zeros(0)
        elif how == "mean":
            scores = stacked.mean(axis=0)
        elif how == "max":
            scores = stacked.max(axis=0)
        else:
            scores = w @ stacked
        meta = {
            "components": [item.method for item in items],
            "how": how,
            "normalise": normalise,
        }
        if w is not None:
            meta["weights"] = [float(x) for x in w]
        fused.append(WordAttribution(list(first.words), scores, method, first.target, meta))
    return fused


class HybridPrior:
    """An attributor that runs other attributors on the same inputs and fuses their priors (CAP-Hybrid)."""

    name = "cap-hybrid"

    def __init__(
        self,
        components: Sequence[Attributor],
        how: Fusion = "mean",
        weights: Sequence[float] | None = None,
        normalise: Normalisation = "sum",
        *,
        temperature: float = 1.0,
    ):
        if not components:
            raise ValueError("a hybrid prior needs at least one component attributor")
        if normalise not in NORMALISATIONS:
            raise ValueError(f"unknown normalisation {normalise!r}; choose one of {NORMALISATIONS}")
        w = _check_weights(how, weights, len(components))
        self.components = list(components)
        self.how: Fusion = how
        self.weights = None if w is None else [float(x) for x in np.asarray(weights, dtype=np.float64)]
        self.normalise: Normalisation = normalise
        self.temperature = float(temperature)

    @property
    def fingerprint(self) -> str:
        parts = [f"{c.name}:{getattr(c, 'fingerprint', '?')}" for c in self.components]
        return "hybrid:" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]

    def params(self) -> dict:
        components = []
        for c in self.components:
            params = c.params() if callable(getattr(c, "params", None)) else {}
            components.append({"name": c.name, "params": params})
        return {
            "how": self.how,
            "weights": self.weights,
            "normalise": self.normalise,
            "temperature": self.temperature,
            "components": json.loads(json.dumps(components, sort_keys=True, default=str)),
        }

    def attribute(self, texts: Sequence[str], targets: Sequence[int]) -> list[WordAttribution]:
        texts, targets = list(texts), list(targets)
        per_method = [c.attribute(texts, targets) for c in self.components]
        return fuse(
            per_method,
            self.how,
            self.weights,
            self.normalise,
            temperature=self.temperature,
            method="cap-hybrid",
        )
