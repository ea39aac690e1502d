"""The ``rationalign`` command line. Thin: parse options, call the stage, print the result."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rationalign.errors import ConfigError, DataError, RationalignError

app = typer.Typer(
    name="rationalign",
    help="Distil large text classifiers into small, fast students that are right for the right reasons.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config (data:, train:, output_dir:).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config field, e.g. --set train.lr=3e-5 (repeatable)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]


def _run_config(config: Path | None, overrides: dict[str, object], sets: list[str] | None):
    from rationalign.config import apply_overrides, build, load_yaml, set_dotted
    from rationalign.training.run import RunConfig

    data = load_yaml(config) if config else {}
    for key, value in overrides.items():
        if value is not None:
            set_dotted(data, key, value)
    data = apply_overrides(data, sets or [])
    if "data" not in data or "path" not in (data.get("data") or {}):
        raise ConfigError("no training data given; fix: pass --data PATH_OR_NAME or a config with data.path")
    return build(RunConfig, data, str(config) if config else "command line")


@app.command()
def train(
    config: ConfigOpt = None,
    data: Annotated[
        str | None, typer.Option(help="Data file, split folder or dataset name (banking77, hwu64, clinc150).")
    ] = None,
    train_split: Annotated[
        str | None, typer.Option(help="Training split in a folder, e.g. train_10.")
    ] = None,
    k_shot: Annotated[
        int | None, typer.Option(help="Sample k examples per label from the training split.")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Backbone: minilm-l6, mpnet-base, smollm2-135m or a local HF folder.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (checkpoints, model/, manifest.json).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs.")] = None,
    lr: Annotated[float | None, typer.Option(help="Backbone learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Training batch size.")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Random seed (data sampling, head init, dropout, order).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the run directory's last checkpoint.")
    ] = False,
    extra_data: Annotated[
        list[Path] | None,
        typer.Option("--extra-data", help="A reviewed divergence queue (JSONL) to train on too."),
    ] = None,
    sets: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a student classifier; the best model (by validation accuracy) lands in OUT/model."""
    from rationalign.training.run import train_run

    overrides = {
        "data.path": data,
        "data.train_split": train_split,
        "data.k_shot": k_shot,
        "train.model": model,
        "output_dir": str(out) if out else None,
        "train.epochs": epochs,
        "train.lr": lr,
        "train.batch_size": batch_size,
        "train.seed": seed,
    }
    if extra_data:
        overrides["extra_data"] = [str(p) for p in extra_data]
    cfg = _run_config(config, overrides, sets)
    result = train_run(cfg, resume=resume, progress=not as_json)
    if as_json:
        print(json.dumps(result.manifest["metrics"]))
        return
    console.print(f"[green]model saved to {result.model_dir}[/green]")
    for key, value in result.manifest["metrics"].items():
        console.print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")


def _load_eval_data(data: str, split: str, text_field: str, label_field: str):
    from rationalign.data.io import load_dataset, resolve_data

    path = resolve_data(data)
    if path.is_dir():
        candidates = [path / f"{split}{ext}" for ext in (".jsonl", ".csv", ".tsv", ".json")]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise DataError(
                f"{path}: no {split}.jsonl or {split}.csv; fix: pass --split with an existing split"
            )
        path = found[0]
    return load_dataset(path, text_field=text_field, label_field=label_field)


@app.command()
def evaluate(
    model_dir: Annotated[
        Path, typer.Argument(help="A model folder written by rationalign (e.g. runs/x/model).")
    ],
    data: Annotated[str, typer.Option(help="Data file, split folder or dataset name.")],
    split: Annotated[str, typer.Option(help="Split to evaluate when --data is a folder.")] = "test",
    text_field: str = "text",
    label_field: str = "label",
    top_confused: Annotated[int, typer.Option(help="How many confused label pairs to list.")] = 10,
    out: Annotated[Path | None, typer.Option(help="Also write the metrics JSON here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Accuracy, macro-F1, a per-class table and the most confused label pairs."""
    from rationalign.models.classifier import IntentClassifier
    from rationalign.training.run import evaluate_classifier

    clf = IntentClassifier.load(model_dir)
    ds = _load_eval_data(data, split, text_field, label_field)
    report = evaluate_classifier(clf, ds)
    payload = {"model": str(model_dir), "data": str(ds.path), "schema_version": 1, **report.to_dict()}
    if out:
        from rationalign.files import atomic_write_text

        atomic_write_text(out, json.dumps(payload, indent=1) + "\n")
    if as_json:
        payload.pop("confusion")
        print(json.dumps(payload))
        return
    console.print(f"[bold]{ds.path}[/bold]: {report.n_examples} examples")
    console.print(f"accuracy {report.accuracy:.4f}   macro-F1 {report.macro_f1:.4f}")
    table = Table("label", "precision", "recall", "F1", "support", title="per class (worst F1 first)")
    for row in sorted(report.per_class, key=lambda r: r.f1):
        table.add_row(
            row.label, f"{row.precision:.3f}", f"{row.recall:.3f}", f"{row.f1:.3f}", str(row.support)
        )
    console.print(table)
    pairs = Table("gold", "predicted as", "count", "share of gold", title="most confused pairs")
    for p in report.most_confused[:top_confused]:
        pairs.add_row(p.true_label, p.predicted_label, str(p.count), f"{p.rate:.1%}")
    console.print(pairs)


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="A model folder written by rationalign.")],
    text: Annotated[str | None, typer.Argument(help="One utterance to classify.")] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="A .txt file (one text a line) or .jsonl/.csv with a text field."),
    ] = None,
    top_k: Annotated[int, typer.Option(help="How many labels to show per text.")] = 1,
    text_field: str = "text",
    as_json: JsonOpt = False,
) -> None:
    """Label and calibrated probability for a text, or for every line of a file."""
    from rationalign.models.classifier import IntentClassifier

    if (text is None) == (file is None):
        raise ConfigError("give exactly one of TEXT or --file; fix: rationalign predict MODEL 'some text'")
    texts = [text] if text is not None else _read_texts(file, text_field)
    clf = IntentClassifier.load(model_dir)
    preds = clf.predict(texts)
    for t, p in zip(texts, preds, strict=True):
        order = p.probs.argsort()[::-1][:top_k]
        top = [{"label": clf.label_space.name(int(i)), "probability": float(p.probs[i])} for i in order]
        if as_json:
            print(
                json.dumps(
                    {
                        "text": t,
                        "label": p.label,
                        "probability": p.probability,
                        "abstain": p.abstained,
                        "top": top,
                    }
                )
            )
        else:
            shown = ", ".join(f"{d['label']} {d['probability']:.3f}" for d in top)
            console.print(f"{t!r} -> {shown}{' (abstain)' if p.abstained else ''}")


def _read_texts(path: Path, text_field: str) -> list[str]:
    from rationalign.data.texts import load_texts

    return load_texts(path, text_field=text_field)


@app.command()
def distill(
    config: Annotated[
        Path,
        typer.Option(
            "--config", "-c", help="Distillation YAML (data, teacher, priors, student, distill, evaluation)."
        ),
    ],
    out: Annotated[Path | None, typer.Option(help="Run directory (overrides output_dir).")] = None,
    sets: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Teacher -> soft labels -> priors -> explanation-aligned student -> evaluation, from one config."""
    from rationalign.config import apply_overrides, build, load_yaml, set_dotted
    from rationalign.pipeline import DistillRunConfig, distill_run

    data = load_yaml(config)
    if out is not None:
        set_dotted(data, "output_dir", str(out))
    cfg = build(DistillRunConfig, apply_overrides(data, sets or []), str(config))
    result = distill_run(cfg, progress=not as_json)
    metrics = {k: v for k, v in result.manifest["metrics"].items() if k != "suite"}
    if as_json:
        print(json.dumps(result.manifest["metrics"], default=str))
        return
    console.print(f"[green]student saved to {result.model_dir}[/green]")
    for key, value in metrics.items():
        console.print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")


@app.command("config")
def show_config(
    kind: Annotated[str, typer.Argument(help="Which config: train or distill.")] = "distill",
) -> None:
    """Every field of a config file: dotted key (as --set takes it), type, default, meaning."""
    from rationalign.config import describe_fields
    from rationalign.pipeline import DistillRunConfig
    from rationalign.training.run import RunConfig

    models = {"train": RunConfig, "distill": DistillRunConfig}
    if kind not in models:
        raise ConfigError(f"unknown config kind {kind!r}; fix: choose one of {sorted(models)}")
    table = Table("key", "type", "default", "meaning", title=f"{kind} config")
    for key, type_name, default, description in describe_fields(models[kind]):
        table.add_row(key, type_name, default, description)
    console.print(table)


@app.command()
def models() -> None:
    """List the shipped models (they load offline from installed PyPI packages)."""
    from rationalign.models.resolver import SHIPPED

    table = Table("name", "kind", "description", "install")
    for m in SHIPPED.values():
        table.add_row(m.name, m.kind, m.description, m.install_hint)
    console.print(table)


@app.command()
def demo(
    data: Annotated[
        str, typer.Option(help="Dataset folder or name (with train_10, valid and test splits).")
    ] = "banking77",
    out: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/demo"),
    config: ConfigOpt = Path(__file__).parent / "configs" / "demo.yaml",
    sets: SetOpt = None,
) -> None:
    """The main job end to end: teacher -> priors -> aligned student -> evaluation -> HTML report."""
    from rationalign.config import apply_overrides, build, load_yaml, set_dotted
    from rationalign.pipeline import DistillRunConfig, distill_run
    from rationalign.report.html import build_report

    raw = load_yaml(config) if config else {}
    set_dotted(raw, "data.path", data)
    set_dotted(raw, "output_dir", str(out))
    if (raw.get("teacher") or {}).get("dir"):
        set_dotted(raw, "teacher.dir", str(out / "teacher"))
    if (raw.get("priors") or {}).get("store"):
        set_dotted(raw, "priors.store", str(out / "priors.sqlite"))
    cfg = build(DistillRunConfig, apply_overrides(raw, sets or []), str(config))
    result = distill_run(cfg)
    metrics = result.manifest["metrics"]
    console.rule("[bold]result")
    console.print(
        f"test accuracy {metrics.get('test_accuracy', float('nan')):.4f}   "
        f"macro-F1 {metrics.get('test_macro_f1', float('nan')):.4f}"
    )
    adversarial = (metrics.get("suite") or {}).get("adversarial", {}).get("all")
    if adversarial and adversarial.get("n_examples"):
        console.print(f"adversarial accuracy {adversarial['accuracy']:.4f} (drop {adversarial['drop']:.4f})")
    report = build_report([result.run_dir], result.run_dir / "report.html")
    console.print(f"student: {result.model_dir}")
    console.print(f"report:  {report}  (open it in a browser)")
    console.print(f"serve:   rationalign serve {result.model_dir}   -> http://127.0.0.1:8000")


def _register_stage_commands() -> None:
    """Each stage owns its commands (priors, attack, suite, report, runs, gate, serve, export, ...)."""
    from rationalign.attribution import commands as attribution_commands
    from rationalign.evaluation import commands as evaluation_commands
    from rationalign.report import commands as report_commands
    from rationalign.serving import commands as serving_commands

    for module in (attribution_commands, evaluation_commands, report_commands, serving_commands):
        module.register(app)


_register_stage_commands()


def main() -> None:
    try:
        app()
    except RationalignError as err:
        err_console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; run again with --resume to continue")
        sys.exit(130)


if __name__ == "__main__":
    main()
