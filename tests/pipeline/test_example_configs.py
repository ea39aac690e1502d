"""Every committed distill config is valid, and each variant the results table derives from it is too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from rationalign.config import apply_overrides, build, load_yaml
from rationalign.pipeline import DistillRunConfig

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "examples" / "distill").glob("*.yaml"))
SHARED_TEACHER = [p for p in CONFIGS if "dir: runs/bench/" in p.read_text(encoding="utf-8")]


def _literal(script: str, head: str):
    """A dict literal of a bench script, read as text: importing the script would pull in the bench
    helpers and the pipeline run."""
    source = (REPO / "bench" / script).read_text(encoding="utf-8")
    start = source.index(head) + len(head)
    return ast.literal_eval(source[start : source.index("\n}\n", start) + 2])


def _variants() -> dict[str, list[str]]:
    return _literal("distill_grid.py", "VARIANTS: dict[str, list[str]] = ")


def test_there_are_configs_for_every_dataset_and_setting():
    assert len(SHARED_TEACHER) >= 8  # every MPNet-teacher config shares the bench's teacher run
    names = {p.stem for p in CONFIGS}
    for dataset in ("banking77", "hwu64", "clinc150"):
        assert {f"{dataset}_10shot", f"{dataset}_5shot"} <= names
    assert {"banking77_full", "hwu64_full"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_and_its_variants_validate(path):
    base = load_yaml(path)
    cfg = build(DistillRunConfig, base, str(path))
    assert cfg.data.path and cfg.output_dir
    for variant, overrides in _variants().items():
        derived = build(DistillRunConfig, apply_overrides(base, [*overrides, "student.seed=1"]), variant)
        assert derived.student.seed == 1
        if variant.startswith("CE"):
            assert derived.priors is None
        else:
            assert derived.priors is not None and derived.priors.methods


@pytest.mark.parametrize("path", SHARED_TEACHER, ids=lambda p: p.stem)
def test_a_shared_teacher_folder_is_trained_as_the_bench_trains_it(path):
    """A config whose teacher lives in bench/student_ce.py's folder reuses that run; the two must train the
    same model, or the reuse would silently swap teachers."""
    cfg = build(DistillRunConfig, load_yaml(path), str(path))
    assert cfg.teacher.dir and cfg.teacher.train is not None
    hyper = _literal("student_ce.py", "MODEL_HYPER = ")
    train = cfg.teacher.train
    setting = Path(cfg.teacher.dir).name.split(f"-{train.model}-")[0].split("-", 1)[1]
    epochs, batch, lr, head_lr, patience = hyper[train.model][setting]
    assert (train.epochs, train.batch_size, train.lr, train.head_lr, train.patience) == (
        epochs,
        batch,
        lr,
        head_lr,
        patience,
    )
    assert train.max_length == 64 and train.seed == 0
    tag = "" if train.precision == "float32" else f"-{train.precision}"
    assert Path(cfg.teacher.dir).name == f"{cfg.data.path}-{setting}-{train.model}-ce{tag}-s0"
