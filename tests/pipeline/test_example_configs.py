"""Every committed distill config is valid, and each variant the results table derives from it is too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from rationalign.config import apply_overrides, build, load_yaml
from rationalign.pipeline import DistillRunConfig

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "examples" / "distill").glob("*.yaml"))


def _variants() -> dict[str, list[str]]:
    source = (REPO / "bench" / "distill_grid.py").read_text(encoding="utf-8")
    # the VARIANTS table only: importing the script would pull in the bench helpers and the pipeline run
    head = "VARIANTS: dict[str, list[str]] = "
    start = source.index(head) + len(head)
    end = source.index("}\n", start) + 1
    return ast.literal_eval(source[start:end])


def test_there_are_configs_for_every_dataset_and_setting():
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
