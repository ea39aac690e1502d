"""Where a trained teacher runs: ``teacher.device`` (auto = cuda when torch sees a GPU, else cpu)."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import torch

from rationalign.data.io import load_data
from rationalign.errors import ConfigError
from rationalign.models.classifier import IntentClassifier
from rationalign.pipeline import DistillRunConfig, _teacher
from rationalign.training.run import MANIFEST


def _config(tiny_data_dir: Path, teacher_dir: Path, device: str) -> DistillRunConfig:
    return DistillRunConfig.model_validate(
        {
            "data": {"path": str(tiny_data_dir)},
            "teacher": {"train": {"model": "tiny-unused"}, "dir": str(teacher_dir), "device": device},
            "student": {"model": "tiny-unused"},
        }
    )


@pytest.fixture()
def teacher_dir(tmp_path: Path, tiny_label_space) -> Path:
    folder = tmp_path / "teacher"
    IntentClassifier.tiny(tiny_label_space, seed=0).save(folder / "model")
    (folder / MANIFEST).write_text("{}")  # a finished teacher run: _teacher loads it instead of training
    return folder


def test_the_teacher_runs_where_the_config_says(tmp_path, tiny_data_dir, teacher_dir):
    for device, expected in [("cpu", "cpu"), ("auto", "cuda" if torch.cuda.is_available() else "cpu")]:
        cfg = _config(tiny_data_dir, teacher_dir, device)
        teacher = _teacher(cfg, load_data(cfg.data), tmp_path / "run")
        assert next(teacher.clf.model.parameters()).device.type == expected
        assert teacher.predict_proba(["check my balance"]).shape == (1, len(teacher.label_space))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_config_error(tmp_path, tiny_data_dir, teacher_dir):
    cfg = _config(tiny_data_dir, teacher_dir, "cuda:0")
    with pytest.raises(ConfigError, match="torch sees no GPU; fix: device: auto or cpu"):
        _teacher(cfg, load_data(cfg.data), tmp_path / "run")


def test_an_unknown_device_name_is_refused(tiny_data_dir, teacher_dir):
    with pytest.raises(pydantic.ValidationError, match=r"teacher\.device"):
        _config(tiny_data_dir, teacher_dir, "gpu")
