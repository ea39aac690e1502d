"""The grid's variants share one prior store: computing the union of their methods in one pass lets LIME
reuse CAP's teacher scores of the same masks; the store's teacher_scores table lets a LIME-only pass run
after CAP reuse them too, which without it (keep_teacher_scores: false) pays for every mask again."""

from __future__ import annotations

from pathlib import Path

import pytest

from rationalign.attribution.store import PriorStore
from rationalign.models.classifier import IntentClassifier
from rationalign.pipeline import DistillRunConfig, prime_prior_store, shared_priors_config
from rationalign.teachers.classifier import ClassifierTeacher
from rationalign.training.run import MANIFEST


@pytest.fixture()
def teacher_dir(tmp_path: Path, tiny_label_space) -> Path:
    folder = tmp_path / "teacher"
    IntentClassifier.tiny(tiny_label_space, seed=0).save(folder / "model")
    (folder / MANIFEST).write_text("{}")  # a finished teacher run: loaded, not trained
    return folder


def _variant(tiny_data_dir: Path, teacher_dir: Path, store: Path | None, priors: dict | None):
    spec = {"methods": ["cap", "lime", "ig"], "n_masks": 8, "lime_samples": 8, "ig_steps": 2}
    if priors is not None:
        spec.update(priors, store=str(store) if store else None)
    return DistillRunConfig.model_validate(
        {
            "data": {"path": str(tiny_data_dir)},
            "teacher": {"train": {"model": "tiny-unused"}, "dir": str(teacher_dir), "device": "cpu"},
            "priors": spec if priors is not None else None,
            "student": {"model": "tiny-unused"},
            "output_dir": str(tiny_data_dir.parent / "run"),
        }
    )


def test_the_union_of_the_variants_methods_in_method_order(tiny_data_dir, teacher_dir, tmp_path):
    store = tmp_path / "p.sqlite"
    variants = [
        _variant(tiny_data_dir, teacher_dir, store, None),  # CE + KD: no prior
        _variant(tiny_data_dir, teacher_dir, store, {"methods": ["ig"]}),
        _variant(tiny_data_dir, teacher_dir, store, {"methods": ["lime"]}),
        _variant(tiny_data_dir, teacher_dir, store, {"methods": ["cap"], "fuse": "max"}),
    ]
    union = shared_priors_config(variants)
    assert union is not None and union.priors is not None
    assert union.priors.methods == ["cap", "lime", "ig"]
    assert shared_priors_config(variants[:1]) is None  # nothing to prime


def test_nothing_is_primed_when_the_variants_share_no_store(tiny_data_dir, teacher_dir, tmp_path):
    store = tmp_path / "p.sqlite"
    cap = _variant(tiny_data_dir, teacher_dir, store, {"methods": ["cap"]})
    lime_other_budget = _variant(tiny_data_dir, teacher_dir, store, {"methods": ["lime"], "lime_samples": 16})
    assert shared_priors_config([cap, lime_other_budget]) is None
    assert shared_priors_config([_variant(tiny_data_dir, teacher_dir, None, {"methods": ["cap"]})]) is None


def test_one_pass_lets_lime_reuse_caps_teacher_scores(tiny_data_dir, teacher_dir, tmp_path, monkeypatch):
    scored: list[int] = []
    original = ClassifierTeacher.predict_proba

    def counting(self, texts):
        scored.append(len(texts))
        return original(self, texts)

    monkeypatch.setattr(ClassifierTeacher, "predict_proba", counting)

    def variants(store: Path, **extra) -> tuple[DistillRunConfig, DistillRunConfig]:
        return (
            _variant(tiny_data_dir, teacher_dir, store, {"methods": ["cap"], **extra}),
            _variant(tiny_data_dir, teacher_dir, store, {"methods": ["lime"], **extra}),
        )

    cap, lime = variants(tmp_path / "forgetful.sqlite", keep_teacher_scores=False)
    prime_prior_store([cap])
    cap_alone = sum(scored)
    prime_prior_store([lime])
    separately = sum(scored)
    assert separately > cap_alone > 0  # run after CAP in its own pass, LIME scores its masks again

    scored.clear()
    cap, lime = variants(tmp_path / "keeping.sqlite")
    prime_prior_store([cap])
    assert sum(scored) == cap_alone
    cost = prime_prior_store([lime])  # a later pass: CAP's masked texts are read back from the store
    assert sum(scored) == cap_alone
    assert cost is not None and cost["lime"]["teacher_texts"]["scored"] == 0
    assert cost["lime"]["teacher_texts"]["from_store"] > 0
    assert PriorStore(tmp_path / "keeping.sqlite").count_scores() == cap_alone
    assert PriorStore(tmp_path / "forgetful.sqlite").count_scores() == 0

    scored.clear()
    cost = prime_prior_store(list(variants(tmp_path / "together.sqlite")))
    assert cost is not None and set(cost) == {"cap", "lime"}
    assert sum(scored) == cap_alone  # in one pass LIME costs no teacher call
    stored = PriorStore(tmp_path / "together.sqlite")
    assert {m for m in ("cap", "lime") if stored.count(method=m)} == {"cap", "lime"}


def test_a_separate_cap_teacher_reports_and_keeps_its_own_scores(tiny_data_dir, teacher_dir, tmp_path):
    # CAP asks its own teacher (here a second classifier folder): its cost says how many masked texts that
    # teacher scored, and the store keeps them under that teacher's fingerprint, not the main teacher's
    label_space = IntentClassifier.load(teacher_dir / "model").label_space
    other = tmp_path / "other-model"
    IntentClassifier.tiny(label_space, seed=1).save(other)
    store = tmp_path / "p.sqlite"
    cap = _variant(tiny_data_dir, teacher_dir, store, {"methods": ["cap"], "cap_teacher": f"model:{other}"})
    cost = prime_prior_store([cap])
    assert cost is not None
    asked = cost["cap"]["teacher_texts"]
    assert asked["scored"] > 0 and asked["from_store"] == 0
    kept = PriorStore(store)
    assert kept.count_scores() == asked["scored"]
    main_teacher = ClassifierTeacher(IntentClassifier.load(teacher_dir / "model")).fingerprint
    assert kept.count_scores(fingerprint=main_teacher) == 0
