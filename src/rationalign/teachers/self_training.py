"""Self-training a classifier teacher on the transfer set: its confident answers become training data.

A few-shot teacher that has seen 5 utterances an intent is the bound of every student distilled from it.
The unlabelled in-domain text of the transfer set can lift that bound: the teacher labels it, the labels
it is confident of (and, optionally, only the most confident few per intent, so that easy intents do not
crowd out the rest) join the labelled examples, and a new teacher is trained from the same base model on
both (classic self-training / pseudo-labelling; Scudder 1965, Lee 2013; "noisy student" when repeated).
Each round's teacher labels the texts for the next.

Every round lives in its own folder next to the base teacher, named by a hash of what decides it (the
data, the transfer set, the self-training settings), so seeds and variants of a grid share it, and a
killed run resumes inside the round it was training.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rationalign.data.types import LabelSpace
from rationalign.errors import DataError, located
from rationalign.files import atomic_write_text

PSEUDO_LABELS = "pseudo_labels.jsonl"


class SelfTrainConfig(BaseModel):
    """``teacher.self_train`` of a distill config (needs ``teacher.train`` and a ``transfer`` set)."""

    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(1, ge=1, le=5, description="label -> select -> retrain cycles")
    min_confidence: float = Field(
        0.9,
        ge=0,
        le=1,
        description="keep a transfer text when the teacher's top probability is at least this",
    )
    max_per_label: int | None = Field(
        None,
        ge=1,
        description="keep at most this many texts per predicted intent, the most confident first "
        "(null: every confident text)",
    )
    epochs: int | None = Field(
        None,
        ge=1,
        description="epochs of the self-trained teachers (null: teacher.train's); with thousands of "
        "pseudo-labelled rows, fewer passes than a few-shot schedule's are enough",
    )


@dataclass(frozen=True)
class PseudoLabels:
    """The transfer texts a teacher labelled confidently enough, with its label and confidence."""

    texts: list[str]
    labels: list[str]
    confidence: np.ndarray
    candidates: int  # transfer texts the teacher labelled

    def summary(self) -> dict[str, float | int]:
        per_label = np.unique(self.labels, return_counts=True)[1] if self.labels else np.zeros(1)
        return {
            "kept": len(self.texts),
            "of": self.candidates,
            "labels_covered": len(set(self.labels)),
            "min_per_label": int(per_label.min()),
            "max_per_label": int(per_label.max()),
            "mean_confidence": float(self.confidence.mean()) if len(self.texts) else 0.0,
        }

    def write_jsonl(self, path: Path) -> None:
        lines = (
            json.dumps({"text": t, "label": y, "confidence": round(float(c), 6)}, ensure_ascii=False)
            for t, y, c in zip(self.texts, self.labels, self.confidence, strict=True)
        )
        atomic_write_text(path, "".join(line + "\n" for line in lines))


def select_pseudo_labels(
    texts: list[str],
    probs: np.ndarray,
    label_space: LabelSpace,
    min_confidence: float,
    max_per_label: int | None = None,
) -> PseudoLabels:
    """The texts whose top probability reaches ``min_confidence``; with ``max_per_label``, only the most
    confident that many of each predicted intent (ties broken by position). Kept rows stay in text order,
    so the result does not depend on how the texts were batched."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(texts), len(label_space)):
        raise ValueError(
            f"probabilities of shape {probs.shape} for {len(texts)} texts and {len(label_space)} labels"
        )
    top, confidence = probs.argmax(1), probs.max(1)
    keep = confidence >= min_confidence
    if max_per_label is not None:
        capped = np.zeros_like(keep)
        for label in np.unique(top[keep]):
            rows = np.flatnonzero(keep & (top == label))
            order = rows[np.lexsort((rows, -confidence[rows]))]  # most confident first, then by position
            capped[order[:max_per_label]] = True
        keep = capped
    rows = np.flatnonzero(keep)
    return PseudoLabels(
        texts=[texts[i] for i in rows],
        labels=[label_space.name(int(top[i])) for i in rows],
        confidence=confidence[rows],
        candidates=len(texts),
    )


def round_dir(teacher_dir: Path, stamp: dict, round_number: int) -> Path:
    """``<teacher_dir>-self-train-<hash>/round-<r>``: the hash covers everything that decides the round."""
    digest = hashlib.sha256(json.dumps(stamp, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return teacher_dir.with_name(f"{teacher_dir.name}-self-train-{digest}") / f"round-{round_number}"


def check_not_empty(pseudo: PseudoLabels, cfg: SelfTrainConfig, where: Path) -> None:
    if not pseudo.texts:
        raise DataError(
            located(
                where,
                None,
                f"the teacher reached min_confidence {cfg.min_confidence} on none of {pseudo.candidates} "
                "transfer texts",
                "lower teacher.self_train.min_confidence",
            )
        )
