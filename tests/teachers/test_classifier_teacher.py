"""ClassifierTeacher: batched soft labels from an IntentClassifier, and a fingerprint that tracks its outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rationalign.data.types import LabelSpace
from rationalign.models.classifier import IntentClassifier
from rationalign.teachers import ClassifierTeacher, Teacher, load_teacher
from rationalign.teachers.errors import TeacherSpecError

TEXTS = ["block my card", "set an alarm for 7", "which alarm is set", "turn on my card", "hello there"] * 3


@pytest.fixture()
def clf(tiny_label_space):
    return IntentClassifier.tiny(tiny_label_space, arch="bert", seed=0)


def test_probabilities_match_the_classifier_and_are_batched(clf):
    teacher = ClassifierTeacher(clf, batch_size=4)
    assert isinstance(teacher, Teacher) and teacher.label_space == clf.label_space
    probs = teacher.predict_proba(TEXTS)
    assert probs.shape == (len(TEXTS), len(clf.label_space)) and probs.dtype == np.float64
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(probs, clf.predict_proba(TEXTS, batch_size=64), atol=1e-6)
    np.testing.assert_allclose(ClassifierTeacher(clf, batch_size=1).predict_proba(TEXTS), probs, atol=1e-6)
    assert teacher.predict_proba([]).shape == (0, len(clf.label_space))


def test_temperature_is_applied(clf):
    base = ClassifierTeacher(clf).predict_proba(TEXTS)
    clf.temperature = 0.25
    sharp = ClassifierTeacher(clf).predict_proba(TEXTS)
    assert (sharp.max(1) > base.max(1)).all()


def test_loads_from_a_saved_folder_with_the_same_outputs_and_fingerprint(clf, tmp_path):
    folder = clf.save(tmp_path / "model")
    live, loaded = ClassifierTeacher(clf), ClassifierTeacher(folder)
    np.testing.assert_allclose(loaded.predict_proba(TEXTS), live.predict_proba(TEXTS), atol=1e-6)
    assert loaded.fingerprint == live.fingerprint
    spec = load_teacher(f"model:{folder}", clf.label_space)
    assert spec.fingerprint == live.fingerprint
    assert load_teacher(f"classifier:{folder}").fingerprint == live.fingerprint
    with pytest.raises(TeacherSpecError, match="label space"):
        load_teacher(f"model:{folder}", LabelSpace(["a", "b"]))


def test_fingerprint_changes_with_weights_temperature_and_label_space(clf, tiny_label_space):
    teacher = ClassifierTeacher(clf)
    first = teacher.fingerprint
    assert teacher.fingerprint == first  # stable (and memoised)
    clf.temperature = 2.0
    warm = teacher.fingerprint
    assert warm != first
    with torch.no_grad():
        next(clf.model.parameters()).add_(1e-3)  # in-place, as an optimiser step would
    assert teacher.fingerprint != warm
    renamed = LabelSpace([f"x_{n}" for n in tiny_label_space])
    other = IntentClassifier(clf.model, clf.tokenizer, renamed, pooling=clf.pooling, temperature=2.0)
    assert ClassifierTeacher(other).fingerprint != teacher.fingerprint
    assert ClassifierTeacher(IntentClassifier.tiny(tiny_label_space, seed=1)).fingerprint != first
