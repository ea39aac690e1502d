"""``rationalign priors`` through its own Typer app (the lead wires ``register`` into the main CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from rationalign.attribution.commands import register
from rationalign.attribution.store import PriorStore
from rationalign.attribution.words import split_words
from rationalign.errors import ConfigError, DataError, RationalignError


@pytest.fixture()
def app():
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keep "priors" a subcommand, as in the main app
        pass

    return app


@pytest.fixture()
def model_dir(tmp_path, tiny_classifier):
    folder = tmp_path / "model"
    tiny_classifier.save(folder)
    return folder


def _invoke(app, *args):
    return CliRunner().invoke(app, ["priors", *map(str, args)])


def test_lime_priors_into_a_store_resume_and_export(app, model_dir, tiny_data_dir, tmp_path):
    store, out = tmp_path / "priors.sqlite", tmp_path / "out" / "lime.jsonl"
    common = [
        "--model",
        model_dir,
        "--data",
        tiny_data_dir,
        "--split",
        "test",
        "--method",
        "lime",
        "--store",
        store,
    ]
    first = _invoke(app, *common, "--limit", 5, "--n-masks", 32, "--seed", 1, "--export", out, "--json")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.output.strip().splitlines()[-1])
    assert summary["computed"] == 5 and summary["reused"] == 0 and summary["texts_scored"] > 5
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    test_rows = [json.loads(line) for line in (tiny_data_dir / "test.jsonl").read_text().splitlines()][:5]
    assert [r["text"] for r in rows] == [r["text"] for r in test_rows]
    assert all(r["words"] == split_words(r["text"]) and len(r["scores"]) == len(r["words"]) for r in rows)
    assert rows[0]["params"]["n_masks"] == 32 and rows[0]["method"] == "lime"
    # Re-running with a larger limit computes only the new rows; the human summary says so.
    again = _invoke(app, *common, "--limit", 8, "--n-masks", 32, "--seed", 1)
    assert again.exit_code == 0, again.output
    assert "3 computed, 5 already stored" in again.output
    with PriorStore(store) as s:
        assert s.count(method="lime") == 8


def test_lime_after_cap_reads_the_teachers_scores_from_the_store(app, model_dir, tiny_data_dir, tmp_path):
    """CAP and LIME with equal budgets mask the same texts: a LIME run after CAP (another process, a day
    later) reads CAP's teacher scores from the store instead of asking the teacher again."""
    common = ["--teacher", model_dir, "--data", tiny_data_dir, "--split", "valid", "--limit", 3]
    common += ["--n-masks", 16]

    def run(store, method, *extra):
        result = _invoke(app, *common, "--store", store, "--method", method, "--json", *extra)
        assert result.exit_code == 0, result.output
        return json.loads(result.output.strip().splitlines()[-1])

    kept = tmp_path / "kept.sqlite"
    cap = run(kept, "cap")
    assert cap["teacher_texts"]["scored"] > 0 and cap["teacher_texts"]["from_store"] == 0
    lime = run(kept, "lime")
    assert lime["computed"] == 3 and lime["teacher_texts"]["scored"] == 0
    assert lime["teacher_texts"]["from_store"] == cap["teacher_texts"]["scored"]
    # the same priors as LIME computed by asking the teacher, in a store that keeps no scores
    forgot = tmp_path / "forgot.sqlite"
    run(forgot, "cap", "--no-keep-teacher-scores")
    fresh = run(forgot, "lime", "--no-keep-teacher-scores")
    assert fresh["teacher_texts"]["scored"] == cap["teacher_texts"]["scored"]
    with PriorStore(kept) as a, PriorStore(forgot) as b:
        assert b.count_scores() == 0
        rows_a = _export_lines(a, tmp_path, "lime")
        (tmp_path / "forgot").mkdir()
        rows_b = _export_lines(b, tmp_path / "forgot", "lime")
    strip = [{k: v for k, v in json.loads(line).items() if k != "created_at"} for line in rows_a]
    assert strip == [{k: v for k, v in json.loads(line).items() if k != "created_at"} for line in rows_b]


def test_cap_with_the_classifier_as_teacher_and_a_hybrid(
    app, model_dir, tiny_data_dir, tmp_path, tiny_classifier
):
    store = tmp_path / "p.sqlite"
    base = ["--model", model_dir, "--data", tiny_data_dir, "--split", "valid", "--store", store, "--limit", 3]
    cap = _invoke(app, *base, "--method", "cap", "--n-masks", 16, "--json")
    assert cap.exit_code == 0, cap.output
    # The same classifier named as --teacher (a bare folder) has the same fingerprint: nothing recomputed.
    rest = base[2:]
    same = _invoke(app, "--teacher", model_dir, *rest, "--method", "cap", "--n-masks", 16, "--json")
    assert same.exit_code == 0, same.output
    assert json.loads(same.output.strip().splitlines()[-1])["reused"] == 3
    hybrid = _invoke(app, *base, "--method", "hybrid", "--hybrid-of", "cap,gxi", "--n-masks", 16, "--json")
    assert hybrid.exit_code == 0, hybrid.output
    with PriorStore(store) as s:
        assert s.count(method="cap") == 3 and s.count(method="cap-hybrid") == 3
        rows = [json.loads(line) for line in _export_lines(s, tmp_path, "cap-hybrid")]
        cap_rows = {json.loads(line)["text"]: json.loads(line) for line in _export_lines(s, tmp_path, "cap")}
    from rationalign.attribution.base import normalise
    from rationalign.attribution.gradient import GradientXInput

    gxi = GradientXInput(tiny_classifier).attribute([r["text"] for r in rows], [r["target"] for r in rows])
    for row, g in zip(rows, gxi, strict=True):
        assert row["meta"]["components"] == ["cap", "gxi"]
        assert [c["name"] for c in row["params"]["components"]] == ["cap", "gxi"]
        # The mean of the sum-normalised CAP (same masks as the stored CAP row) and GxI priors.
        expected = (normalise(cap_rows[row["text"]]["scores"]) + normalise(g.scores)) / 2
        np.testing.assert_allclose(row["scores"], expected, rtol=1e-4, atol=1e-6)


def _export_lines(store, tmp_path, method):
    path = tmp_path / f"{method}.jsonl"
    store.export_jsonl(path, method=method)
    return path.read_text().splitlines()


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (["--method", "magic"], ConfigError, "unknown"),
        (["--method", "ig", "--teacher", "classifier:MODEL"], ConfigError, "needs --model"),
        (["--method", "lime", "--limit", "0", "--model", "MODEL"], ConfigError, "--limit"),
        (["--method", "lime", "--n-masks", "0", "--model", "MODEL"], ConfigError, "--n-masks"),
        (["--method", "lime"], ConfigError, "no model"),
        (["--method", "lime", "--model", "NOPE"], ConfigError, "no such model folder"),
        (["--method", "lime", "--model", "MODEL", "--split", "nosuch"], DataError, "no split"),
        (["--method", "cap", "--teacher", "weird:thing"], ConfigError, "weird:thing"),
        (["--method", "hybrid", "--model", "MODEL", "--hybrid-of", "cap,cap"], ConfigError, "distinct"),
    ],
)
def test_user_errors_are_rationalign_errors(app, model_dir, tiny_data_dir, tmp_path, args, error, message):
    args = [
        str(model_dir) if a == "MODEL" else "classifier:" + str(model_dir) if a == "classifier:MODEL" else a
        for a in args
    ]
    result = _invoke(app, "--data", tiny_data_dir, "--store", tmp_path / "s.sqlite", *args)
    assert result.exit_code != 0
    assert isinstance(result.exception, error) and isinstance(result.exception, RationalignError)
    assert message in str(result.exception) and "\n" not in str(result.exception)


def test_labels_unknown_to_the_model_name_file_and_line(app, model_dir, tmp_path):
    data = tmp_path / "other.jsonl"
    data.write_text('{"text": "block my card", "label": "card_block"}\n{"text": "hi", "label": "greeting"}\n')
    result = _invoke(app, "--data", data, "--store", tmp_path / "s.sqlite", "--model", model_dir)
    assert isinstance(result.exception, DataError)
    assert f"{data}:2:" in str(result.exception) and "greeting" in str(result.exception)
    assert not (tmp_path / "s.sqlite").exists() or PriorStore(tmp_path / "s.sqlite").count() == 0


def test_priors_match_the_library(app, model_dir, tiny_data_dir, tmp_path, tiny_classifier):
    from rationalign.attribution.lime import LimePrior

    out = tmp_path / "lime.jsonl"
    args = ["--model", model_dir, "--data", tiny_data_dir / "test.jsonl", "--store", tmp_path / "s.sqlite"]
    result = _invoke(app, *args, "--limit", 2, "--n-masks", 24, "--export", out, "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [
        tiny_classifier.label_space.id(json.loads(line)["label"])
        for line in (tiny_data_dir / "test.jsonl").read_text().splitlines()[:2]
    ]
    expected = LimePrior(tiny_classifier, n_samples=24, seed=0).attribute([r["text"] for r in rows], ids)
    for row, exp in zip(rows, expected, strict=True):
        assert row["target"] == exp.target
        np.testing.assert_allclose(row["scores"], exp.scores, rtol=1e-4, atol=1e-6)  # float32 store


@pytest.mark.slow
def test_cap_with_the_shipped_llm_teacher(app, tiny_data_dir, tmp_path):
    """CAP for real: the shipped SmolLM2 teacher scores masked prompts over the whole label space."""
    pytest.importorskip("rationalign.teachers.llm")
    from rationalign.models.resolver import resolve_model

    try:
        resolve_model("smollm2-135m")
    except RationalignError as err:
        pytest.skip(f"shipped LLM not installed: {err}")
    out = tmp_path / "cap.jsonl"
    args = ["--teacher", "llm:smollm2-135m?batch_size=32", "--data", tiny_data_dir, "--split", "test"]
    result = _invoke(
        app, *args, "--method", "cap", "--store", tmp_path / "s.sqlite", "--limit", 2, "--n-masks", 8
    )
    assert result.exit_code == 0, result.output
    assert "2 priors" in result.output and "teacher tokens per utterance" in result.output
    with PriorStore(tmp_path / "s.sqlite") as store:
        assert store.export_jsonl(out, method="cap") == 2
    for row in map(json.loads, out.read_text().splitlines()):
        assert row["words"] == split_words(row["text"]) and np.isfinite(row["scores"]).all()
        assert row["params"]["target"] == "margin" and row["meta"]["n_masks"] <= 8


@pytest.mark.parametrize("method", ["ig", "gxi", "attention"])
def test_model_internal_methods_store_word_priors(app, model_dir, tiny_data_dir, tmp_path, method):
    out = tmp_path / f"{method}.jsonl"
    args = [
        "--model",
        model_dir,
        "--data",
        tiny_data_dir,
        "--split",
        "test",
        "--store",
        tmp_path / "s.sqlite",
    ]
    result = _invoke(app, *args, "--method", method, "--limit", 2, "--export", out, "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all(r["method"] == method for r in rows)
    assert all(r["words"] == split_words(r["text"]) and np.isfinite(r["scores"]).all() for r in rows)
    assert rows[0]["fingerprint"] and isinstance(rows[0]["params"], dict)
