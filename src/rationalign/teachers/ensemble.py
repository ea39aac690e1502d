"""``EnsembleTeacher``: weighted mixture of teachers, rule overrides, and an adjudicator for close calls.

For each text, in this order:

1. mixture: ``p = sum_i w_i p_i / sum_i w_i`` over the members (weights > 0);
2. rules: a :class:`~rationalign.teachers.rules.RuleSet` hit sets ``p = (1 - eps) onehot + eps q``;
3. adjudication: texts without a rule hit whose margin ``p_top1 - p_top2 < margin_threshold`` are sent
   to the adjudicator teacher (ONLY those texts, in one batched call), and
   ``p = (1 - adjudicator_weight) p + adjudicator_weight p_adj``.

The output rows are the soft labels the student learns from. :attr:`EnsembleTeacher.stats` counts texts,
rule hits and adjudicator consultations.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rationalign.data.types import LabelSpace
from rationalign.teachers.errors import TeacherError
from rationalign.teachers.rules import RuleSet


@dataclass
class EnsembleStats:
    texts: int = 0
    rule_hits: int = 0
    adjudicated: int = 0  # texts the adjudicator was asked about
    adjudicator_calls: int = 0  # predict_proba calls made to the adjudicator

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def margins(probs: np.ndarray) -> np.ndarray:
    """top-1 minus top-2 probability per row (1.0 for a one-label space)."""
    if probs.shape[1] < 2:
        return np.ones(len(probs))
    part = np.partition(probs, -2, axis=1)
    return part[:, -1] - part[:, -2]


def _check_rows(name: str, probs: np.ndarray, n: int, k: int) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (n, k):
        raise TeacherError(
            f"{name} returned shape {probs.shape}, expected ({n}, {k}); fix: check the teacher"
        )
    if not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise TeacherError(f"{name} returned negative or non-finite probabilities; fix: check the teacher")
    sums = probs.sum(axis=1, keepdims=True)
    if np.any(sums <= 0):
        raise TeacherError(f"{name} returned an all-zero row; fix: check the teacher")
    return probs / sums


class EnsembleTeacher:
    """Mixture of teachers + rules + adjudicator (see the module docstring). Members are ``(teacher, weight)``
    pairs or bare teachers (weight 1). All must share one label space (same names, same order)."""

    def __init__(
        self,
        members: Sequence[Any],
        rules: RuleSet | None = None,
        adjudicator: Any = None,
        margin_threshold: float = 0.2,
        adjudicator_weight: float = 0.5,
    ):
        pairs = [m if isinstance(m, tuple) else (m, 1.0) for m in members]
        if not pairs:
            raise TeacherError(
                "an ensemble needs at least one member; fix: pass members=[(teacher, weight), ...]"
            )
        for teacher, weight in pairs:
            if not np.isfinite(weight) or weight < 0:
                raise TeacherError(f"member {teacher!r} has weight {weight}; fix: use weights >= 0")
        if sum(w for _, w in pairs) <= 0:
            raise TeacherError("all member weights are zero; fix: give at least one member a positive weight")
        if not 0.0 <= adjudicator_weight <= 1.0:
            raise TeacherError(
                f"adjudicator_weight must be in [0, 1], got {adjudicator_weight}; fix: e.g. 0.5"
            )
        if not 0.0 <= margin_threshold <= 1.0:
            raise TeacherError(f"margin_threshold must be in [0, 1], got {margin_threshold}; fix: e.g. 0.2")
        space: LabelSpace = pairs[0][0].label_space
        others = [t for t, _ in pairs[1:]] + ([adjudicator] if adjudicator is not None else [])
        for teacher in others:
            if teacher.label_space != space:
                raise TeacherError(self._mismatch(space, teacher))
        if rules is not None:
            rules.check(space)
        self.members = pairs
        self.label_space = space
        self.rules = rules
        self.adjudicator = adjudicator
        self.margin_threshold = float(margin_threshold)
        self.adjudicator_weight = float(adjudicator_weight)
        self.stats = EnsembleStats()

    @staticmethod
    def _mismatch(space: LabelSpace, teacher: Any) -> str:
        other: LabelSpace = teacher.label_space
        if set(other.names) == set(space.names):
            problem = "lists the same labels in another order"
        else:
            extra = sorted(set(other.names) - set(space.names))[:3]
            lacking = sorted(set(space.names) - set(other.names))[:3]
            problem = f"has a different label space (extra {extra}, lacking {lacking})"
        return (
            f"ensemble member {teacher!r} {problem} than the first member ({len(space)} labels); fix: build "
            "every teacher with the same LabelSpace (same names, same order)"
        )

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        n, k = len(texts), len(self.label_space)
        if n == 0:
            return np.zeros((0, k))
        total = sum(w for _, w in self.members)
        mix = np.zeros((n, k))
        for teacher, weight in self.members:
            if weight == 0:
                continue
            mix += weight * _check_rows(repr(teacher), teacher.predict_proba(texts), n, k)
        mix /= total
        hits = np.zeros(n, dtype=bool)
        if self.rules is not None:
            mix, hits = self.rules.apply(texts, mix, self.label_space)
        self.stats.texts += n
        self.stats.rule_hits += int(hits.sum())
        if self.adjudicator is not None and self.adjudicator_weight > 0:
            ask = np.flatnonzero(~hits & (margins(mix) < self.margin_threshold))
            if ask.size:
                adj = _check_rows(
                    repr(self.adjudicator),
                    self.adjudicator.predict_proba([texts[i] for i in ask]),
                    ask.size,
                    k,
                )
                a = self.adjudicator_weight
                mix[ask] = (1 - a) * mix[ask] + a * adj
                self.stats.adjudicated += int(ask.size)
                self.stats.adjudicator_calls += 1
        return mix / mix.sum(axis=1, keepdims=True)

    @property
    def fingerprint(self) -> str:
        spec = {
            "kind": "ensemble",
            "members": [[t.fingerprint, repr(float(w))] for t, w in self.members],
            "rules": self.rules.fingerprint if self.rules is not None else None,
            "adjudicator": self.adjudicator.fingerprint if self.adjudicator is not None else None,
            "margin_threshold": self.margin_threshold,
            "adjudicator_weight": self.adjudicator_weight,
        }
        return hashlib.sha256(json.dumps(spec).encode()).hexdigest()

    def __repr__(self) -> str:
        return f"EnsembleTeacher({len(self.members)} members, rules={len(self.rules) if self.rules else 0}, adjudicator={self.adjudicator is not None})"
