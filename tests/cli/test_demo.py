"""`rationalign demo` end to end with tiny models: distill pipeline, then the HTML report."""

import subprocess
import sys
from pathlib import Path


def test_demo_runs_the_pipeline_and_writes_a_report(tmp_path: Path, tiny_data_dir: Path, tiny_base_dir: Path):
    (tiny_data_dir / "train.jsonl").rename(tiny_data_dir / "train_10.jsonl")  # the demo trains on train_10
    tiny = f"{{model: {tiny_base_dir}, epochs: 2, batch_size: 8, lr: 1.0e-3, checkpoint_every: 5}}"
    out = tmp_path / "demo"
    cmd = [
        sys.executable,
        "-m",
        "rationalign.cli",
        "demo",
        "--data",
        str(tiny_data_dir),
        "--out",
        str(out),
        "--set",
        f"teacher.train={tiny}",
        "--set",
        f"student={tiny}",
        "--set",
        "priors.n_masks=8",
        "--set",
        "priors.lime_samples=8",
        "--set",
        "priors.ig_steps=2",
        "--set",
        "evaluation.limit=4",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test accuracy" in result.stdout and "report:" in result.stdout
    report = (out / "report.html").read_text()
    assert "<html" in report.lower() and "http://" not in report.split("</head>")[0]
    assert (out / "model" / "model.safetensors").is_file() and (out / "teacher" / "model").is_dir()
    assert (out / "priors.sqlite").is_file()
    assert (out / "adversarial.jsonl").is_file()  # the attack set the demo builds when none is given
