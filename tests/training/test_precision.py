"""bfloat16 autocast: forward passes really run in bfloat16, weights and saved models stay float32, results
stay close to float32, and a bfloat16 teacher never shares cached priors with a float32 one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rationalign.data.types import IntentDataset
from rationalign.models.classifier import IntentClassifier
from rationalign.precision import autocast
from rationalign.teachers import ClassifierTeacher, load_teacher
from rationalign.training.config import TrainConfig
from rationalign.training.trainer import Trainer

TEXTS = ["block my card", "set an alarm for 7", "which alarm is set", "turn on my card"]


def _linear_output_dtypes(clf: IntentClassifier, run) -> set[torch.dtype]:
    seen: set[torch.dtype] = set()
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
        for m in clf.model.modules()
        if isinstance(m, torch.nn.Linear)
    ]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_unknown_precision_is_refused(tiny_label_space):
    with pytest.raises(ValueError, match="unknown precision"):
        autocast("cpu", "float16")
    tiny = IntentClassifier.tiny(tiny_label_space)
    with pytest.raises(ValueError, match="unknown precision"):
        IntentClassifier(tiny.model, tiny.tokenizer, tiny_label_space, precision="fp8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown precision"):
        tiny.precision = "half"  # type: ignore[assignment]
    with pytest.raises(ValueError):
        TrainConfig(precision="fp16")


def test_inference_runs_matmuls_in_bfloat16_and_returns_float32(tiny_label_space):
    clf = IntentClassifier.tiny(tiny_label_space, seed=0)
    reference = clf.logits(TEXTS)
    assert _linear_output_dtypes(clf, lambda: clf.logits(TEXTS)) == {torch.float32}
    clf.precision = "bfloat16"
    assert _linear_output_dtypes(clf, lambda: clf.logits(TEXTS)) == {torch.bfloat16}
    fast = clf.logits(TEXTS)
    assert fast.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in clf.model.parameters())
    # bfloat16 keeps 8 bits of mantissa: close to float32, not equal
    torch.testing.assert_close(fast, reference, atol=0.1, rtol=0.05)
    assert not torch.equal(fast, reference)


def test_bfloat16_training_steps_in_bfloat16_and_saves_float32(tiny_label_space, tmp_path):
    texts = [t for t in TEXTS for _ in range(4)]
    labels = ["card_block", "alarm_set", "alarm_query", "card_activate"] * 4
    ds = IntentDataset.from_pairs(zip(texts, labels, strict=True))
    clf = IntentClassifier.tiny(tiny_label_space, seed=0)
    cfg = TrainConfig(precision="bfloat16", epochs=2, batch_size=4, lr=1e-3, seed=0, threads=1)
    trainer = Trainer(clf, ds, ds, cfg, tmp_path / "run", progress=False)
    seen = _linear_output_dtypes(clf, lambda: trainer.fit())
    assert torch.bfloat16 in seen and torch.float32 not in seen
    saved = IntentClassifier.load(tmp_path / "run" / "model")
    assert saved.precision == "float32"  # a run-time choice, not part of the model
    assert all(p.dtype == torch.float32 for p in saved.model.parameters())
    start = IntentClassifier.tiny(tiny_label_space, seed=0).model.state_dict()
    moved = max(float((saved.model.state_dict()[k] - v).abs().max()) for k, v in start.items())
    assert moved > 0  # the weights were trained (float32 master weights took bfloat16 gradients)
    torch.testing.assert_close(saved.logits(TEXTS), clf.logits(TEXTS), atol=0.1, rtol=0.05)


def test_bfloat16_training_is_deterministic(tiny_label_space, tmp_path):
    texts = [t for t in TEXTS for _ in range(3)]
    labels = ["card_block", "alarm_set", "alarm_query", "card_activate"] * 3
    ds = IntentDataset.from_pairs(zip(texts, labels, strict=True))
    weights = []
    for run in ("a", "b"):
        clf = IntentClassifier.tiny(tiny_label_space, seed=1)
        cfg = TrainConfig(precision="bfloat16", epochs=1, batch_size=4, lr=1e-3, seed=3, threads=1)
        Trainer(clf, ds, None, cfg, tmp_path / run, progress=False).fit()
        weights.append(clf.model.state_dict())
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


def test_bfloat16_teacher_has_its_own_fingerprint_and_close_soft_labels(tiny_label_space, tmp_path):
    clf = IntentClassifier.tiny(tiny_label_space, seed=0)
    folder = clf.save(tmp_path / "model")
    fp32 = ClassifierTeacher(folder)
    bf16 = load_teacher(f"model:{folder}?precision=bfloat16", tiny_label_space)
    assert isinstance(bf16, ClassifierTeacher) and bf16.clf.precision == "bfloat16"
    assert bf16.fingerprint != fp32.fingerprint
    assert ClassifierTeacher(folder, precision="float32").fingerprint == fp32.fingerprint
    np.testing.assert_allclose(bf16.predict_proba(TEXTS), fp32.predict_proba(TEXTS), atol=0.02)
