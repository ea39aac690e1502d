"""Self-training a teacher on its confident labels of the transfer set."""

import json
from pathlib import Path

import numpy as np
import pytest

from rationalign.attribution.store import PriorStore
from rationalign.config import build
from rationalign.data.io import DataConfig, load_data
from rationalign.data.transfer import load_transfer_set
from rationalign.data.types import LabelSpace
from rationalign.errors import ConfigError, DataError
from rationalign.pipeline import (
    DistillRunConfig,
    distill_run,
    prime_prior_store,
    run_self_training,
    trained_teacher_dir,
)
from rationalign.teachers.classifier import ClassifierTeacher
from rationalign.teachers.self_training import SelfTrainConfig, select_pseudo_labels

UNLABELLED = ["wake me at seven", "is my card blocked", "alarms tonight?", "freeze my card", "hello there"]


def test_select_keeps_confident_rows_and_caps_each_label_most_confident_first():
    labels = LabelSpace(["a", "b", "c"])
    texts = ["t0", "t1", "t2", "t3", "t4", "t5"]
    probs = np.array(
        [
            [0.95, 0.03, 0.02],  # a, 0.95
            [0.40, 0.35, 0.25],  # a, not confident
            [0.02, 0.97, 0.01],  # b, 0.97
            [0.99, 0.00, 0.01],  # a, 0.99
            [0.05, 0.91, 0.04],  # b, 0.91
            [0.95, 0.04, 0.01],  # a, 0.95: ties with t0, which comes first
        ]
    )
    every = select_pseudo_labels(texts, probs, labels, min_confidence=0.9)
    assert every.texts == ["t0", "t2", "t3", "t4", "t5"]  # text order, not confidence order
    assert every.labels == ["a", "b", "a", "b", "a"]
    assert every.confidence.tolist() == pytest.approx([0.95, 0.97, 0.99, 0.91, 0.95])
    capped = select_pseudo_labels(texts, probs, labels, min_confidence=0.9, max_per_label=2)
    assert capped.texts == ["t0", "t2", "t3", "t4"]  # a: t3 (0.99) and t0 (0.95, before t5); b: both
    assert capped.summary() == {
        "kept": 4,
        "of": 6,
        "labels_covered": 2,
        "min_per_label": 2,
        "max_per_label": 2,
        "mean_confidence": pytest.approx((0.95 + 0.97 + 0.99 + 0.91) / 4),
    }
    assert select_pseudo_labels(texts, probs, labels, min_confidence=1.0).texts == []
    with pytest.raises(ValueError, match="shape"):
        select_pseudo_labels(texts[:2], probs, labels, min_confidence=0.5)


def _raw(tmp_path, tiny_data_dir, tiny_base_dir, **self_train):
    unlabelled = tmp_path / "unlabelled.txt"
    unlabelled.write_text("\n".join(UNLABELLED) + "\n", encoding="utf-8")
    tiny = {"model": str(tiny_base_dir), "epochs": 1, "batch_size": 8, "lr": 1e-3}
    return {
        "data": {"path": str(tiny_data_dir)},
        "teacher": {
            "train": {**tiny, "epochs": 2},
            "dir": str(tmp_path / "teacher"),
            "self_train": self_train,
        },
        "priors": None,
        "student": tiny,
        "distill": {"alpha": 0.5},
        "evaluation": {"suite": False},
        "transfer": {"path": str(unlabelled)},
        "output_dir": str(tmp_path / "run"),
    }


def test_self_trained_teacher_gives_the_soft_labels_and_is_shared(
    tmp_path, tiny_data_dir, tiny_base_dir, monkeypatch
):
    bundle = load_data(DataConfig(path=str(tiny_data_dir)))
    raw = _raw(tmp_path, tiny_data_dir, tiny_base_dir, rounds=2, min_confidence=0.0, epochs=1)
    result = distill_run(build(DistillRunConfig, raw), progress=False)
    rounds = result.manifest["teacher"]["self_training"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["kept"] == r["of"] == len(UNLABELLED) for r in rounds)  # min_confidence 0 keeps all
    folders = [Path(r["dir"]) for r in rounds]
    for folder in folders:
        lines = (folder / "pseudo_labels.jsonl").read_text().splitlines()
        assert sorted(json.loads(line)["text"] for line in lines) == sorted(UNLABELLED)
        trained = json.loads((folder / "manifest.json").read_text())
        assert trained["data"]["train_examples"] == len(bundle.train) + len(UNLABELLED)
        assert trained["config"]["train"]["epochs"] == 1  # self_train.epochs, not the base teacher's 2
        assert trained["config"]["pseudo_labelled"] == [str(folder / "pseudo_labels.jsonl")]
    base = ClassifierTeacher(tmp_path / "teacher" / "model")
    last = ClassifierTeacher(folders[1] / "model")
    assert result.manifest["teacher"]["fingerprint"] == last.fingerprint != base.fingerprint
    assert str(folders[0]).startswith(str(tmp_path / "teacher-self-train-"))
    assert trained_teacher_dir(build(DistillRunConfig, raw)) == folders[1]  # what the bench tables read
    plain = {**raw, "teacher": {k: v for k, v in raw["teacher"].items() if k != "self_train"}}
    assert trained_teacher_dir(build(DistillRunConfig, plain)) == tmp_path / "teacher"

    # another seed of the student reuses both rounds, and loads only the last round's teacher;
    # a 1-round config reuses round 1
    stamps = [(f / "manifest.json").stat().st_mtime_ns for f in folders]
    loaded: list[Path] = []
    original_init = ClassifierTeacher.__init__

    def recording_init(self, model_dir, *args, **kwargs):
        loaded.append(Path(model_dir))
        original_init(self, model_dir, *args, **kwargs)

    monkeypatch.setattr(ClassifierTeacher, "__init__", recording_init)
    cfg = build(DistillRunConfig, raw)
    assert cfg.transfer is not None
    transfer = load_transfer_set(cfg.transfer, bundle, cfg.data.path)
    read_back = run_self_training(cfg, bundle, transfer, Path(cfg.output_dir))
    assert loaded == [] and read_back.rounds == rounds  # reading the rounds loads no model
    assert read_back.load_teacher().fingerprint == last.fingerprint and loaded == [folders[1] / "model"]
    loaded.clear()
    again = {**raw, "student": {**raw["student"], "seed": 1}, "output_dir": str(tmp_path / "run-s1")}
    distill_run(build(DistillRunConfig, again), progress=False)
    assert [(f / "manifest.json").stat().st_mtime_ns for f in folders] == stamps
    assert loaded == [folders[1] / "model"]
    monkeypatch.undo()
    one = _raw(tmp_path, tiny_data_dir, tiny_base_dir, rounds=1, min_confidence=0.0, epochs=1)
    one["output_dir"] = str(tmp_path / "run-one")
    first = distill_run(build(DistillRunConfig, one), progress=False).manifest["teacher"]["self_training"]
    assert [r["dir"] for r in first] == [rounds[0]["dir"]]


def test_the_grid_primes_the_store_with_the_self_trained_teachers_priors(
    tmp_path, tiny_data_dir, tiny_base_dir
):
    # the grid computes every variant's priors before the runs: with self-training they must be the last
    # round's teacher's, the ones the run aligns to, or each run computes them all over again
    raw = _raw(tmp_path, tiny_data_dir, tiny_base_dir, rounds=1, min_confidence=0.0, epochs=1)
    raw["priors"] = {"methods": ["lime"], "lime_samples": 8, "store": str(tmp_path / "priors.sqlite")}
    cfg = build(DistillRunConfig, raw)
    cost = prime_prior_store([cfg])
    train_texts = len(load_data(DataConfig(path=str(tiny_data_dir))).train)
    assert cost is not None and cost["lime"]["computed"] == train_texts
    store = PriorStore(tmp_path / "priors.sqlite")
    last = trained_teacher_dir(cfg)
    assert last is not None and last != tmp_path / "teacher"
    assert store.count(fingerprint=ClassifierTeacher(last / "model").fingerprint) == train_texts
    assert store.count(fingerprint=ClassifierTeacher(tmp_path / "teacher" / "model").fingerprint) == 0
    manifest = distill_run(cfg, progress=False).manifest
    assert manifest["priors"]["cost"]["lime"]["computed"] == 0  # all read back from the store
    assert manifest["priors"]["cost"]["lime"]["reused"] == train_texts


def test_self_training_errors_say_what_to_fix(tmp_path, tiny_data_dir, tiny_base_dir):
    raw = _raw(tmp_path, tiny_data_dir, tiny_base_dir, min_confidence=1.0)
    no_transfer = {**raw, "transfer": None}
    with pytest.raises(ConfigError, match=r"self_train needs unlabelled text.*fix: add a transfer set"):
        distill_run(build(DistillRunConfig, no_transfer), progress=False)
    with pytest.raises(ConfigError, match=r"self_train needs unlabelled text"):  # before any teacher work
        prime_prior_store([build(DistillRunConfig, no_transfer)])
    spec = {**raw, "teacher": {"spec": "model:somewhere", "self_train": {}}}
    with pytest.raises(ConfigError, match="self_train retrains a classifier teacher"):
        distill_run(build(DistillRunConfig, spec), progress=False)
    # a random tiny teacher is never sure of anything: nothing is kept, and the error says so
    with pytest.raises(
        DataError, match=r"unlabelled\.txt: the teacher reached min_confidence 1\.0 on none of 5"
    ):
        distill_run(build(DistillRunConfig, raw), progress=False)
    assert SelfTrainConfig().min_confidence == 0.9
