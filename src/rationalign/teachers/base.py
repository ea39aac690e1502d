"""The teacher protocol: anything that gives a probability distribution over the full label space."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from rationalign.data.types import LabelSpace


@runtime_checkable
class Teacher(Protocol):
    label_space: LabelSpace

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Return an ``[n, |Y|]`` array whose rows sum to one. Implementations batch internally."""
        ...

    @property
    def fingerprint(self) -> str:
        """A short hash that changes whenever the teacher's outputs could change."""
        ...
