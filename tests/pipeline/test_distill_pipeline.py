"""`rationalign distill` end to end on tiny models: teacher -> soft labels -> priors -> student -> suite."""

import json
import subprocess
import sys
from pathlib import Path

import yaml


def test_distill_pipeline_runs_and_caches(tmp_path: Path, tiny_data_dir: Path, tiny_base_dir: Path):
    tiny = {"model": str(tiny_base_dir), "epochs": 2, "batch_size": 8, "lr": 1e-3, "checkpoint_every": 5}
    config = {
        "data": {"path": str(tiny_data_dir)},
        "teacher": {"train": tiny},
        "priors": {
            "methods": ["lime", "ig", "cap"],
            "fuse": "mean",
            "lime_samples": 16,
            "n_masks": 16,
            "ig_steps": 4,
        },
        "student": tiny,
        "distill": {"alpha": 0.5, "lam": 1.0, "align_loss": "mse", "attribution": "gxi"},
        "evaluation": {"limit": 4},
    }
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "rationalign.cli",
        "distill",
        "--config",
        str(path),
        "--out",
        str(out),
        "--json",
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "distill"
    assert set(manifest["priors"]["cost"]) == {"lime", "ig", "cap"}
    assert manifest["priors"]["cost"]["cap"]["computed"] == 24  # every training utterance (6 per intent)
    assert manifest["teacher"]["fingerprint"] and manifest["priors"]["fingerprint"]
    parts = manifest["history"][-1]["parts"]
    assert {"ce", "kd", "align"} <= set(parts)  # all three loss terms were active
    assert 0 <= manifest["metrics"]["test_accuracy"] <= 1
    assert (out / "suite.json").is_file() and "suite" in manifest["metrics"]
    # the student leaves with the temperature fitted on validation: predict and serve are calibrated
    calibration = manifest["metrics"]["suite"]["calibration"]
    model_dir = Path(manifest["model"]["dir"])
    assert calibration["fitted_on"] and calibration["stored_in"] == str(model_dir)
    stored = json.loads((model_dir / "rationalign.json").read_text())["temperature"]
    assert stored == calibration["temperature"] and stored != 1.0
    heatmaps = [json.loads(line) for line in (out / "attributions.jsonl").read_text().splitlines()]
    assert heatmaps and all(
        len(h["student"]) == len(h["words"]) == len(h["teacher"]) == len(h["prior"]) for h in heatmaps
    )
    assert (out / "soft_labels.npy").is_file() and (out / "teacher" / "model" / "model.safetensors").is_file()

    # a second run reuses the teacher, the soft labels and every stored prior
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    again = json.loads((out / "manifest.json").read_text())
    assert all(c["computed"] == 0 for c in again["priors"]["cost"].values())
    assert (
        again["metrics"]["train_seconds"] == manifest["metrics"]["train_seconds"]
    )  # not the 0 s of a no-op resume
