"""Promotion gates: each gate passes, fails and fails on a missing metric; audit rows; promotion; CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from rationalign.errors import ConfigError, RationalignError
from rationalign.report.commands import register
from rationalign.report.gates import GateSpec, check_gates, evaluate_gates, load_gates, parse_gates
from rationalign.report.registry import RunRegistry

REPO = Path(__file__).resolve().parents[2]


def one(results):
    assert len(results) == 1
    return results[0]


@pytest.mark.parametrize(
    ("metrics", "passed", "reason"),
    [
        ({"test_accuracy": 0.90}, True, "test_accuracy = 0.9 >= 0.85"),
        ({"test_accuracy": 0.85}, True, ">= 0.85"),  # the threshold itself passes
        ({"test_accuracy": 0.80}, False, "test_accuracy = 0.8 < 0.85"),
        ({"accuracy": 0.90}, True, "accuracy = 0.9"),  # exact name wins over test_ form
        ({"test_macro_f1": 0.99}, False, "run has no metric 'test_accuracy'"),
        ({"test_accuracy": float("nan")}, False, "run has no metric"),  # NaN is not a value
    ],
)
def test_min_gate(metrics, passed, reason) -> None:
    name = "accuracy" if "accuracy" in metrics else "test_accuracy"
    result = one(check_gates(metrics, GateSpec(min={name: 0.85})))
    assert result.passed is passed
    assert reason in result.reason
    assert result.name == f"min.{name}"
    if "no metric" in reason:
        assert result.value is None


def test_min_gate_finds_the_test_form_of_a_name() -> None:
    result = one(check_gates({"test_accuracy": 0.9}, GateSpec(min={"accuracy": 0.85})))
    assert result.passed and result.value == 0.9 and "test_accuracy" in result.reason


@pytest.mark.parametrize(
    ("metrics", "passed", "fragment"),
    [
        ({"ece": 0.03}, True, "ece = 0.03 <= 0.05"),
        ({"ece": 0.08}, False, "ece = 0.08 > 0.05"),
        ({"test_ece": 0.04}, True, "test_ece = 0.04"),
        ({"test_accuracy": 0.9}, False, "run has no metric 'ece' (recorded: test_accuracy)"),
    ],
)
def test_max_gate(metrics, passed, fragment) -> None:
    result = one(check_gates(metrics, GateSpec(max={"ece": 0.05})))
    assert result.passed is passed
    assert fragment in result.reason


def test_latency_gate_pass_fail_missing() -> None:
    spec = GateSpec(max={"p50_latency_ms": 10})
    assert one(check_gates({"p50_latency_ms": 4.2}, spec)).passed
    assert not one(check_gates({"p50_latency_ms": 12.0}, spec)).passed
    assert "no metric 'p50_latency_ms'" in one(check_gates({}, spec)).reason


def test_teacher_accuracy_within() -> None:
    spec = GateSpec(relative_to_teacher={"accuracy_within": 0.01})
    ok = one(check_gates({"test_accuracy": 0.905}, spec, {"test_accuracy": 0.91}))
    assert ok.passed and ok.value == pytest.approx(0.005)
    bad = one(check_gates({"test_accuracy": 0.85}, spec, {"test_accuracy": 0.91}))
    assert not bad.passed and bad.value == pytest.approx(0.06)
    better = one(check_gates({"test_accuracy": 0.95}, spec, {"test_accuracy": 0.91}))
    assert better.passed  # beating the teacher is within any tolerance
    no_teacher = one(check_gates({"test_accuracy": 0.95}, spec))
    assert not no_teacher.passed and "no teacher run given" in no_teacher.reason
    teacher_lacks = one(check_gates({"test_accuracy": 0.95}, spec, {"test_macro_f1": 0.9}))
    assert not teacher_lacks.passed and "teacher has no metric 'accuracy'" in teacher_lacks.reason
    run_lacks = one(check_gates({}, spec, {"test_accuracy": 0.9}))
    assert not run_lacks.passed and "run has no metric 'accuracy'" in run_lacks.reason


def test_cost_reduction_prefers_latency_then_parameters() -> None:
    spec = GateSpec(relative_to_teacher={"cost_reduction_at_least": 0.5})
    latency = one(
        check_gates(
            {"p50_latency_ms": 2.0, "parameters": 100.0}, spec, {"p50_latency_ms": 10.0, "parameters": 110.0}
        )
    )
    assert latency.passed and latency.value == pytest.approx(0.8) and "p50_latency_ms" in latency.reason
    params = one(check_gates({"parameters": 22.7e6}, spec, {"parameters": 109.5e6}))
    assert params.passed and params.value == pytest.approx(1 - 22.7 / 109.5) and "parameters" in params.reason
    fail = one(check_gates({"parameters": 80e6}, spec, {"parameters": 109.5e6}))
    assert not fail.passed
    missing = one(check_gates({"test_accuracy": 1.0}, spec, {"test_accuracy": 1.0}))
    assert not missing.passed and "neither p50_latency_ms nor parameters" in missing.reason


def test_baseline_gain() -> None:
    spec = GateSpec(relative_to_baseline={"adversarial_accuracy_gain": 0.0})
    gain = one(check_gates({"adversarial_accuracy": 0.7}, spec, None, {"adversarial_accuracy": 0.6}))
    assert gain.passed and gain.value == pytest.approx(0.1)
    equal = one(check_gates({"adversarial_accuracy": 0.6}, spec, None, {"adversarial_accuracy": 0.6}))
    assert equal.passed
    loss = one(check_gates({"adversarial_accuracy": 0.5}, spec, None, {"adversarial_accuracy": 0.6}))
    assert not loss.passed and loss.value == pytest.approx(-0.1)
    assert "no baseline run given" in one(check_gates({"adversarial_accuracy": 0.7}, spec)).reason
    lacking = one(check_gates({"adversarial_accuracy": 0.7}, spec, None, {"test_accuracy": 0.9}))
    assert not lacking.passed and "baseline has no metric 'adversarial_accuracy'" in lacking.reason


def test_example_gates_file_parses() -> None:
    spec = load_gates(REPO / "examples" / "gates.yaml")
    assert spec.min["test_accuracy"] == 0.85
    assert spec.max == {"ece": 0.05, "p50_latency_ms": 10.0}
    assert spec.relative_to_teacher == {"accuracy_within": 0.01, "cost_reduction_at_least": 0.5}
    assert spec.relative_to_baseline == {"adversarial_accuracy_gain": 0.0}
    assert spec.digest and len(spec) == 7


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("min:\n  test_accuracy: 0.9\nmaxx:\n  ece: 0.1\n", ":3: unknown section 'maxx'"),
        ("min:\n  test_accuracy: high\n", ":2: min.test_accuracy = 'high' is not a number"),
        ("min:\n  test_accuracy: true\n", ":2: min.test_accuracy = True is not a number"),
        ("relative_to_teacher:\n  accuracy_close: 0.1\n", ":2: unknown teacher gate 'accuracy_close'"),
        ("relative_to_baseline:\n  accuracy: 0.1\n", ":2: unknown baseline gate 'accuracy'"),
        ("min: [1, 2]\n", ":1: min must map metric names to numbers"),
        ("min:\n  a: [1\n", "invalid YAML"),
        ("# nothing\n", "defines no gates"),
        ("- 1\n", ":1: the top level must be a mapping"),
    ],
)
def test_bad_gates_files_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "gates.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_gates(path)
    assert str(err.value).startswith(str(path))
    assert message in str(err.value) and "; fix: " in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_gates_file() -> None:
    with pytest.raises(ConfigError, match="gates file not found"):
        load_gates("/nonexistent/gates.yaml")
    with pytest.raises(ConfigError, match="defines no gates"):
        parse_gates({"min": None})


def test_evaluate_gates_audits_every_decision_and_promotes(registry: RunRegistry, fake_run) -> None:
    student = fake_run(
        "student",
        {"test_accuracy": 0.90},
        extra={"ece": 0.03, "adversarial_accuracy": 0.7},
        parameters=22_700_000,
    )
    teacher = fake_run("teacher", {"test_accuracy": 0.905}, parameters=109_500_000)
    baseline = fake_run("baseline", {"test_accuracy": 0.88}, extra={"adversarial_accuracy": 0.6})
    spec = parse_gates(
        {
            "min": {"test_accuracy": 0.85},
            "max": {"ece": 0.05},
            "relative_to_teacher": {"accuracy_within": 0.01, "cost_reduction_at_least": 0.5},
            "relative_to_baseline": {"adversarial_accuracy_gain": 0.0},
        }
    )

    report = evaluate_gates(student, spec, teacher, baseline, registry=registry, promote=True)
    assert report.passed, report.to_dict()
    assert len(report.gates) == 5
    record = registry.get(report.run_id)
    assert record.status == "promoted"
    log = registry.audit_log(record.id)
    assert [(e.action, e.decision) for e in log] == [
        ("register", "registered"),
        ("gate", "pass"),
        ("promote", "promoted"),
    ]
    assert log[1].details["gates"][0]["name"] == "min.test_accuracy"
    assert log[1].details["teacher_id"] == registry.get(teacher).id

    # The same run with a stricter gate and no baseline: fails, is rejected, and says why.
    strict = parse_gates(
        {"min": {"test_accuracy": 0.95}, "relative_to_baseline": {"adversarial_accuracy_gain": 0.0}}
    )
    failed = evaluate_gates(record.id, strict, registry=registry, promote=True)
    assert not failed.passed
    assert [g.name for g in failed.failures] == [
        "min.test_accuracy",
        "relative_to_baseline.adversarial_accuracy_gain",
    ]
    assert registry.get(record.id).status == "rejected"
    assert [e.decision for e in registry.audit_log(record.id)][-2:] == ["fail", "rejected"]

    # Without --promote a decision is still logged but the status is left alone.
    evaluate_gates(record.id, spec, teacher, baseline, registry=registry)
    assert registry.get(record.id).status == "rejected"
    assert registry.audit_log(record.id)[-1].action == "gate"


def test_gate_cli_exit_codes(tmp_path: Path, fake_run, registry: RunRegistry) -> None:
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    good = fake_run("good", {"test_accuracy": 0.9})
    gates = tmp_path / "gates.yaml"
    gates.write_text("min:\n  test_accuracy: 0.85\n")
    args = ["gate", str(good), "--gates", str(gates), "--registry", str(registry.path)]

    passed = runner.invoke(app, [*args, "--json"])
    assert passed.exit_code == 0, passed.output
    assert json.loads(passed.stdout)["passed"] is True

    gates.write_text("min:\n  test_accuracy: 0.85\nmax:\n  ece: 0.05\n")  # ece not recorded -> fails
    failed = runner.invoke(app, args)
    assert failed.exit_code == 1, failed.output
    assert "FAIL" in failed.stdout and "no metric 'ece'" in failed.stdout

    gates.write_text("min:\n  test_accuracy: lots\n")
    bad = runner.invoke(app, args)
    assert isinstance(bad.exception, RationalignError)  # cli.main turns this into exit code 2
    assert ":2: min.test_accuracy = 'lots' is not a number" in str(bad.exception)
    assert [e.decision for e in registry.audit_log(action="gate")] == ["pass", "fail"]

    missing_run = runner.invoke(
        app,
        ["gate", "12345", "--gates", str(REPO / "examples" / "gates.yaml"), "--registry", str(registry.path)],
    )
    assert isinstance(missing_run.exception, ConfigError)
    assert "no registered run '12345'" in str(missing_run.exception)
