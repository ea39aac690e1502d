"""A teacher that remembers its answers per text, so priors that score the same masked texts share them.

CAP and LIME draw their masks from ``(seed, text)`` alone, so with equal budgets they query the teacher
with exactly the same texts: through this cache the second method costs no teacher calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rationalign.teachers.base import Teacher


class CachedTeacher:
    def __init__(self, teacher: Teacher):
        self.teacher = teacher
        self.label_space = teacher.label_space
        self._memo: dict[str, np.ndarray] = {}
        self.hits = 0
        self.misses = 0

    @property
    def fingerprint(self) -> str:
        return self.teacher.fingerprint  # same outputs as the wrapped teacher

    def __getattr__(self, name: str):
        # clf, cost, ... of the wrapped teacher stay reachable
        return getattr(self.teacher, name)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        todo = list(dict.fromkeys(t for t in texts if t not in self._memo))
        self.hits += len(texts) - len(todo)
        self.misses += len(todo)
        if todo:
            probs = np.asarray(self.teacher.predict_proba(todo))
            self._memo.update(zip(todo, probs, strict=True))
        if not texts:
            return np.zeros((0, len(self.label_space)))
        return np.stack([self._memo[t] for t in texts])
