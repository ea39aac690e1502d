"""`rationalign config` documents every field a config file (or --set) can name."""

import subprocess
import sys

from typer.testing import CliRunner

from rationalign.cli import app
from rationalign.config import describe_fields
from rationalign.pipeline import DistillRunConfig
from rationalign.training.run import RunConfig

SECTIONS = {"data", "teacher", "teacher.train", "priors", "student", "distill", "evaluation", "train"}


def test_every_leaf_field_has_a_description():
    for model in (DistillRunConfig, RunConfig):
        rows = describe_fields(model)
        undocumented = [key for key, _, _, text in rows if not text and key not in SECTIONS]
        assert not undocumented, undocumented


def test_keys_are_dotted_and_defaults_shown():
    rows = {key: (type_name, default) for key, type_name, default, _ in describe_fields(DistillRunConfig)}
    assert rows["data.path"][1] == "(required)"
    assert rows["distill.align_fraction"] == ("float", "1.0")
    assert rows["priors.methods"][1] == "['cap', 'lime', 'ig']"
    assert rows["student.lr"][1] == "5e-05"
    assert rows["teacher.train"][0] == "TrainConfig | None"


def test_cli_prints_the_table_and_rejects_unknown_kinds():
    runner = CliRunner()
    result = runner.invoke(app, ["config", "distill"], env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    assert "distill.align_fraction" in result.output and "priors.shap_max_evals" in result.output
    train = runner.invoke(app, ["config", "train"], env={"COLUMNS": "220"})
    assert train.exit_code == 0 and "train.head_init" in train.output
    bad = subprocess.run(
        [sys.executable, "-m", "rationalign.cli", "config", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "unknown config kind 'nope'" in bad.stderr and "Traceback" not in bad.stderr
