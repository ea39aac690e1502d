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


class Float32Teacher(CountingTeacher):
    fingerprint = "f32"

    def predict_proba(self, texts):
        self.seen.extend(texts)
        rng = np.random.default_rng([len(t) for t in texts])
        return rng.dirichlet(np.ones(2), size=len(texts)).astype(np.float32)


def test_a_store_keeps_the_answers_for_the_next_process(tmp_path):
    from rationalign.attribution.store import PriorStore

    texts = ["my card", "my [MASK]", "lost card"]
    with PriorStore(tmp_path / "p.sqlite") as store:
        first_inner = Float32Teacher()
        first = CachedTeacher(first_inner, store=store).predict_proba(texts)
    with PriorStore(tmp_path / "p.sqlite") as store:  # reopened, as a later run would
        later_inner = Float32Teacher()
        later = CachedTeacher(later_inner, store=store)
        again = later.predict_proba([*texts, "new text"])
        assert later_inner.seen == ["new text"]  # only the unseen text reaches the teacher
        assert (later.stored_hits, later.misses, later.hits) == (3, 1, 0)
        # the very bits the teacher returned, in its own dtype
        assert again.dtype == np.float32 and again[:3].tobytes() == first.tobytes()
        # another teacher's fingerprint never reads these answers
        other = CountingTeacher()
        CachedTeacher(other, store=store).predict_proba(texts)
        assert other.seen == texts
        assert store.count_scores(fingerprint="f32") == 4 and store.count_scores() == 7
