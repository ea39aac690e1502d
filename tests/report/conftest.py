"""Fixtures of the report-stage tests: a real (tiny) training run on a slice of banking77, and registries.

The run is produced by ``rationalign.training.run.train_run`` (the real code path that writes
``manifest.json``, ``test_metrics.json``, ``train_log.jsonl`` and ``model/``), on a tiny random-weight
backbone saved to a temporary folder, so the run-directory format the report reads is the real one.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from rationalign.data.io import DataConfig, resolve_data
from rationalign.data.types import LabelSpace
from rationalign.errors import DataError
from rationalign.models.classifier import IntentClassifier
from rationalign.report.registry import REGISTRY_ENV, RunRegistry
from rationalign.training.config import TrainConfig
from rationalign.training.run import RunConfig, RunResult, train_run

LABELS = ("card_arrival", "card_linking", "exchange_rate", "lost_or_stolen_card", "top_up_failed")
XSS_TEXT = '<script>alert("xss")</script> my card has not arrived'
PER_LABEL = {"train": 24, "valid": 6, "test": 8}


def _by_label(path: Path) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["label"] in LABELS:
            groups[record["label"]].append(record["text"])
    return groups


def _write(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def banking77_source() -> Path:
    try:
        return resolve_data("banking77")
    except DataError as err:
        pytest.skip(f"banking77 is not available here ({err})")


@pytest.fixture(scope="session")
def report_data(tmp_path_factory: pytest.TempPathFactory, banking77_source: Path) -> dict[str, Path]:
    """A 5-label slice of banking77: ``data/`` (train/valid/test splits), plus ``heldout.jsonl`` (unused
    banking77 test texts of the same labels), ``calibration.jsonl`` (unused valid rows, labelled) and
    ``other_domain.jsonl`` (hwu64 texts: a different domain)."""
    root = tmp_path_factory.mktemp("report_data")
    data = root / "data"
    data.mkdir()
    train, valid, test = (_by_label(banking77_source / f"{s}.jsonl") for s in ("train", "valid", "test"))
    _write(data / "train.jsonl", [(t, y) for y in LABELS for t in train[y][: PER_LABEL["train"]]])
    _write(data / "valid.jsonl", [(t, y) for y in LABELS for t in valid[y][: PER_LABEL["valid"]]])
    test_rows = [(t, y) for y in LABELS for t in test[y][: PER_LABEL["test"]]]
    _write(data / "test.jsonl", [*test_rows, (XSS_TEXT, "card_arrival")])
    n = PER_LABEL["test"]
    heldout = _write(root / "heldout.jsonl", [(t, y) for y in LABELS for t in test[y][n : n + 30]])
    calibration = _write(
        root / "calibration.jsonl",
        [(t, y) for y in LABELS for t in valid[y][PER_LABEL["valid"] : PER_LABEL["valid"] + 12]],
    )
    other = resolve_data("hwu64") / "test.jsonl"
    other_rows = [json.loads(line) for line in other.read_text(encoding="utf-8").splitlines()][::7][:150]
    other_domain = _write(root / "other_domain.jsonl", [(r["text"], r["label"]) for r in other_rows])
    return {
        "data": data,
        "heldout": heldout,
        "calibration": calibration,
        "other_domain": other_domain,
        "root": root,
    }


@pytest.fixture(scope="session")
def report_run(tmp_path_factory: pytest.TempPathFactory, report_data: dict[str, Path]) -> RunResult:
    """A finished run directory from the real ``train_run`` (tiny backbone, 3 epochs, ~30 steps)."""
    root = tmp_path_factory.mktemp("report_run")
    base = IntentClassifier.tiny(LabelSpace(sorted(LABELS)), arch="bert", seed=0, max_length=32)
    base.save(root / "base")
    cfg = RunConfig(
        data=DataConfig(path=str(report_data["data"])),
        train=TrainConfig(
            model=str(root / "base"),
            epochs=3,
            batch_size=16,
            max_length=32,
            lr=3e-3,
            head_lr=3e-2,
            warmup_ratio=0.0,
            device="cpu",
            seed=0,
            threads=1,
        ),
        output_dir=str(root / "run"),
    )
    # One thread: on a busy 2-core machine two threads of a tiny model mostly wait for each other (10x
    # slower). The trainer sets the global count, so restore it for the tests that run after this one.
    threads = torch.get_num_threads()
    try:
        return train_run(cfg, progress=False)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def run_copy(tmp_path: Path, report_run: RunResult) -> Callable[[str], Path]:
    """``run_copy(name)``: a private copy of the trained run directory (tests may add files to it)."""

    def copy(name: str = "run") -> Path:
        target = tmp_path / name
        shutil.copytree(report_run.run_dir, target, ignore=shutil.ignore_patterns("checkpoint"))
        return target

    return copy


@pytest.fixture(scope="package", autouse=True)
def single_thread():
    """These tests run tiny models: one torch thread is faster on a busy 2-core machine (two threads of a
    tiny model mostly wait for each other). Restored when the report tests are done."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def isolated_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test's default registry is a fresh file under tmp_path (never the repo's runs/)."""
    path = tmp_path / "default-registry.sqlite"
    monkeypatch.setenv(REGISTRY_ENV, str(path))
    monkeypatch.setenv("RATIONALIGN_ACTOR", "tester@ci")
    return path


@pytest.fixture
def registry(tmp_path: Path) -> RunRegistry:
    return RunRegistry(tmp_path / "registry.sqlite")


@pytest.fixture
def fake_run(tmp_path: Path) -> Callable[..., Path]:
    """``fake_run(name, metrics, extra=None, weights="...")``: a run directory with only a manifest
    (and ``metrics.json`` when ``extra`` is given), for gate and registry tests with hand-made numbers."""

    def make(
        name: str,
        metrics: dict,
        extra: dict | None = None,
        weights: str | None = None,
        parameters: int = 1000,
        teacher: str | None = None,
    ) -> Path:
        folder = tmp_path / "fake_runs" / name
        folder.mkdir(parents=True, exist_ok=True)
        manifest = {
            "kind": "train",
            "started_at": "2026-01-01T00:00:00+00:00",
            "wall_seconds": 12.5,
            "config": {"train": {"lr": 1e-3, "model": name}, "data": {"path": "somewhere"}},
            "data": {"fingerprint": "d" * 64},
            "model": {
                "weights_sha256": weights or (name.encode().hex() + "0" * 64)[:64],
                "parameters": parameters,
            },
            "metrics": metrics,
        }
        if teacher:
            manifest["teacher"] = {"fingerprint": teacher}
        (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        if extra is not None:
            (folder / "metrics.json").write_text(json.dumps(extra), encoding="utf-8")
        return folder

    return make
