"""A distill config can name an ensemble of teachers: its soft labels are the weighted mixture, CAP/LIME
query the mixture, gradient priors come from the chosen member, and mistakes are one-line config errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rationalign.data.io import load_data
from rationalign.errors import ConfigError
from rationalign.models.classifier import IntentClassifier
from rationalign.pipeline import DistillRunConfig, _teacher, compute_method_priors, distill_run
from rationalign.teachers.classifier import ClassifierTeacher
from rationalign.teachers.ensemble import EnsembleTeacher


@pytest.fixture()
def members(tmp_path: Path, tiny_label_space) -> list[Path]:
    return [
        IntentClassifier.tiny(tiny_label_space, seed=seed).save(tmp_path / f"member{seed}") for seed in (0, 1)
    ]


def _config(tiny_data_dir: Path, members: list[Path], out: Path, **ensemble) -> DistillRunConfig:
    return DistillRunConfig.model_validate(
        {
            "data": {"path": str(tiny_data_dir)},
            "teacher": {
                "ensemble": {
                    "members": [
                        {"spec": f"model:{members[0]}", "weight": 3.0},
                        {"spec": f"model:{members[1]}?precision=bfloat16", "weight": 1.0},
                    ],
                    **ensemble,
                }
            },
            "priors": {"methods": ["cap", "ig"], "n_masks": 8, "ig_steps": 4, "store": str(out / "p.sqlite")},
            "student": {"model": "tiny-unused", "epochs": 1},
            "output_dir": str(out),
        }
    )


def test_soft_labels_are_the_weighted_mixture(tmp_path, tiny_data_dir, members):
    cfg = _config(tiny_data_dir, members, tmp_path / "run", gradient_member=1)
    bundle = load_data(cfg.data)
    teacher = _teacher(cfg, bundle, tmp_path / "run")
    assert isinstance(teacher, EnsembleTeacher)
    texts = bundle.train.texts
    a = ClassifierTeacher(members[0]).predict_proba(texts)
    b = ClassifierTeacher(members[1], precision="bfloat16").predict_proba(texts)
    np.testing.assert_allclose(teacher.predict_proba(texts), (3 * a + b) / 4, atol=1e-9)
    # gradient priors come from member 1 and are stored under its fingerprint, not the ensemble's
    assert teacher.clf.precision == "bfloat16"
    per_method, _ = compute_method_priors(cfg, teacher, bundle, tmp_path / "run")
    alone = DistillRunConfig.model_validate(
        {**cfg.model_dump(), "teacher": {"spec": f"model:{members[1]}?precision=bfloat16"}}
    )
    again, cost = compute_method_priors(
        alone, _teacher(alone, bundle, tmp_path / "run"), bundle, tmp_path / "run"
    )
    assert cost["ig"]["computed"] == 0  # the same model's IG: read back from the store
    assert cost["cap"]["computed"] == len(texts)  # CAP of another teacher: computed anew
    for x, y in zip(per_method["ig"], again["ig"], strict=True):
        np.testing.assert_allclose(x.scores, y.scores)


def test_config_mistakes_are_one_line_errors(tmp_path, tiny_data_dir, members):
    cfg = _config(tiny_data_dir, members, tmp_path / "run", gradient_member=2)
    with pytest.raises(ConfigError, match=r"gradient_member is 2 but there are 2 members; fix: 0\.\.1"):
        _teacher(cfg, load_data(cfg.data), tmp_path / "run")
    both = cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"spec": f"model:{members[0]}"})})
    with pytest.raises(ConfigError, match="both spec and ensemble"):
        _teacher(both, load_data(cfg.data), tmp_path / "run")


def test_distill_runs_with_an_ensemble_teacher(tmp_path, tiny_data_dir, tiny_base_dir, members):
    cfg = _config(tiny_data_dir, members, tmp_path / "run")
    tiny = {"model": str(tiny_base_dir), "epochs": 1, "batch_size": 8, "lr": 1e-3}
    cfg = DistillRunConfig.model_validate(
        {**cfg.model_dump(), "student": tiny, "evaluation": {"suite": False}}
    )
    result = distill_run(cfg, progress=False)
    teacher = _teacher(cfg, load_data(cfg.data), tmp_path / "run")
    assert result.manifest["teacher"]["fingerprint"] == teacher.fingerprint
    soft = np.load(tmp_path / "run" / "soft_labels.npy")
    np.testing.assert_allclose(soft, teacher.predict_proba(load_data(cfg.data).train.texts), atol=1e-6)
    assert {"ce", "kd", "align"} <= set(result.manifest["history"][-1]["parts"])
