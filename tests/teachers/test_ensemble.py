"""EnsembleTeacher and RuleSet, against hand-computed mixtures and a counting fake adjudicator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rationalign.data.types import LabelSpace
from rationalign.teachers import EnsembleTeacher, RuleSet, Teacher
from rationalign.teachers.errors import TeacherError, TeacherSpecError
from rationalign.teachers.rules import Rule

SPACE = LabelSpace(["card_arrival", "card_delivery_estimate", "lost_or_stolen_card"])


class FixedTeacher:
    """Returns a fixed row per text and counts what it was asked."""

    def __init__(self, rows: dict[str, list[float]], space: LabelSpace = SPACE, name: str = "fixed"):
        self.rows = rows
        self.label_space = space
        self.asked: list[list[str]] = []
        self.name = name

    def predict_proba(self, texts):
        self.asked.append(list(texts))
        return np.array([self.rows[t] for t in texts], dtype=np.float64)

    @property
    def fingerprint(self) -> str:
        return f"{self.name}:{sorted(self.rows.items())}"

    def __repr__(self) -> str:
        return f"FixedTeacher({self.name})"


A = FixedTeacher({"x": [0.7, 0.2, 0.1], "y": [0.1, 0.1, 0.8], "z": [0.4, 0.4, 0.2]}, name="a")
B = FixedTeacher({"x": [0.1, 0.8, 0.1], "y": [0.2, 0.2, 0.6], "z": [0.3, 0.5, 0.2]}, name="b")


def test_weighted_mixture_is_hand_computed():
    ens = EnsembleTeacher([(A, 1.0), (B, 3.0)])
    assert isinstance(ens, Teacher) and ens.label_space == SPACE
    probs = ens.predict_proba(["x", "y"])
    expected = np.array([[0.7 + 0.3, 0.2 + 2.4, 0.1 + 0.3], [0.1 + 0.6, 0.1 + 0.6, 0.8 + 1.8]]) / 4.0
    np.testing.assert_allclose(probs, expected, atol=1e-12)
    np.testing.assert_allclose(EnsembleTeacher([A]).predict_proba(["z"]), [[0.4, 0.4, 0.2]])
    # Unnormalised member rows are renormalised before mixing.
    loud = FixedTeacher({"x": [2.0, 0.0, 2.0]}, name="loud")
    np.testing.assert_allclose(
        EnsembleTeacher([(loud, 1.0), (A, 1.0)]).predict_proba(["x"]),
        [[(0.5 + 0.7) / 2, 0.1, (0.5 + 0.1) / 2]],
        atol=1e-12,
    )


def test_members_must_share_the_label_space():
    other = FixedTeacher({"x": [0.5, 0.5]}, LabelSpace(["card_arrival", "pin_blocked"]), name="other")
    with pytest.raises(
        TeacherError, match=r"different label space \(extra \['pin_blocked'\].*fix: build every teacher"
    ):
        EnsembleTeacher([A, other])
    reordered = FixedTeacher({}, LabelSpace(list(SPACE.names)[::-1]), name="reordered")
    with pytest.raises(TeacherError, match="same labels in another order"):
        EnsembleTeacher([A, reordered])
    with pytest.raises(TeacherError, match="label space"):
        EnsembleTeacher([A], adjudicator=other)
    with pytest.raises(TeacherError, match="at least one member"):
        EnsembleTeacher([])
    with pytest.raises(TeacherError, match="weights >= 0"):
        EnsembleTeacher([(A, -1.0)])


def test_bad_member_output_is_a_clear_error():
    bad = FixedTeacher({"x": [0.5, 0.5]}, name="bad")
    with pytest.raises(TeacherError, match=r"returned shape \(1, 2\), expected \(1, 3\)"):
        EnsembleTeacher([bad]).predict_proba(["x"])


def _rules_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(body, encoding="utf-8")
    return path


RULES = """\
epsilon: 0.1
rules:
  - label: lost_or_stolen_card
    patterns: ['\\bstolen\\b', 'lost my card']
  - label: card_arrival
    patterns: ['card']
"""


def test_rules_override_with_eps_spread_like_the_mixture(tmp_path):
    rules = RuleSet.from_yaml(_rules_file(tmp_path, RULES), SPACE)
    assert len(rules) == 2 and rules.epsilon == 0.1
    assert rules.match("My card was STOLEN") == "lost_or_stolen_card"  # first rule wins, case-insensitive
    assert rules.match("where is my card") == "card_arrival" and rules.match("hello") is None
    rows = {"stolen card": [0.6, 0.3, 0.1], "hello": [0.6, 0.3, 0.1]}
    ens = EnsembleTeacher([FixedTeacher(rows)], rules=rules)
    probs = ens.predict_proba(["stolen card", "hello"])
    # The hit: 0.9 on the rule's label, the other 0.1 split 0.6 : 0.3 like the mixture.
    np.testing.assert_allclose(probs[0], [0.1 * 0.6 / 0.9, 0.1 * 0.3 / 0.9, 0.9], atol=1e-12)
    np.testing.assert_allclose(probs[1], [0.6, 0.3, 0.1], atol=1e-12)
    assert ens.stats.rule_hits == 1 and ens.stats.texts == 2


def test_rule_files_fail_with_file_line_and_fix(tmp_path):
    cases = [
        ("rules:\n  - label: card_arrival\n    patterns: ['(unclosed']\n", 2, "bad regular expression"),
        (
            "rules:\n  - label: card_arrival\n    patterns: ['ok']\n  - label: nope\n    patterns: ['x']\n",
            4,
            "label 'nope' is not in the label space",
        ),
        ("rules:\n  - patterns: ['x']\n", 2, "needs a 'label'"),
        ("epsilon: lots\nrules: []\n", 1, "epsilon is not a number"),
        ("rules: [\n", None, "not valid YAML"),
        ("rule:\n  - label: x\n", 1, "unknown keys"),
    ]
    for body, line, problem in cases:
        path = _rules_file(tmp_path, body)
        with pytest.raises(TeacherSpecError) as info:
            RuleSet.from_yaml(path, SPACE)
        message = str(info.value)
        where = f"{path}:{line}: " if line else f"{path}:"
        assert message.startswith(where) and problem in message and "; fix: " in message, message
        assert "\n" not in message
    with pytest.raises(TeacherError, match="not in the teacher's label space"):
        EnsembleTeacher([A], rules=RuleSet([Rule("pin_blocked", ("pin",))]))


def test_adjudicator_is_asked_only_about_close_calls():
    # margins: x 0.3 (sure), y 0.1 (close), z 0.0 (close) under the mixture of A alone.
    rows = {"x": [0.6, 0.3, 0.1], "y": [0.45, 0.35, 0.2], "z": [0.4, 0.4, 0.2]}
    judge = FixedTeacher({"y": [0.0, 1.0, 0.0], "z": [0.0, 0.0, 1.0]}, name="judge")
    ens = EnsembleTeacher(
        [FixedTeacher(rows)], adjudicator=judge, margin_threshold=0.2, adjudicator_weight=0.25
    )
    probs = ens.predict_proba(["x", "y", "z"])
    assert judge.asked == [["y", "z"]]  # one batched call with only the close calls
    np.testing.assert_allclose(probs[0], rows["x"], atol=1e-12)
    np.testing.assert_allclose(probs[1], 0.75 * np.array(rows["y"]) + 0.25 * np.array([0, 1, 0]), atol=1e-12)
    np.testing.assert_allclose(probs[2], 0.75 * np.array(rows["z"]) + 0.25 * np.array([0, 0, 1]), atol=1e-12)
    assert ens.stats.adjudicated == 2 and ens.stats.adjudicator_calls == 1
    ens.predict_proba(["x"])
    assert ens.stats.adjudicator_calls == 1  # nothing close: not called at all


def test_rule_hits_are_not_adjudicated(tmp_path):
    rows = {"lost my card": [0.34, 0.33, 0.33], "hmm": [0.34, 0.33, 0.33]}
    judge = FixedTeacher({"hmm": [1.0, 0.0, 0.0]}, name="judge")
    rules = RuleSet.from_yaml(_rules_file(tmp_path, RULES), SPACE)
    ens = EnsembleTeacher([FixedTeacher(rows)], rules=rules, adjudicator=judge)
    ens.predict_proba(["lost my card", "hmm"])
    assert judge.asked == [["hmm"]] and ens.stats.rule_hits == 1


def test_fingerprint_tracks_members_weights_rules_and_adjudicator(tmp_path):
    rules = RuleSet.from_yaml(_rules_file(tmp_path, RULES), SPACE)
    prints = {
        EnsembleTeacher([(A, 1.0), (B, 1.0)]).fingerprint,
        EnsembleTeacher([(A, 1.0), (B, 2.0)]).fingerprint,
        EnsembleTeacher([(A, 1.0), (B, 1.0)], rules=rules).fingerprint,
        EnsembleTeacher([(A, 1.0), (B, 1.0)], adjudicator=B).fingerprint,
        EnsembleTeacher([(A, 1.0), (B, 1.0)], adjudicator=B, margin_threshold=0.1).fingerprint,
    }
    assert len(prints) == 5
    assert EnsembleTeacher([(A, 1.0), (B, 1.0)]).fingerprint == EnsembleTeacher([A, B]).fingerprint


def test_ensemble_of_real_teachers(tiny_teacher, small_space, texts):
    """An LLM teacher and a rule together: rows stay distributions, rule texts get the rule's label."""
    rules = RuleSet([Rule("lost_or_stolen_card", (r"\bstole",))], epsilon=0.05)
    ens = EnsembleTeacher([(tiny_teacher, 1.0)], rules=rules, adjudicator=tiny_teacher, margin_threshold=1.0)
    probs = ens.predict_proba(texts)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
    stolen = texts.index("someone stole my card")
    assert probs[stolen].argmax() == small_space.id("lost_or_stolen_card")
    assert ens.stats.adjudicated == len(texts) - 1  # threshold 1.0: every non-rule text is adjudicated
