"""train -> evaluate -> predict through the real console entry point, on a tiny model and tiny data."""

import json
import subprocess
import sys
from pathlib import Path

import yaml


def rationalign(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rationalign.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_train_evaluate_predict(tmp_path: Path, tiny_data_dir: Path, tiny_base_dir: Path):
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"path": str(tiny_data_dir)},
                "train": {
                    "model": str(tiny_base_dir),
                    "epochs": 2,
                    "batch_size": 8,
                    "lr": 1e-3,
                    "checkpoint_every": 2,
                },
            }
        )
    )
    out = tmp_path / "run"
    trained = rationalign(
        "train", "--config", str(config), "--out", str(out), "--set", "train.epochs=3", "--json"
    )
    assert trained.returncode == 0, trained.stderr
    metrics = json.loads(trained.stdout.strip().splitlines()[-1])
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["best_epoch"] >= 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["train"]["epochs"] == 3  # the --set override won over the YAML
    assert len(manifest["data"]["fingerprint"]) == 64 and len(manifest["model"]["base_hash"]) == 64
    assert len(manifest["history"]) == 3 and manifest["wall_seconds"] > 0
    assert 0 < manifest["metrics"]["train_seconds"] <= manifest["wall_seconds"]  # one part: within the call
    assert (out / "model" / "README.md").read_text().count("test_accuracy") == 1

    evaluated = rationalign("evaluate", str(out / "model"), "--data", str(tiny_data_dir), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert abs(report["accuracy"] - metrics["test_accuracy"]) < 1e-9
    assert len(report["per_class"]) == 4 and report["n_examples"] == 8

    predicted = rationalign("predict", str(out / "model"), "block my card", "--top-k", "2", "--json")
    assert predicted.returncode == 0, predicted.stderr
    row = json.loads(predicted.stdout)
    assert row["label"] in {"card_block", "card_activate", "alarm_set", "alarm_query"}
    assert len(row["top"]) == 2 and row["top"][0]["probability"] >= row["top"][1]["probability"]

    texts = tmp_path / "texts.txt"
    texts.write_text("check my alarms\nactivate my card\n")
    batch = rationalign("predict", str(out / "model"), "--file", str(texts), "--json")
    assert batch.returncode == 0, batch.stderr
    assert len(batch.stdout.strip().splitlines()) == 2


def test_bad_input_is_one_line_exit_2_nothing_written(
    tmp_path: Path, tiny_data_dir: Path, tiny_base_dir: Path
):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.jsonl").write_text('{"text": "ok", "label": "a"}\n{"text": "broken", "label": \n')
    out = tmp_path / "run"
    result = rationalign("train", "--data", str(bad), "--model", str(tiny_base_dir), "--out", str(out))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.jsonl:2" in lines[0] and "fix:" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()

    missing = rationalign("train", "--model", str(tiny_base_dir))
    assert missing.returncode == 2 and "no training data" in missing.stderr

    bad_set = rationalign("train", "--data", str(tiny_data_dir), "--set", "train.lr=-1", "--out", str(out))
    assert bad_set.returncode == 2 and "train.lr" in bad_set.stderr and not out.exists()

    no_model = rationalign("evaluate", str(tmp_path), "--data", str(tiny_data_dir))
    assert no_model.returncode == 2 and "not a rationalign model" in no_model.stderr
