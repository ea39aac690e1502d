"""Training objectives: the trainer calls ``objective(classifier, batch)`` and back-propagates the loss.

Later stages (soft-label distillation, attribution alignment) add objectives without touching the loop;
``Batch.indices`` index the training set so an objective can look up soft labels or priors per example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from rationalign.models.classifier import IntentClassifier


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    texts: list[str] = field(default_factory=list)
    # The trainer's global step (0-based) that trains on this batch; it survives a resume. Schedules read
    # it (the distillation warm-up, align_every): a training loop of your own must count it here.
    step: int = 0

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


@dataclass
class LossOutput:
    loss: torch.Tensor
    parts: dict[str, float]
    logits: torch.Tensor | None = None


class Objective(Protocol):
    name: str

    def __call__(self, clf: IntentClassifier, batch: Batch) -> LossOutput: ...


class CrossEntropyObjective:
    name = "ce"

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def __call__(self, clf: IntentClassifier, batch: Batch) -> LossOutput:
        logits = clf.model(**batch.model_inputs()).logits
        loss = F.cross_entropy(logits, batch.labels, label_smoothing=self.label_smoothing)
        return LossOutput(loss, {"ce": float(loss.detach())}, logits)
