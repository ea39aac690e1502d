"""Drift: a log from another domain is flagged, a held-out sample of the same data is not; recalibration
lowers NLL on its sample and registers a child run; the CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from rationalign.data.io import load_dataset
from rationalign.errors import ConfigError, DataError
from rationalign.evaluation.calibration import negative_log_likelihood
from rationalign.models.classifier import IntentClassifier
from rationalign.report.commands import register
from rationalign.report.drift import (
    DriftThresholds,
    detect_drift,
    js_divergence,
    mmd_permutation,
    read_texts,
    recalibrate,
    vocabulary_shift,
)
from rationalign.report.registry import RunRegistry
from rationalign.training.run import RunResult

FAST = DriftThresholds(permutations=999, permutation_samples=150, alpha=0.01)


@pytest.fixture(scope="module")
def model(report_run: RunResult) -> IntentClassifier:
    return IntentClassifier.load(report_run.model_dir)


@pytest.fixture(scope="module")
def train_texts(report_data: dict[str, Path]) -> list[str]:
    return load_dataset(report_data["data"] / "train.jsonl").texts


def test_other_domain_is_flagged(model, train_texts, report_data) -> None:
    incoming = load_dataset(report_data["other_domain"]).texts  # hwu64: home-assistant commands
    report = detect_drift(model, train_texts, incoming, FAST)
    assert report.drifted
    for name in ("vocabulary_oov", "vocabulary_js", "embedding_mmd"):
        signal = report.signal(name)
        assert signal.flagged, signal
        assert signal.p_value is not None and signal.p_value <= 0.01 / 5
    assert report.statistics["oov_rate"] > 0.3
    assert report.statistics["embedding_cosine"] < 1.0
    assert report.n_reference == len(train_texts) and report.n_incoming == len(incoming)
    assert json.loads(json.dumps(report.to_dict()))["drifted"] is True


def test_held_out_sample_of_the_same_data_is_not_flagged(model, train_texts, report_data) -> None:
    incoming = load_dataset(report_data["heldout"]).texts  # banking77 test texts of the same labels
    # The reference must be held out too: on its own training texts a model is more confident than on any
    # unseen text, a generalisation gap that the confidence test rightly reports as a shift.
    reference = load_dataset(report_data["calibration"]).texts  # unused validation rows, same labels
    report = detect_drift(model, reference, incoming, FAST)
    assert not report.drifted, [s for s in report.signals if s.flagged]
    # Raw divergences of two samples are never 0; the tests are what keeps this from flagging.
    assert 0 < report.statistics["vocab_js"] < 1
    assert report.statistics["oov_rate"] < 0.3


def test_statistics_helpers() -> None:
    assert js_divergence(np.array([1, 0]), np.array([0, 1])) == pytest.approx(1.0)
    assert js_divergence(np.array([3, 1]), np.array([6, 2])) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)
    same = vocabulary_shift(["the cat sat"] * 20, ["the cat sat"] * 20, 99, rng)
    assert same["oov_rate"] == 0 and same["vocab_js"] == pytest.approx(0, abs=1e-12)
    assert same["vocab_js_p"] == 1.0
    x = rng.normal(size=(60, 4))
    shifted, p_shift = mmd_permutation(x, rng.normal(loc=1.0, size=(60, 4)), 199, rng)
    null, p_null = mmd_permutation(x, rng.normal(size=(60, 4)), 199, rng)
    assert shifted > null and p_shift < 0.01 < p_null


def test_read_texts_formats_and_errors(tmp_path: Path) -> None:
    txt = tmp_path / "log.txt"
    txt.write_text("first text\n\nsecond text\n")
    assert read_texts(txt) == ["first text", "second text"]
    jsonl = tmp_path / "log.jsonl"
    jsonl.write_text('{"text": "a"}\n"b"\n{"utterance": "c", "text": "d"}\n')
    assert read_texts(jsonl) == ["a", "b", "d"]
    jsonl.write_text('{"text": "a"}\n{"query": "b"}\n')
    with pytest.raises(DataError, match=r"log.jsonl:2: no non-empty string field 'text'; fix: "):
        read_texts(jsonl)
    jsonl.write_text('{"text": "a"}\n{oops\n')
    with pytest.raises(DataError, match=r"log.jsonl:2: invalid JSON"):
        read_texts(jsonl)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"bin.txt:2: not UTF-8"):
        read_texts(binary)
    with pytest.raises(DataError, match="unsupported log type"):
        read_texts(tmp_path / "log.xml") if (tmp_path / "log.xml").write_text("x") else None
    with pytest.raises(DataError, match="no such file"):
        read_texts(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no texts"):
        read_texts(tmp_path / "empty.txt")


def test_recalibrate_lowers_nll_and_registers_a_child(
    report_run: RunResult, report_data, tmp_path: Path, registry: RunRegistry, run_copy
) -> None:
    run_dir = run_copy("parent")
    sample = load_dataset(report_data["calibration"])
    original = IntentClassifier.load(run_dir / "model")
    labels = sample.label_ids(original.label_space)
    nll_original = negative_log_likelihood(original.predict_proba(sample.texts), labels)

    result = recalibrate(run_dir / "model", report_data["calibration"], tmp_path / "recal", registry)
    assert result.temperature != pytest.approx(1.0)
    assert result.nll_before == pytest.approx(nll_original, rel=1e-4)
    assert result.nll_after < result.nll_before

    reloaded = IntentClassifier.load(result.model_dir)
    assert reloaded.temperature == pytest.approx(result.temperature)
    nll_new = negative_log_likelihood(reloaded.predict_proba(sample.texts), labels)
    assert nll_new == pytest.approx(result.nll_after, rel=1e-4)
    assert nll_new < nll_original
    # The parent model folder is untouched: a new version, not an edit in place.
    assert IntentClassifier.load(run_dir / "model").temperature == 1.0
    assert reloaded.meta["recalibrated_from"] == str((run_dir / "model").resolve())

    parent = registry.get(run_dir)
    child = result.run
    assert child is not None and child.kind == "recalibrate" and child.parents == [parent.id]
    assert [c.id for c in registry.children(parent.id)] == [child.id]
    assert child.metrics["recalibration_nll_after"] == pytest.approx(result.nll_after)
    assert child.metrics["test_accuracy"] == pytest.approx(parent.metrics["test_accuracy"])  # same argmax
    assert child.weights_hash == parent.weights_hash
    assert "ece" not in child.metrics  # in-sample calibration numbers never pose as held-out ones
    assert [e.action for e in registry.audit_log(child.id)] == ["register", "recalibrate"]

    with pytest.raises(ConfigError, match="already exists and is not empty; fix: choose a new --out"):
        recalibrate(run_dir / "model", report_data["calibration"], tmp_path / "recal", registry)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hello", "label": "card_arrival"}\n{"text": "hi", "label": "weather"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: label 'weather' is not in the model's label space"):
        recalibrate(run_dir / "model", bad, tmp_path / "recal2", registry)
    assert not (tmp_path / "recal2").exists()  # nothing half written


def test_drift_and_recalibrate_cli(report_run: RunResult, report_data, tmp_path: Path, run_copy) -> None:
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    run_dir = run_copy("cli-parent")
    reg = tmp_path / "cli.sqlite"
    RunRegistry(reg).register_run(run_dir)
    out = tmp_path / "drift.json"
    drifted = runner.invoke(
        app,
        [
            "drift",
            str(run_dir),
            "--train",
            str(report_data["data"]),
            "--incoming",
            str(report_data["other_domain"]),
            "--out",
            str(out),
            "--fail-on-drift",
            "--registry",
            str(reg),
        ],
    )
    assert drifted.exit_code == 1, drifted.output
    assert "drift detected" in drifted.stdout
    assert json.loads(out.read_text())["drifted"] is True
    audit = RunRegistry(reg).audit_log(action="drift")
    assert [e.decision for e in audit] == ["drift"]

    calm = runner.invoke(
        app,
        [
            "drift",
            str(run_dir / "model"),
            "--train",
            str(report_data["calibration"]),  # a held-out reference (see the test above)
            "--incoming",
            str(report_data["heldout"]),
            "--json",
            "--max-samples",
            "150",
        ],
    )
    assert calm.exit_code == 0, calm.output
    assert json.loads(calm.stdout)["drifted"] is False

    missing = runner.invoke(
        app,
        [
            "drift",
            str(run_dir),
            "--train",
            str(report_data["data"]),
            "--incoming",
            str(tmp_path / "nope.jsonl"),
        ],
    )
    assert isinstance(missing.exception, DataError)

    recal = runner.invoke(
        app,
        [
            "recalibrate",
            str(run_dir),
            "--data",
            str(report_data["calibration"]),
            "--out",
            str(tmp_path / "v2"),
            "--registry",
            str(reg),
            "--json",
        ],
    )
    assert recal.exit_code == 0, recal.output
    payload = json.loads(recal.stdout)
    assert payload["nll_after"] < payload["nll_before"]
    assert payload["parents"] == [RunRegistry(reg).get(run_dir).id]
    shown = runner.invoke(app, ["runs", "show", str(payload["run_id"]), "--registry", str(reg), "--json"])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["kind"] == "recalibrate"
    listed = runner.invoke(app, ["runs", "list", "--registry", str(reg), "--json"])
    assert [r["kind"] for r in json.loads(listed.stdout)] == ["train", "recalibrate"]
    compared = runner.invoke(
        app, ["runs", "compare", str(run_dir), str(tmp_path / "v2"), "--registry", str(reg), "--json"]
    )
    diff = json.loads(compared.stdout)
    assert diff["metrics"]["test_accuracy"]["diff"] == pytest.approx(0.0)
    assert diff["same"]["weights_hash"] is True
    table = runner.invoke(app, ["runs", "compare", "1", "2", "--registry", str(reg)])
    assert table.exit_code == 0 and "recalibration_nll_after" in table.stdout
