"""The divergence queue: utterances where the student and the teacher disagree, for human review.

An utterance enters the queue when the student's label differs from the teacher's (``reason:
"label"``), or when the Spearman correlation of their word rationales is below ``min_fidelity``
(``reason: "rationale"``; both reasons: ``"label+rationale"``). Each queue line is

    {"text", "label", "student_label", "teacher_label", "student_rationale", "teacher_rationale",
     "fidelity", "reason", "reviewed": false}

with rationales as ``[[word, score], ...]`` in word order. A reviewer sets ``"reviewed": true`` and may
set ``"corrected_label"`` (or ``"drop": true`` to leave the line out); :func:`load_reviewed_queue` returns
the reviewed lines as an ``IntentDataset`` (the corrected label where given, else ``label``), which
``rationalign train --extra-data queue.jsonl`` adds to the training data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rationalign.data.io import iter_json_objects
from rationalign.data.types import Example, IntentDataset, LabelSpace
from rationalign.errors import ConfigError, DataError, located
from rationalign.evaluation.fidelity import as_word_scores, spearman
from rationalign.files import atomic_writer

QUEUE_FIELDS = (
    "text",
    "label",
    "student_label",
    "teacher_label",
    "student_rationale",
    "teacher_rationale",
    "fidelity",
    "reason",
    "reviewed",
)


@dataclass
class DivergenceItem:
    text: str
    label: str
    student_label: str
    teacher_label: str
    student_rationale: list[tuple[str, float]]
    teacher_rationale: list[tuple[str, float]]
    fidelity: float | None
    reason: str
    reviewed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        record = {k: v for k, v in asdict(self).items() if k != "extra"}
        record["student_rationale"] = [[w, float(s)] for w, s in self.student_rationale]
        record["teacher_rationale"] = [[w, float(s)] for w, s in self.teacher_rationale]
        return {**record, **self.extra}


def _rationale(item: Any | None) -> tuple[list[str], np.ndarray] | None:
    if item is None:
        return None
    return as_word_scores(item)


def build_divergence_queue(
    texts: Sequence[str],
    labels: Sequence[str],
    student_labels: Sequence[str],
    teacher_labels: Sequence[str],
    student_rationales: Sequence[Any | None],
    teacher_rationales: Sequence[Any | None],
    *,
    min_fidelity: float = 0.3,
) -> list[DivergenceItem]:
    """The divergent utterances, in input order. Rationales are ``WordAttribution`` or ``(words, scores)``
    (None where missing: then only the labels are compared). Fidelity is NaN-safe: an undefined Spearman
    (constant scores, one word) does not count as low fidelity."""
    n = len(texts)
    lengths = {
        len(labels),
        len(student_labels),
        len(teacher_labels),
        len(student_rationales),
        len(teacher_rationales),
    }
    if lengths != {n}:
        raise DataError(
            f"divergence inputs have different lengths ({sorted(lengths)}); fix: one entry per utterance"
        )
    if not -1.0 <= min_fidelity <= 1.0:
        raise ConfigError(f"min_fidelity must be in [-1, 1], got {min_fidelity}")
    queue = []
    for i in range(n):
        student = _rationale(student_rationales[i])
        teacher = _rationale(teacher_rationales[i])
        fidelity = None
        if student is not None and teacher is not None:
            if student[0] != teacher[0]:
                raise DataError(
                    f"utterance {i}: student words {student[0]} differ from teacher words {teacher[0]}; "
                    "fix: attribute the same text with rationalign.attribution's word segmentation"
                )
            rho = spearman(student[1], teacher[1])
            fidelity = None if math.isnan(rho) else rho
        reasons = []
        if student_labels[i] != teacher_labels[i]:
            reasons.append("label")
        if fidelity is not None and fidelity < min_fidelity:
            reasons.append("rationale")
        if not reasons:
            continue
        queue.append(
            DivergenceItem(
                text=texts[i],
                label=labels[i],
                student_label=student_labels[i],
                teacher_label=teacher_labels[i],
                student_rationale=list(zip(student[0], student[1].tolist(), strict=True)) if student else [],
                teacher_rationale=list(zip(teacher[0], teacher[1].tolist(), strict=True)) if teacher else [],
                fidelity=fidelity,
                reason="+".join(reasons),
            )
        )
    return queue


def divergence_queue(
    student: Any,
    teacher: Any,
    dataset: IntentDataset,
    teacher_rationales: Sequence[Any | None],
    *,
    attributor: Any | None = None,
    min_fidelity: float = 0.3,
    batch_size: int = 64,
) -> list[DivergenceItem]:
    """Build the queue from models: ``student`` (an ``IntentClassifier``), ``teacher`` (anything with
    ``predict_proba`` and ``label_space``), the teacher's rationales for ``dataset`` (one per utterance, or
    None). The student's rationale explains the same class as the teacher's (its ``target``), else the
    gold label; ``attributor`` defaults to gradient x input on the student."""
    from rationalign.attribution.gradient import GradientXInput

    if len(teacher_rationales) != len(dataset):
        raise DataError(f"{len(teacher_rationales)} teacher rationales for {len(dataset)} utterances")
    space: LabelSpace = student.label_space
    if list(teacher.label_space) != list(space):
        raise DataError(
            f"the teacher's label space ({len(teacher.label_space)} labels) differs from the student's "
            f"({len(space)}); fix: distil the student from this teacher's label space"
        )
    texts = dataset.texts
    student_ids = student.logits(texts, batch_size).argmax(-1).numpy()
    teacher_ids = np.asarray(teacher.predict_proba(texts)).argmax(1)
    gold = dataset.label_ids(space)
    targets = [int(r.target) if r is not None else g for r, g in zip(teacher_rationales, gold, strict=True)]
    attributor = attributor or GradientXInput(student, batch_size=batch_size)
    student_rationales = attributor.attribute(texts, targets)
    return build_divergence_queue(
        texts,
        dataset.labels,
        [space.name(int(i)) for i in student_ids],
        [space.name(int(i)) for i in teacher_ids],
        student_rationales,
        teacher_rationales,
        min_fidelity=min_fidelity,
    )


def write_queue(path: str | Path, items: Sequence[DivergenceItem]) -> Path:
    """Write the queue as JSON lines, atomically."""
    path = Path(path)
    with atomic_writer(path) as out:
        for item in items:
            out.write(json.dumps(item.to_dict(), ensure_ascii=False) + "\n")
    return path


def read_queue(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of every queue line, checked: a JSON object with the queue fields."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            located(path, None, "no such queue file", "write one with write_queue / rationalign suite")
        )
    out = []
    for number, record in iter_json_objects(path, fix="one queue item (a JSON object) per line"):
        missing = [k for k in ("text", "label", "reviewed") if k not in record]
        if missing:
            raise DataError(located(path, number, f"missing {', '.join(missing)}", "keep the queue's fields"))
        if not isinstance(record["text"], str) or not record["text"].strip():
            raise DataError(located(path, number, "empty text", "give the utterance text"))
        if not isinstance(record["reviewed"], bool):
            raise DataError(located(path, number, "'reviewed' must be true or false", "write true or false"))
        out.append((number, record))
    return out


def load_reviewed_queue(path: str | Path, label_space: LabelSpace | None = None) -> IntentDataset:
    """The reviewed, not dropped queue lines as training data: ``corrected_label`` when the reviewer gave
    one, else ``label``. With ``label_space``, an unknown label is an error naming the line."""
    path = Path(path)
    examples = []
    for number, record in read_queue(path):
        if not record["reviewed"] or record.get("drop"):
            continue
        label = record.get("corrected_label") or record["label"]
        if not isinstance(label, str) or not label.strip():
            raise DataError(located(path, number, "reviewed item without a label", "set corrected_label"))
        if label_space is not None and label not in label_space:
            raise DataError(
                located(
                    path,
                    number,
                    f"label {label!r} is not in the model's label space",
                    "use an existing label",
                )
            )
        examples.append(Example(record["text"], label, source=str(path), line=number))
    if not examples:
        raise DataError(
            located(
                path,
                None,
                "no reviewed items",
                'review some lines (set "reviewed": true) before training on them',
            )
        )
    return IntentDataset(examples, name=f"{path.stem}/reviewed", path=path)
