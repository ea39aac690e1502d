"""``ClassifierTeacher``: a fine-tuned :class:`IntentClassifier` (for example mpnet-base) as a teacher."""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from rationalign.models.classifier import IntentClassifier
from rationalign.precision import Precision

# model -> (key of tensor identities and versions, digest). Weak keys: a dropped model frees its entry.
_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def module_weights_hash(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict (names + bytes), memoised until a tensor changes.

    Tensors count their in-place updates (``_version``: optimiser steps, ``copy_``), and replacing a tensor
    changes its storage pointer, so the key below changes whenever the weights can have changed.
    """
    state = module.state_dict()
    key = tuple((name, t.data_ptr(), t._version, tuple(t.shape)) for name, t in sorted(state.items()))
    cached = _DIGESTS.get(module)
    if cached is not None and cached[0] == key:
        return cached[1]
    h = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digest = h.hexdigest()
    _DIGESTS[module] = (key, digest)
    return digest


class ClassifierTeacher:
    """Soft labels from a trained classifier: ``softmax(logits / temperature)``, batched.

    ``clf`` is an :class:`IntentClassifier` or the folder it was saved to. ``precision="bfloat16"`` runs its
    forward passes (soft labels, CAP and LIME masks) under bfloat16 autocast; the fingerprint says so, so
    priors cached from a float32 teacher are not mixed with bfloat16 ones.
    """

    def __init__(
        self,
        clf: IntentClassifier | str | Path,
        *,
        batch_size: int = 64,
        device: str = "cpu",
        precision: Precision | None = None,
    ):
        if not isinstance(clf, IntentClassifier):
            clf = IntentClassifier.load(clf, device=device)
        if precision is not None:
            clf.precision = precision  # the setter validates it
        self.clf = clf
        self.batch_size = batch_size

    @property
    def label_space(self):
        return self.clf.label_space

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, len(self.label_space)), dtype=np.float64)
        probs = self.clf.predict_proba(texts, batch_size=self.batch_size).astype(np.float64)
        return probs / probs.sum(axis=1, keepdims=True)

    @property
    def fingerprint(self) -> str:
        spec = {
            "kind": "classifier",
            "weights": module_weights_hash(self.clf.model),
            "temperature": repr(float(self.clf.temperature)),
            "labels": list(self.label_space.names),
            "max_length": self.clf.max_length,
        }
        if self.clf.precision != "float32":  # float32 teachers keep the fingerprints they always had
            spec["precision"] = self.clf.precision
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def __repr__(self) -> str:
        return (
            f"ClassifierTeacher({self.clf.meta.get('base_model', 'model')}, {len(self.label_space)} labels)"
        )
