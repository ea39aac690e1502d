"""CAP, the class-aware attribution prior: word masking scored by a teacher over the full label space.

Each masked utterance is scored by the teacher over *every* label, and the regressed quantity is by default
the class-aware margin ``f(z) = log p(y | x_z) - log max_{c != y} p(c | x_z)``: a word scores high when
deleting it lowers the gold class *relative to its closest competitor*, which is what separates
near-duplicate intents (``alarm_set`` vs ``alarm_query``) instead of rewarding the keyword they share.
Masks, kernel and the batched Cholesky ridge solver are shared with LIME (:mod:`.masks`). The unmasked
text is always scored (mask row 0), so the teacher's soft labels come at no extra cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from rationalign.attribution.base import WordAttribution
from rationalign.attribution.masks import DEFAULT_RIDGE, DEFAULT_SIGMA, CostReport, Design, MaskingExplainer
from rationalign.teachers.base import Teacher

CapTarget = Literal["margin", "logprob", "prob"]
CAP_TARGETS: tuple[str, ...] = ("margin", "logprob", "prob")
# Probabilities are clipped here before logs: a teacher may return exact zeros.
LOG_FLOOR = 1e-12


def class_aware_target(probs: np.ndarray, target: int, kind: CapTarget = "margin") -> np.ndarray:
    """The regressed value per mask: margin against the most confusable class, log-prob or prob of ``target``."""
    p = np.asarray(probs, dtype=np.float64)
    if kind == "prob":
        return p[:, target]
    gold = np.log(np.clip(p[:, target], LOG_FLOOR, None))
    if kind == "logprob":
        return gold
    if kind == "margin":
        if p.shape[1] < 2:
            raise ValueError("the margin target needs at least two classes")
        others = p.copy()
        others[:, target] = -np.inf
        return gold - np.log(np.clip(others.max(axis=1), LOG_FLOOR, None))
    raise ValueError(f"unknown CAP target {kind!r}; choose one of {CAP_TARGETS}")


def _teacher_tokens(teacher: object) -> int | None:
    """Tokens the teacher has run so far, if it counts them (``LLMTeacher.cost.tokens``)."""
    tokens = getattr(getattr(teacher, "cost", None), "tokens", None)
    return int(tokens) if isinstance(tokens, int | np.integer) else None


class CAPPrior:
    """Class-aware attribution prior from any :class:`~rationalign.teachers.base.Teacher`.

    ``n_masks``: mask budget per utterance (paper range 32-256; distinct masks are scored once).
    ``target``: ``"margin"`` (default), ``"logprob"`` or ``"prob"`` of the gold class. ``batch_size``:
    the most masked texts sent to the teacher in one ``predict_proba`` call. ``cost`` accumulates what
    every call so far cost (texts scored, calls, seconds, per utterance).
    """

    name = "cap"

    def __init__(
        self,
        teacher: Teacher,
        n_masks: int = 64,
        target: CapTarget = "margin",
        *,
        sigma: float = DEFAULT_SIGMA,
        ridge: float = DEFAULT_RIDGE,
        seed: int = 0,
        batch_size: int = 4096,
        design: Design = "balanced",
    ):
        if target not in CAP_TARGETS:
            raise ValueError(f"unknown CAP target {target!r}; choose one of {CAP_TARGETS}")
        if not callable(getattr(teacher, "predict_proba", None)):
            raise TypeError(f"{type(teacher).__name__} is not a Teacher (no predict_proba)")
        self.teacher = teacher
        self.target = target
        self.batch_size = batch_size

        def score(texts: list[str]) -> np.ndarray:
            before = _teacher_tokens(teacher)
            probs = np.asarray(teacher.predict_proba(texts))
            after = _teacher_tokens(teacher)
            if before is not None and after is not None:
                self._engine.cost.tokens += after - before
            return probs

        def regressed(probs: np.ndarray, gold: int) -> np.ndarray:
            return class_aware_target(probs, gold, target)

        self._engine = MaskingExplainer(
            score,
            regressed,
            n_masks=n_masks,
            sigma=sigma,
            ridge=ridge,
            seed=seed,
            design=design,
            max_texts_per_call=batch_size,
        )
        self._engine.name = self.name

    @property
    def n_masks(self) -> int:
        return self._engine.n_masks

    @property
    def cost(self) -> CostReport:
        return self._engine.cost

    @property
    def fingerprint(self) -> str:
        return str(self.teacher.fingerprint)

    def params(self) -> dict:
        return {"target": self.target, **self._engine.params()}

    def attribute(self, texts: Sequence[str], targets: Sequence[int]) -> list[WordAttribution]:
        return self._engine.attribute(texts, targets)

    def attribute_with_soft_labels(
        self, texts: Sequence[str], targets: Sequence[int]
    ) -> tuple[list[WordAttribution], np.ndarray]:
        """Attributions and the teacher's probabilities ``[n, |Y|]`` on the unmasked texts (no extra calls)."""
        return self._engine.explain(texts, targets)
