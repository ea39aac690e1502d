"""The divergence queue: what enters it, the JSONL round trip, and reviewed items as training data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rationalign.attribution.base import WordAttribution
from rationalign.attribution.words import split_words
from rationalign.data.types import IntentDataset, LabelSpace
from rationalign.errors import DataError
from rationalign.evaluation.divergence import (
    build_divergence_queue,
    divergence_queue,
    load_reviewed_queue,
    read_queue,
    write_queue,
)


def wa(text: str, scores: list[float], target: int = 0) -> WordAttribution:
    return WordAttribution(split_words(text), np.array(scores, dtype=float), "x", target)


def test_queue_takes_label_and_rationale_disagreements():
    texts = ["block my card", "set an alarm", "check alarms", "one"]
    queue = build_divergence_queue(
        texts,
        ["card_block", "alarm_set", "alarm_query", "card_block"],
        ["card_block", "alarm_set", "alarm_set", "card_block"],
        ["card_block", "alarm_set", "alarm_query", "card_activate"],
        [wa(texts[0], [1, 0, 2]), wa(texts[1], [3, 2, 1]), wa(texts[2], [1, 2]), wa(texts[3], [1])],
        [wa(texts[0], [1, 0, 2]), wa(texts[1], [1, 2, 3]), wa(texts[2], [1, 2]), wa(texts[3], [5])],
        min_fidelity=0.3,
    )
    assert [(q.text, q.reason) for q in queue] == [
        ("set an alarm", "rationale"),  # Spearman -1
        ("check alarms", "label"),  # same rationale, different label
        ("one", "label"),  # one word: fidelity undefined (None), label differs
    ]
    assert queue[0].fidelity == pytest.approx(-1.0) and queue[2].fidelity is None
    record = queue[0].to_dict()
    assert list(record)[:9] == [
        "text",
        "label",
        "student_label",
        "teacher_label",
        "student_rationale",
        "teacher_rationale",
        "fidelity",
        "reason",
        "reviewed",
    ]
    assert (
        record["student_rationale"] == [["set", 3.0], ["an", 2.0], ["alarm", 1.0]]
        and record["reviewed"] is False
    )


def test_queue_input_errors():
    with pytest.raises(DataError, match="different lengths"):
        build_divergence_queue(["a"], [], [], [], [], [])
    with pytest.raises(DataError, match="differ from teacher words"):
        build_divergence_queue(["a b"], ["y"], ["y"], ["y"], [wa("a b", [1, 2])], [wa("a c", [1, 2])])


def test_round_trip_and_reviewed_items_become_training_data(tmp_path):
    texts = ["set an alarm", "check alarms", "wake me up"]
    queue = build_divergence_queue(
        texts, ["alarm_set"] * 3, ["alarm_set"] * 3, ["alarm_query"] * 3, [None] * 3, [None] * 3
    )
    assert len(queue) == 3
    path = write_queue(tmp_path / "queue.jsonl", queue)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [n for n, _ in read_queue(path)] == [1, 2, 3]
    lines[0]["reviewed"] = True  # label kept
    lines[1].update(reviewed=True, corrected_label="alarm_query")
    lines[2].update(reviewed=True, drop=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + "\n")
    ds = load_reviewed_queue(path, LabelSpace(["alarm_query", "alarm_set"]))
    assert [(e.text, e.label) for e in ds] == [("set an alarm", "alarm_set"), ("check alarms", "alarm_query")]
    assert ds[1].line == 2 and ds[1].source == str(path)
    lines[1]["corrected_label"] = "nonsense"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(DataError, match=r"queue.jsonl:2: label 'nonsense'"):
        load_reviewed_queue(path, LabelSpace(["alarm_query", "alarm_set"]))


def test_reviewed_queue_bad_input(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"text": "a", "label": "y", "reviewed": false}\n')
    with pytest.raises(DataError, match="no reviewed items"):
        load_reviewed_queue(path)
    path.write_text('{"text": "a", "label": "y", "reviewed": "yes"}\n')
    with pytest.raises(DataError, match=r"q.jsonl:1: 'reviewed' must be true or false"):
        load_reviewed_queue(path)
    path.write_text('{"text": "a", "label": "y", "reviewed": true}\n{oops\n')
    with pytest.raises(DataError, match=r"q.jsonl:2: malformed JSON"):
        load_reviewed_queue(path)
    path.write_text('{"label": "y", "reviewed": true}\n')
    with pytest.raises(DataError, match=r"q.jsonl:1: missing text"):
        load_reviewed_queue(path)
    with pytest.raises(DataError, match="no such queue"):
        load_reviewed_queue(tmp_path / "none.jsonl")


class ConstantTeacher:
    def __init__(self, space: LabelSpace, label: str):
        self.label_space = space
        self.label = label

    def predict_proba(self, texts):
        probs = np.zeros((len(texts), len(self.label_space)))
        probs[:, self.label_space.id(self.label)] = 1.0
        return probs


def test_queue_from_a_student_and_a_teacher(tiny_classifier):
    space = tiny_classifier.label_space
    ds = IntentDataset.from_pairs([("block my card", "card_block"), ("set an alarm", "alarm_set")])
    student_ids = tiny_classifier.logits(ds.texts).argmax(-1).tolist()
    teacher = ConstantTeacher(space, space.name(student_ids[0]))
    priors = [
        wa(t, list(range(len(split_words(t)))), target=space.id(y))
        for t, y in zip(ds.texts, ds.labels, strict=True)
    ]
    queue = divergence_queue(tiny_classifier, teacher, ds, priors, min_fidelity=-1.0)
    expected = [t for t, i in zip(ds.texts, student_ids, strict=True) if i != student_ids[0]]
    assert [q.text for q in queue] == expected  # only label disagreements at min_fidelity = -1
    assert all(q.teacher_label == space.name(student_ids[0]) for q in queue)
    with pytest.raises(DataError, match="label space"):
        divergence_queue(tiny_classifier, ConstantTeacher(LabelSpace(["x"]), "x"), ds, priors)
