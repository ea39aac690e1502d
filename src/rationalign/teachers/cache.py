"""A teacher that remembers its answers per text, so priors that score the same masked texts share them.

CAP and LIME draw their masks from ``(seed, text)`` alone, so with equal budgets they query the teacher
with exactly the same texts: through this cache the second method costs no teacher calls. Given a
:class:`~rationalign.attribution.store.PriorStore`, the answers are also written to the store's
``teacher_scores`` table (keyed by the teacher's fingerprint), so a later run or another process (LIME run
by hand a day after CAP, a resumed job, a second variant of a grid) reads them instead of asking again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from rationalign.teachers.base import Teacher

if TYPE_CHECKING:
    from rationalign.attribution.store import PriorStore


class CachedTeacher:
    """``teacher`` with a per-text memory; ``store`` (optional) makes that memory persistent.

    ``hits`` counts texts answered from memory, ``stored_hits`` texts read from the store and ``misses``
    texts the wrapped teacher scored."""

    def __init__(self, teacher: Teacher, store: PriorStore | None = None):
        self.teacher = teacher
        self.label_space = teacher.label_space
        self.store = store
        self._memo: dict[str, np.ndarray] = {}
        self._fingerprint: str | None = None
        self.hits = 0
        self.stored_hits = 0
        self.misses = 0

    @property
    def fingerprint(self) -> str:
        # same outputs as the wrapped teacher; read once (a classifier's means hashing its weights)
        if self._fingerprint is None:
            self._fingerprint = str(self.teacher.fingerprint)
        return self._fingerprint

    def text_counts(self) -> dict[str, int]:
        """Where the texts asked of this teacher so far were answered from (the costs' ``teacher_texts``)."""
        return {"from_memory": self.hits, "from_store": self.stored_hits, "scored": self.misses}

    def __getattr__(self, name: str):
        # clf, cost, ... of the wrapped teacher stay reachable
        return getattr(self.teacher, name)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        todo = list(dict.fromkeys(t for t in texts if t not in self._memo))
        self.hits += len(texts) - len(todo)
        if todo and self.store is not None:
            stored = self.store.get_scores(self.fingerprint, todo)
            found = {t: p for t, p in zip(todo, stored, strict=True) if p is not None}
            self._memo.update(found)
            self.stored_hits += len(found)
            todo = [t for t in todo if t not in found]
        self.misses += len(todo)
        if todo:
            probs = np.asarray(self.teacher.predict_proba(todo))
            if self.store is not None:
                self.store.put_scores(self.fingerprint, todo, probs)
            self._memo.update(zip(todo, probs, strict=True))
        if not texts:
            return np.zeros((0, len(self.label_space)))
        return np.stack([self._memo[t] for t in texts])
