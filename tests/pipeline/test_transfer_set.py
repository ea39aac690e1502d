"""KD on a transfer set: unlabelled text the teacher labels joins training with the KD term only."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rationalign.config import build
from rationalign.data.io import DataConfig, load_data
from rationalign.data.transfer import TransferConfig, load_transfer_set
from rationalign.errors import ConfigError, DataError
from rationalign.models.classifier import IntentClassifier
from rationalign.pipeline import DistillRunConfig, distill_run
from rationalign.training.distill import DistillationObjective, DistillConfig, kd_loss
from rationalign.training.objectives import Batch

UNLABELLED = [
    "wake me at seven tomorrow",
    "is my card still blocked",
    "wake me at seven tomorrow",  # a repeat
    "Wake me  at seven tomorrow",  # the same utterance once normalised
    "what alarms do i have tonight",
    "freeze my debit card now",
]


def _unlabelled_file(folder: Path, bundle) -> Path:
    # one test and one train utterance hide among the unlabelled texts: both must be dropped
    lines = [*UNLABELLED, bundle.test[0].text, bundle.train[0].text.upper()]
    path = folder / "unlabelled.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_transfer_set_drops_labelled_utterances_and_repeats(tmp_path, tiny_data_dir):
    bundle = load_data(DataConfig(path=str(tiny_data_dir)))
    path = _unlabelled_file(tmp_path, bundle)
    transfer = load_transfer_set(TransferConfig(path=str(path)), bundle, str(tiny_data_dir))
    assert transfer.texts == [
        "wake me at seven tomorrow",
        "is my card still blocked",
        "what alarms do i have tonight",
        "freeze my debit card now",
    ]
    assert (transfer.read, transfer.removed_labelled, transfer.removed_duplicates) == (8, 2, 2)
    limited = load_transfer_set(TransferConfig(path=str(path), limit=2, seed=1), bundle, str(tiny_data_dir))
    assert len(limited.texts) == 2 and set(limited.texts) <= set(transfer.texts)
    again = load_transfer_set(TransferConfig(path=str(path), limit=2, seed=1), bundle, str(tiny_data_dir))
    assert again.texts == limited.texts  # seeded
    assert again.fingerprint == limited.fingerprint != transfer.fingerprint

    # the training split read without its labels is all labelled already: a clear error, not an empty set
    with pytest.raises(DataError, match=r"train\.jsonl: all \d+ transfer texts are already in the labelled"):
        load_transfer_set(TransferConfig(split="train"), bundle, str(tiny_data_dir))
    with pytest.raises(DataError, match=r"no transfer split 'extra'.*fix: set transfer\.split"):
        load_transfer_set(TransferConfig(split="extra"), bundle, str(tiny_data_dir))


def test_transfer_rows_train_kd_only(tiny_label_space):
    clf = IntentClassifier.tiny(tiny_label_space, seed=0)
    clf.model.eval()  # no dropout: the three objectives below see the same logits
    texts = ["set an alarm", "block my card", "wake me up", "is my card blocked"]
    enc = clf.encode(texts)
    labels, indices = torch.tensor([0, 2, 0, 3]), torch.tensor([0, 1, 2, 3])
    batch = Batch(enc["input_ids"], enc["attention_mask"], labels, indices, texts)
    soft = np.random.default_rng(0).dirichlet(np.ones(4), size=4)
    config = DistillConfig(alpha=0.5, temperature=2.0)
    labelled = np.array([True, False, True, False])
    out = DistillationObjective(config, soft_labels=soft, labelled=labelled)(clf, batch)
    logits = out.logits.detach()
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    kd = kd_loss(logits, torch.as_tensor(soft, dtype=torch.float32), 2.0)
    # CE of the two labelled rows, divided by all four rows; KD over all four
    assert out.parts["ce"] == pytest.approx(float((ce[0] + ce[2]) / 4), rel=1e-5)
    assert float(out.loss.detach()) == pytest.approx(float((ce[0] + ce[2]) / 4 + 0.5 * kd), rel=1e-5)
    everyone = DistillationObjective(config, soft_labels=soft, labelled=np.ones(4, bool))(clf, batch)
    plain = DistillationObjective(config, soft_labels=soft)(clf, batch)
    assert float(everyone.loss.detach()) == pytest.approx(float(plain.loss.detach()), rel=1e-6)
    with pytest.raises(ConfigError, match="soft labels"):
        DistillationObjective(config, labelled=labelled)


def test_distill_with_a_transfer_set_end_to_end(tmp_path, tiny_data_dir, tiny_base_dir):
    bundle = load_data(DataConfig(path=str(tiny_data_dir)))
    path = _unlabelled_file(tmp_path, bundle)
    tiny = {"model": str(tiny_base_dir), "epochs": 2, "batch_size": 8, "lr": 1e-3}
    raw = {
        "data": {"path": str(tiny_data_dir)},
        "teacher": {"train": tiny},
        "priors": {"methods": ["lime"], "lime_samples": 8, "store": str(tmp_path / "priors.sqlite")},
        "student": tiny,
        "distill": {"alpha": 0.5, "lam": 1.0},
        "evaluation": {"suite": False},
        "transfer": {"path": str(path)},
        "output_dir": str(tmp_path / "run"),
    }
    result = distill_run(build(DistillRunConfig, raw), progress=False)
    summary = result.manifest["data"]["transfer"]
    assert summary["texts"] == 4 and summary["removed_labelled"] == 2
    history = result.manifest["history"]
    n_train = len(bundle.train)
    assert history[0]["step"] == -(-(n_train + 4) // 8)  # the epoch covered labelled + transfer rows
    assert {"ce", "kd", "align"} <= set(history[-1]["parts"])
    assert 0 <= result.manifest["metrics"]["test_accuracy"] <= 1

    # the teacher's soft labels of the transfer texts went to the shared store: a second seed reads them
    raw2 = {**raw, "student": {**tiny, "seed": 1}, "output_dir": str(tmp_path / "run-s1")}
    second = distill_run(build(DistillRunConfig, raw2), progress=False)
    assert second.manifest["data"]["transfer"] == summary
    log = json.loads((tmp_path / "run-s1" / "manifest.json").read_text())
    assert log["stage_seconds"]["transfer"] >= 0

    without_kd = {**raw, "distill": {"alpha": 0.0}, "output_dir": str(tmp_path / "run-nokd")}
    with pytest.raises(ConfigError, match="transfer needs the teacher's soft labels"):
        distill_run(build(DistillRunConfig, without_kd), progress=False)
