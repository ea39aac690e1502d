"""The run registry: round trip, idempotence, parents, lookups, the append-only audit log, MLflow."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest

from rationalign.errors import ConfigError
from rationalign.report.registry import (
    RunRegistry,
    collect_metrics,
    default_registry_path,
    log_to_mlflow,
    mlflow_available,
    register_run,
)
from rationalign.training.run import RunResult


def test_register_real_run_round_trip(registry: RunRegistry, report_run: RunResult) -> None:
    record = registry.register_run(report_run.run_dir)
    manifest = report_run.manifest
    assert record.id == 1
    assert record.status == "registered"
    assert record.kind == "train"
    assert record.run_dir == str(Path(report_run.run_dir).resolve())
    assert record.weights_hash == manifest["model"]["weights_sha256"]
    assert record.data_fingerprint == manifest["data"]["fingerprint"]
    assert record.teacher_fingerprint is None and record.priors_fingerprint is None
    assert record.config == manifest["config"]
    assert record.metrics["test_accuracy"] == pytest.approx(manifest["metrics"]["test_accuracy"])
    assert record.metrics["parameters"] == manifest["model"]["parameters"]
    assert record.wall_seconds == pytest.approx(manifest["wall_seconds"])
    assert record.model_dir == Path(report_run.model_dir).resolve()

    again = RunRegistry(registry.path)  # a fresh connection reads the same row back
    assert again.get(record.id) == record
    assert again.get(report_run.run_dir) == record
    assert [e.action for e in again.audit_log(record.id)] == ["register"]
    assert again.audit_log()[0].actor == "tester@ci"


def test_register_is_idempotent_and_new_weights_make_a_new_row(registry: RunRegistry, fake_run) -> None:
    folder = fake_run("a", {"test_accuracy": 0.9}, weights="1" * 64)
    first = registry.register_run(folder)
    assert registry.register_run(folder) == first
    assert len(registry.list_runs()) == 1
    assert len(registry.audit_log()) == 1  # a repeated registration is not a new decision

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["model"]["weights_sha256"] = "2" * 64  # retrained into the same folder
    (folder / "manifest.json").write_text(json.dumps(manifest))
    second = registry.register_run(folder)
    assert second.id != first.id
    assert registry.find(folder) == second  # a folder resolves to its newest registration


def test_parents_children_names_and_filters(registry: RunRegistry, fake_run) -> None:
    parent = registry.register_run(fake_run("parent", {"test_accuracy": 0.8}))
    child = registry.register_run(fake_run("child", {"test_accuracy": 0.85}, teacher="t" * 64), [parent.id])
    assert child.parents == [parent.id]
    assert child.teacher_fingerprint == "t" * 64
    assert [c.id for c in registry.children(parent.id)] == [child.id]
    assert registry.get("child").id == child.id
    assert registry.get(str(child.id)).id == child.id
    registry.set_status(child.id, "promoted", details={"why": "test"})
    assert [r.id for r in registry.list_runs(status="promoted")] == [child.id]
    assert registry.list_runs(kind="recalibrate") == []
    with pytest.raises(ConfigError, match="parent run 99 is not registered"):
        registry.register_run(fake_run("orphan", {}), [99])
    with pytest.raises(ConfigError, match="no registered run 'nope'"):
        registry.get("nope")
    with pytest.raises(ConfigError, match="unknown status"):
        registry.set_status(child.id, "shipped")  # type: ignore[arg-type]


def test_metrics_json_adds_metrics(fake_run) -> None:
    folder = fake_run(
        "m", {"test_accuracy": 0.9, "note": "text is ignored"}, extra={"ece": 0.03, "flag": True}
    )
    metrics = collect_metrics(folder, json.loads((folder / "manifest.json").read_text()))
    assert metrics == {"test_accuracy": 0.9, "parameters": 1000.0, "ece": 0.03}


def test_bad_run_directories_fail_with_one_line(registry: RunRegistry, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such run directory"):
        registry.register_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no manifest\.json; fix: "):
        registry.register_run(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"manifest.json:1: invalid JSON"):
        registry.register_run(tmp_path / "broken")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "manifest.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"no model\.weights_sha256"):
        registry.register_run(tmp_path / "noweights")


def test_audit_log_is_append_only(registry: RunRegistry, fake_run) -> None:
    record = registry.register_run(fake_run("a", {"test_accuracy": 0.9}))
    entry = registry.append_audit("gate", record.id, "fail", {"gates": []})
    assert entry.action == "gate" and entry.decision == "fail" and entry.run_id == record.id

    db = sqlite3.connect(registry.path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("UPDATE audit_log SET decision = 'pass' WHERE id = ?", (entry.id,))
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM audit_log WHERE id = ?", (entry.id,))
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM audit_log")
        # Appending still works, and the runs table itself may change status (that is not history).
        db.execute(
            "INSERT INTO audit_log (time, actor, action, details_json) VALUES ('t', 'me', 'note', '{}')"
        )
        db.execute("UPDATE runs SET status = 'rejected' WHERE id = ?", (record.id,))
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("UPDATE runs SET status = 'shipped' WHERE id = ?", (record.id,))  # CHECK constraint
        db.commit()
    finally:
        db.close()
    log = registry.audit_log()
    assert [e.decision for e in log] == ["registered", "fail", None]
    assert registry.get(record.id).status == "rejected"


def test_default_path_follows_the_environment(isolated_registry: Path, fake_run) -> None:
    assert default_registry_path() == isolated_registry
    record = register_run(fake_run("env", {"test_accuracy": 0.5}))
    assert isolated_registry.is_file()
    assert RunRegistry().get(record.id).name == "env"


def test_registry_path_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        RunRegistry(tmp_path)


def test_log_to_mlflow_skips_cleanly_without_mlflow(registry: RunRegistry, fake_run, monkeypatch) -> None:
    record = registry.register_run(fake_run("a", {"test_accuracy": 0.9}))
    monkeypatch.setitem(sys.modules, "mlflow", None)  # makes `import mlflow` raise ImportError
    assert not mlflow_available()
    assert log_to_mlflow(record) is None


@pytest.mark.skipif(
    not mlflow_available(), reason="mlflow is not installed (optional: pip install mlflow-skinny)"
)
def test_log_to_mlflow_writes_a_run(registry: RunRegistry, fake_run, tmp_path: Path, monkeypatch) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    record = registry.register_run(fake_run("a", {"test_accuracy": 0.9}))
    run_id = log_to_mlflow(record, tracking_uri=uri, experiment="tests")
    logged = mlflow.MlflowClient(tracking_uri=uri).get_run(run_id)
    assert logged.data.metrics["test_accuracy"] == pytest.approx(0.9)
    assert logged.data.params["train.lr"] == "0.001"
    assert logged.data.tags["rationalign.weights_hash"] == record.weights_hash


@pytest.mark.skipif(
    not mlflow_available(), reason="mlflow is not installed (optional: pip install mlflow-skinny)"
)
def test_mlflow_failure_is_a_one_line_error(
    registry: RunRegistry, fake_run, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # MLflow 3 refuses a plain folder store
    record = registry.register_run(fake_run("a", {"test_accuracy": 0.9}))
    with pytest.raises(ConfigError, match=r"MLflow logging failed .*; fix: set MLFLOW_TRACKING_URI") as err:
        log_to_mlflow(record, tracking_uri=(tmp_path / "mlruns").as_uri())
    assert "\n" not in str(err.value)
