import numpy as np

from rationalign.data.types import LabelSpace
from rationalign.teachers.cache import CachedTeacher


class CountingTeacher:
    label_space = LabelSpace(["a", "b"])
    fingerprint = "f"

    def __init__(self):
        self.seen: list[str] = []

    def predict_proba(self, texts):
        self.seen.extend(texts)
        return np.array([[len(t) % 2, 1 - len(t) % 2] for t in texts], dtype=float)


def test_each_text_is_scored_once():
    inner = CountingTeacher()
    cached = CachedTeacher(inner)
    first = cached.predict_proba(["ab", "abc", "ab"])
    second = cached.predict_proba(["abc", "x"])
    assert inner.seen == ["ab", "abc", "x"]
    np.testing.assert_array_equal(first, [[0, 1], [1, 0], [0, 1]])
    np.testing.assert_array_equal(second, [[1, 0], [1, 0]])
    assert (cached.hits, cached.misses) == (2, 3) and cached.fingerprint == "f"
