"""The HTML report: sections, self-containment, escaping of user text, optional inputs and fallbacks."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from rationalign.errors import ConfigError, DataError
from rationalign.report.commands import register
from rationalign.report.gates import evaluate_gates, parse_gates
from rationalign.report.html import build_report, heat_color
from rationalign.report.registry import RunRegistry
from rationalign.training.run import RunResult

from .conftest import XSS_TEXT

ADVERSARIAL_XSS = "<script>alert(1)</script> why is my card linking failing"
QUEUE_XSS = '<img src=x onerror="alert(2)"> top up failed'
SECTIONS = ("heatmaps", "reliability", "confusion", "divergence", "gates", "provenance")
EXTERNAL = re.compile(
    r"""(?:\b(?:src|href|xlink:href|action|poster|srcset)\s*=\s*["']?\s*(?:https?:)?//)|url\(\s*["']?\s*(?:https?:)?//|@import""",
    re.IGNORECASE,
)


def external_references(html: str) -> list[str]:
    return [m.group(0) for m in EXTERNAL.finditer(html)]


def add_optional_files(run_dir: Path) -> None:
    (run_dir / "adversarial.jsonl").write_text(
        json.dumps({"text": ADVERSARIAL_XSS, "label": "card_linking"})
        + "\n"
        + json.dumps({"text": "what exchange rate applies to my stolen card", "label": "lost_or_stolen_card"})
        + "\n",
        encoding="utf-8",
    )
    (run_dir / "divergence_queue.jsonl").write_text(
        json.dumps(
            {
                "text": QUEUE_XSS,
                "student_label": "top_up_failed",
                "teacher_label": "card_linking",
                "divergence": 0.62,
            }
        )
        + "\n"
        + json.dumps(
            {
                "text": "card never came",
                "student_label": "card_linking",
                "teacher_label": "card_arrival",
                "divergence": 0.91,
            }
        )
        + "\n",
        encoding="utf-8",
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, report_run: RunResult, fake_run_module) -> dict:
    """One report of the real run (plus optional files), with gate decisions and an earlier run."""
    import shutil

    root = tmp_path_factory.mktemp("html")
    run_dir = root / "student-run"
    shutil.copytree(report_run.run_dir, run_dir, ignore=shutil.ignore_patterns("checkpoint"))
    add_optional_files(run_dir)
    registry = RunRegistry(root / "registry.sqlite")
    earlier = registry.register_run(fake_run_module(root, report_run.manifest["data"]["fingerprint"]))
    evaluate_gates(
        run_dir, parse_gates({"min": {"test_accuracy": 0.2}, "max": {"ece": 0.05}}), registry=registry
    )
    out = build_report([run_dir], root / "out" / "report.html", registry)
    return {
        "html": out.read_text(encoding="utf-8"),
        "path": out,
        "run_dir": run_dir,
        "earlier": earlier,
        "registry": registry,
    }


@pytest.fixture(scope="module")
def fake_run_module():
    def make(root: Path, fingerprint: str) -> Path:
        folder = root / "earlier-run"
        folder.mkdir()
        (folder / "manifest.json").write_text(
            json.dumps(
                {
                    "kind": "train",
                    "data": {"fingerprint": fingerprint},
                    "config": {},
                    "model": {"weights_sha256": "e" * 64, "parameters": 5},
                    "metrics": {"test_accuracy": 0.4321, "test_macro_f1": 0.3},
                }
            )
        )
        return folder

    return make


def test_report_has_every_section(built: dict) -> None:
    html = built["html"]
    assert html.startswith("<!DOCTYPE html>")
    assert 'id="metrics"' in html
    for section in SECTIONS:
        assert f'id="run-1-{section}"' in html, section
    assert "Word attributions" in html and "Calibration" in html and "Confusion pairs" in html
    assert "Divergence queue" in html and "Promotion gates" in html and "Provenance" in html


def test_metrics_table_compares_with_earlier_runs(built: dict, report_run: RunResult) -> None:
    html = built["html"]
    table = html[
        html.index('class="metrics-table"') : html.index("</table>", html.index('class="metrics-table"'))
    ]
    assert f"#{built['earlier'].id} earlier-run" in table and "(earlier)" in table
    assert f"{report_run.manifest['metrics']['test_accuracy']:.4f}" in table
    assert "0.4321" in table
    delta = report_run.manifest["metrics"]["test_accuracy"] - 0.4321
    assert f"{delta:+.4f}" in table
    assert "test_ece" in table  # recomputed from the test set


def test_report_is_self_contained(built: dict) -> None:
    html = built["html"]
    assert external_references(html) == []
    assert "<script" not in html.lower()  # no JavaScript at all, and no injected tags
    assert "<link" not in html.lower()
    assert "<svg" in html  # figures are inline
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html
    assert built["path"].stat().st_mode & 0o044  # readable by others, like any file the user writes


def test_external_reference_check_catches_urls() -> None:
    assert external_references('<img src="https://cdn.example/x.png">')
    assert external_references("<link href='//cdn.example/a.css'>")
    assert external_references('<div style="background: url(http://x/y.png)">')
    assert external_references("<style>@import 'a.css';</style>")
    assert external_references('<a href="#metrics">ok</a> xmlns="http://www.w3.org/2000/svg"') == []


def test_user_text_is_escaped(built: dict) -> None:
    html = built["html"]
    for raw in (XSS_TEXT, ADVERSARIAL_XSS, QUEUE_XSS):
        assert raw not in html
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt; top up failed" in html
    # The adversarial utterance is shown as words of a heat-map, each one escaped.
    assert '<span class="w"' in html and "&lt;" in html
    assert "<img" not in html


def test_heatmaps_reliability_confusion_divergence_gates_provenance(
    built: dict, report_run: RunResult
) -> None:
    html = built["html"]
    for kind in ("sampled", "worst", "adversarial"):
        assert f'class="heat" data-kind="{kind}"' in html, kind
    assert "student (gxi)" in html
    assert "no teacher or prior rows" in html  # says where the rows come from
    assert "Adversarial set: 2 examples" in html
    assert "recomputed on 41 test examples" in html and "Reliability diagram" in html
    test = json.loads((report_run.run_dir / "test_metrics.json").read_text())
    if test["most_confused"]:
        pair = test["most_confused"][0]
        assert f"<td>{pair['true_label']}</td><td>{pair['predicted_label']}</td>" in html
    assert "2 examples where student and teacher disagree" in html
    assert html.index("card never came") < html.index("top up failed")  # ordered by divergence
    assert "FAIL" in html and "run has no metric &#39;ece&#39;" in html
    assert report_run.manifest["model"]["weights_sha256"] in html
    assert report_run.manifest["data"]["fingerprint"] in html
    assert (report_run.manifest["git_commit"] or "unknown") in html
    assert "Training history" in html


def test_stored_attributions_show_teacher_and_prior_rows(tmp_path: Path, run_copy) -> None:
    run_dir = run_copy()
    words = ["my", "card", "<b>never</b>", "came"]
    (run_dir / "attributions.jsonl").write_text(
        json.dumps(
            {
                "text": "my card <b>never</b> came",
                "kind": "worst",
                "label": "card_arrival",
                "predicted": "top_up_failed",
                "words": words,
                "student": [0.1, 0.5, -0.2, 0.3],
                "teacher": [0.0, 0.9, 0.1, 0.6],
                "prior": [0.0, 1.0, 0.0, 1.0],
            }
        )
        + "\n"
    )
    html = build_report(run_dir, tmp_path / "r.html").read_text()
    assert "from attributions.jsonl" in html
    for source in ("student", "teacher", "prior"):
        assert f'<span class="src">{source}</span>' in html
    assert "&lt;b&gt;never&lt;/b&gt;" in html and "<b>never</b>" not in html
    assert heat_color(1.0, 1.0) in html  # the strongest word of a row is fully coloured
    assert "Not in the registry (no registry given)" in html


def test_missing_attribution_module_is_a_visible_note(tmp_path: Path, run_copy, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "rationalign.attribution.gradient", None)
    html = build_report(run_copy(), tmp_path / "r.html").read_text()
    assert "rationalign.attribution.gradient is not available" in html
    assert 'class="heat"' not in html


def test_unreachable_data_falls_back_to_stored_reliability(tmp_path: Path, run_copy) -> None:
    run_dir = run_copy()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["config"]["data"]["path"] = str(tmp_path / "gone")
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    html = build_report(run_dir, tmp_path / "a.html").read_text()
    assert "test data not reachable" in html and "No reliability data" in html
    bins = [
        {
            "lower": i / 15,
            "upper": (i + 1) / 15,
            "count": 3 if i in (9, 12) else 0,
            "mean_confidence": 0.65 if i == 9 else (0.83 if i == 12 else float("nan")),
            "accuracy": 0.5 if i == 9 else (1.0 if i == 12 else float("nan")),
        }
        for i in range(15)
    ]
    (run_dir / "calibration.json").write_text(
        json.dumps(
            {
                "ece": 0.12,
                "mce": 0.17,
                "brier": 0.3,
                "nll": 0.7,
                "n_examples": 6,
                "n_bins": 15,
                "reliability": {"n_examples": 6, "bins": bins},
            }
        )
    )
    html = build_report(run_dir, tmp_path / "b.html", attributions=False).read_text()
    assert "stored in calibration.json" in html and "0.1200" in html and "<svg" in html
    assert "switched off" in html


def test_bad_inputs(tmp_path: Path, run_copy) -> None:
    with pytest.raises(ConfigError, match="no run directories"):
        build_report([], tmp_path / "r.html")
    with pytest.raises(ConfigError, match="no such run directory"):
        build_report([tmp_path / "missing"], tmp_path / "r.html")
    run_dir = run_copy()
    (run_dir / "adversarial.jsonl").write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(DataError, match=r"adversarial.jsonl:2: malformed JSON"):
        build_report([run_dir], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()  # nothing half written
    assert not list(tmp_path.glob(".r.html*"))


def test_report_cli(tmp_path: Path, run_copy) -> None:
    app = typer.Typer()
    register(app)
    first, second = run_copy("first"), run_copy("second")
    out = tmp_path / "cli.html"
    result = CliRunner().invoke(
        app, ["report", str(first), str(second), "--out", str(out), "--no-attributions", "--examples", "2"]
    )
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert 'id="run-1"' in html and 'id="run-2"' in html
    assert external_references(html) == []


def test_suite_output_feeds_gates_and_the_reliability_fallback(
    tmp_path: Path, run_copy, report_data, registry: RunRegistry
) -> None:
    from rationalign.evaluation.suite import evaluate_suite

    run_dir = run_copy()
    evaluate_suite(run_dir / "model", report_data["data"], limit=2, stability=False).save(
        run_dir / "suite.json"
    )
    record = registry.register_run(run_dir)
    suite = json.loads((run_dir / "suite.json").read_text())["metrics"]
    assert record.metrics["ece"] == pytest.approx(suite["calibration"]["after"]["ece"])
    assert record.metrics["suite.clean.accuracy"] == pytest.approx(suite["clean"]["accuracy"])
    report = evaluate_gates(record.id, parse_gates({"max": {"ece": 1.0}}), registry=registry)
    assert report.passed and report.gates[0].value == pytest.approx(record.metrics["ece"])

    # An attack set from `rationalign attack` (header line first) as the run's adversarial.jsonl.
    (run_dir / "adversarial.jsonl").write_text(
        json.dumps({"type": "header", "format": "rationalign-attack", "n_examples": 1})
        + "\n"
        + json.dumps(
            {
                "type": "example",
                "original": "my card never came",
                "text": "my card never arrived",
                "label": "card_arrival",
                "edits": [[3, "came", "arrived"]],
                "generator": "synonym",
                "validity": 0.9,
                "seed": 0,
            }
        )
        + "\n"
    )
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["config"]["data"]["path"] = str(tmp_path / "gone")  # test data unreachable: use the stored one
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    html = build_report(run_dir, tmp_path / "r.html", attributions=False).read_text()
    assert "stored in suite.json (after temperature scaling)" in html
    assert "Adversarial set: 1 example;" in html or "Adversarial set: 1 example." in html
    assert "suite.clean.accuracy" not in html  # dozens of suite.* numbers stay out of the table
