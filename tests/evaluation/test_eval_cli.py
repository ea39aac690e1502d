"""`rationalign attack` and `rationalign suite` through typer (registered on a fresh app)."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from rationalign.errors import ConfigError, DataError, RationalignError
from rationalign.evaluation.adversarial import AttackSet
from rationalign.evaluation.commands import register
from rationalign.evaluation.wordnet import wordnet_available


@pytest.fixture()
def app() -> typer.Typer:
    application = typer.Typer()
    register(application)
    return application


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.skipif(not wordnet_available(), reason="WordNet not installed (apt-get install wordnet-base)")
def test_attack_writes_a_set_and_reports_pass_rates(app, runner, tiny_data_dir, tmp_path):
    out = tmp_path / "set.jsonl"
    args = [
        "attack",
        str(tiny_data_dir),
        "--out",
        str(out),
        "--generators",
        "synonym,confusable",
        "--encoder",
        "none",
        "--n-per-example",
        "2",
        "--seed",
        "3",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    attack = AttackSet.load(out)
    assert report["n_examples"] == len(attack) > 0
    assert set(report["stats"]) == {"synonym", "confusable"}
    assert attack.seed == 3 and attack.n_per_example == 2
    assert all(0.0 <= s["pass_rate"] <= 1.0 for s in report["stats"].values())
    again = tmp_path / "again.jsonl"
    assert runner.invoke(app, [*args[:3], str(again), *args[4:]]).exit_code == 0
    assert AttackSet.load(again).examples == attack.examples  # same seed, same set


@pytest.mark.skipif(not wordnet_available(), reason="WordNet not installed (apt-get install wordnet-base)")
def test_attack_with_two_swaps_replaces_two_label_carrying_words(app, runner, tiny_data_dir, tmp_path):
    out = tmp_path / "two.jsonl"
    base = ["attack", str(tiny_data_dir), "--generators", "synonym", "--encoder", "none"]
    result = runner.invoke(app, [*base, "--out", str(out), "--swaps", "2", "--n-per-example", "4"])
    assert result.exit_code == 0, result.output
    attack = AttackSet.load(out)
    assert attack.generators[0]["config"]["swaps"] == 2 and attack.generators[0]["config"]["top_words"] == 3
    assert attack.generator_names == ["synonym_x2"]
    assert attack.examples and all(len(e.edits) == 2 for e in attack.examples)
    assert all(len({position for position, _, _ in e.edits}) == 2 for e in attack.examples)
    one = tmp_path / "one.jsonl"
    assert runner.invoke(app, [*base, "--out", str(one)]).exit_code == 0
    assert all(len(e.edits) == 1 for e in AttackSet.load(one).examples)
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "x.jsonl"), "--swaps", "0"])
    assert isinstance(result.exception, ConfigError) and "--swaps" in str(result.exception)
    assert not (tmp_path / "x.jsonl").exists()


def test_attack_bad_inputs(app, runner, tiny_data_dir, tmp_path):
    result = runner.invoke(
        app, ["attack", str(tiny_data_dir), "--out", str(tmp_path / "x.jsonl"), "--generators", "magic"]
    )
    assert isinstance(result.exception, ConfigError) and "synonym" in str(result.exception)
    result = runner.invoke(
        app,
        [
            "attack",
            str(tiny_data_dir),
            "--out",
            str(tmp_path / "x.jsonl"),
            "--generators",
            "llm",
            "--encoder",
            "none",
        ],
    )
    assert isinstance(result.exception, ConfigError) and "--llm" in str(result.exception)
    result = runner.invoke(app, ["attack", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.jsonl")])
    assert isinstance(result.exception, DataError)
    assert not (tmp_path / "x.jsonl").exists()  # nothing half written


def test_suite_command_writes_one_metrics_json(app, runner, tiny_data_dir, tiny_classifier, tmp_path):
    model = tiny_classifier.save(tmp_path / "model")
    out = tmp_path / "metrics.json"
    result = runner.invoke(
        app,
        [
            "suite",
            str(model),
            "--data",
            str(tiny_data_dir),
            "--out",
            str(out),
            "--limit",
            "3",
            "--no-stability",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "clean accuracy" in result.stdout
    metrics = json.loads(out.read_text())
    assert metrics["schema_version"] == 1 and metrics["split"] == "test"
    assert metrics["metrics"]["faithfulness"]["n_examples"] == 3
    assert (tmp_path / "metrics.records.jsonl").is_file()
    result = runner.invoke(
        app,
        [
            "suite",
            str(model),
            "--data",
            str(tiny_data_dir),
            "--limit",
            "2",
            "--no-stability",
            "--no-calibrate",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["config"]["calibrate"] is False and "after" not in printed["metrics"]["calibration"]


@pytest.mark.skipif(not wordnet_available(), reason="WordNet not installed (apt-get install wordnet-base)")
def test_suite_merges_repeated_attack_sets(app, runner, tiny_data_dir, tiny_classifier, tmp_path):
    model = tiny_classifier.save(tmp_path / "model")
    sets = []
    for swaps in ("1", "2"):
        path = tmp_path / f"swaps{swaps}.jsonl"
        args = ["attack", str(tiny_data_dir), "--out", str(path), "--generators", "synonym"]
        result = runner.invoke(app, [*args, "--encoder", "none", "--swaps", swaps, "--n-per-example", "3"])
        assert result.exit_code == 0, result.output
        sets += ["--attack", str(path)]
    args = ["suite", str(model), "--data", str(tiny_data_dir), "--limit", "2", "--no-stability"]
    result = runner.invoke(app, [*args, "--no-calibrate", "--json", *sets])
    assert result.exit_code == 0, result.output
    adversarial = json.loads(result.stdout)["metrics"]["adversarial"]
    sizes = [len(AttackSet.load(path)) for path in sets[1::2]]
    assert (
        adversarial["synonym"]["n_examples"] == sizes[0]
        and adversarial["synonym_x2"]["n_examples"] == sizes[1]
    )
    assert adversarial["worst_case"]["n_examples"] == sum(sizes)
    result = runner.invoke(app, [*args, "--no-calibrate", "--attack", sets[1], "--attack", sets[1]])
    assert isinstance(result.exception, ConfigError) and "share generator names" in str(result.exception)


def test_suite_command_errors(app, runner, tiny_data_dir, tmp_path):
    result = runner.invoke(app, ["suite", str(tmp_path), "--data", str(tiny_data_dir)])
    assert isinstance(result.exception, RationalignError) and "not a rationalign model" in str(
        result.exception
    )
    result = runner.invoke(
        app, ["suite", str(tmp_path), "--data", str(tiny_data_dir), "--attribution", "shap"]
    )
    assert isinstance(result.exception, ConfigError)
    result = runner.invoke(
        app, ["suite", str(tmp_path), "--data", str(tiny_data_dir), "--no-calibrate", "--store-calibration"]
    )
    assert isinstance(result.exception, RationalignError)
