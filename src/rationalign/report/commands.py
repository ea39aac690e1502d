"""CLI commands of the report stage: ``report``, ``runs list|show|compare|register``, ``gate``, ``drift``,
``recalibrate``. ``register(app)`` adds them to the main Typer app.

Exit codes: 0 success; 1 a gate failed (``gate``) or drift was found with ``--fail-on-drift``; 2 bad input
(a ``RationalignError``, printed on one line by ``rationalign.cli.main``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rationalign.errors import ConfigError

console = Console()

RegistryOpt = Annotated[
    Path | None,
    typer.Option(
        "--registry", help="Registry database (default: $RATIONALIGN_REGISTRY or runs/registry.sqlite)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]


def _registry(path: Path | None, create: bool = True):
    """The registry at ``path`` (or the default); with ``create=False`` None when it does not exist yet."""
    from rationalign.report.registry import RunRegistry, default_registry_path

    target = path or default_registry_path()
    if not create and not target.is_file():
        return None
    return RunRegistry(target)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4f}"
    return "-" if value is None else str(value)


def _flatten(node: object, prefix: str = "") -> dict[str, object]:
    if not isinstance(node, dict):
        return {prefix.rstrip("."): node}
    out: dict[str, object] = {}
    for key, value in node.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return out


def register(app: typer.Typer) -> None:
    """Add this stage's commands to ``app``."""
    runs_app = typer.Typer(
        name="runs", help="The run registry: list, show, compare and register runs.", no_args_is_help=True
    )
    app.add_typer(runs_app, name="runs")

    @app.command("report")
    def report_command(
        runs: Annotated[
            list[Path], typer.Argument(help="Run directories (the first is compared to the others).")
        ],
        out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path(
            "report.html"
        ),
        registry: RegistryOpt = None,
        examples: Annotated[int, typer.Option(help="Examples per heat-map group.", min=1, max=50)] = 6,
        attributions: Annotated[
            bool, typer.Option(help="Compute student attributions when none are stored.")
        ] = True,
        seed: Annotated[int, typer.Option(help="Seed for the sampled examples.")] = 0,
    ) -> None:
        """One self-contained HTML report (metrics, heat-maps, calibration, gates, provenance)."""
        from rationalign.report.html import build_report

        reg = _registry(registry, create=registry is not None)
        path = build_report(runs, out, reg, max_examples=examples, seed=seed, attributions=attributions)
        console.print(f"report written to {escape(str(path))} ({path.stat().st_size / 1024:.0f} KiB)")

    @runs_app.command("list")
    def runs_list(
        status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
        kind: Annotated[
            str | None, typer.Option(help="Only runs of this kind (train, recalibrate, ...).")
        ] = None,
        registry: RegistryOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Every registered run, oldest first."""
        reg = _registry(registry)
        records = reg.list_runs(status=status, kind=kind)
        if as_json:
            print(json.dumps([r.to_dict() for r in records], default=str))
            return
        table = Table(
            "id",
            "name",
            "kind",
            "status",
            "created",
            "test acc",
            "data",
            "weights",
            "parents",
            title=f"runs in {reg.path}",
        )
        for r in records:
            table.add_row(
                str(r.id),
                escape(r.name),
                r.kind,
                r.status,
                r.created_at,
                _fmt(r.metrics.get("test_accuracy")),
                (r.data_fingerprint or "-")[:10],
                r.weights_hash[:10],
                ",".join(map(str, r.parents)) or "-",
            )
        console.print(table)

    @runs_app.command("show")
    def runs_show(
        run: Annotated[str, typer.Argument(help="Run id, run directory or unique name.")],
        registry: RegistryOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """One run: fingerprints, metrics, parents, children and its audit log."""
        reg = _registry(registry)
        record = reg.get(run)
        audit = reg.audit_log(record.id)
        children = [c.id for c in reg.children(record.id)]
        if as_json:
            print(
                json.dumps(
                    {**record.to_dict(), "children": children, "audit": [e.to_dict() for e in audit]},
                    default=str,
                )
            )
            return
        table = Table("field", "value", title=f"run {record.id}: {escape(record.name)}")
        for key in (
            "kind",
            "status",
            "created_at",
            "registered_at",
            "run_dir",
            "data_fingerprint",
            "teacher_fingerprint",
            "priors_fingerprint",
            "weights_hash",
            "wall_seconds",
        ):
            table.add_row(key, escape(_fmt(getattr(record, key))))
        table.add_row("parents", ", ".join(map(str, record.parents)) or "-")
        table.add_row("children", ", ".join(map(str, children)) or "-")
        for key, value in sorted(record.metrics.items()):
            table.add_row(f"metric {escape(key)}", _fmt(value))
        console.print(table)
        log = Table("#", "time", "actor", "action", "decision", title="audit log")
        for e in audit:
            log.add_row(str(e.id), e.time, escape(e.actor), e.action, e.decision or "-")
        console.print(log)

    @runs_app.command("compare")
    def runs_compare(
        first: Annotated[str, typer.Argument(help="Run id, directory or name.")],
        second: Annotated[str, typer.Argument(help="Run id, directory or name.")],
        registry: RegistryOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Metrics side by side (with the difference) and the config keys that differ."""
        reg = _registry(registry)
        a, b = reg.resolve(first), reg.resolve(second)
        names = sorted(set(a.metrics) | set(b.metrics))
        metrics = {
            m: {
                "a": a.metrics.get(m),
                "b": b.metrics.get(m),
                "diff": (b.metrics[m] - a.metrics[m]) if m in a.metrics and m in b.metrics else None,
            }
            for m in names
        }
        cfg_a, cfg_b = _flatten(a.config), _flatten(b.config)
        config = {
            k: {"a": cfg_a.get(k), "b": cfg_b.get(k)}
            for k in sorted(set(cfg_a) | set(cfg_b))
            if cfg_a.get(k) != cfg_b.get(k)
        }
        same = {
            "data_fingerprint": a.data_fingerprint == b.data_fingerprint,
            "teacher_fingerprint": a.teacher_fingerprint == b.teacher_fingerprint,
            "weights_hash": a.weights_hash == b.weights_hash,
        }
        if as_json:
            print(
                json.dumps(
                    {"a": a.id, "b": b.id, "metrics": metrics, "config": config, "same": same}, default=str
                )
            )
            return
        table = Table("metric", f"#{a.id} {escape(a.name)}", f"#{b.id} {escape(b.name)}", "b - a")
        for m, row in metrics.items():
            table.add_row(
                escape(m),
                _fmt(row["a"]),
                _fmt(row["b"]),
                "-" if row["diff"] is None else f"{row['diff']:+.4f}",
            )
        console.print(table)
        diff = Table("config key", "a", "b", title="config differences")
        for k, row in config.items():
            diff.add_row(escape(k), escape(_fmt(row["a"])), escape(_fmt(row["b"])))
        console.print(diff)
        console.print(", ".join(f"{k}: {'same' if v else 'differs'}" for k, v in same.items()))

    @runs_app.command("register")
    def runs_register(
        run_dir: Annotated[Path, typer.Argument(help="A run directory with manifest.json.")],
        parent: Annotated[
            list[int] | None, typer.Option("--parent", help="Parent run id (repeatable).")
        ] = None,
        registry: RegistryOpt = None,
        mlflow: Annotated[
            bool, typer.Option("--mlflow", help="Also log the run to MLflow (if installed).")
        ] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Add a run directory to the registry (repeating it is harmless)."""
        from rationalign.report.registry import log_to_mlflow

        reg = _registry(registry)
        record = reg.register_run(run_dir, parent or [])
        mlflow_id = log_to_mlflow(record) if mlflow else None
        if mlflow and mlflow_id is None:
            console.print("mlflow is not installed; skipped (pip install mlflow-skinny)")
        if as_json:
            print(json.dumps({**record.to_dict(), "mlflow_run_id": mlflow_id}, default=str))
            return
        console.print(f"run {record.id} ({escape(record.name)}) registered, status {record.status}")

    @app.command("gate")
    def gate_command(
        run: Annotated[str, typer.Argument(help="Run id, run directory or name.")],
        gates: Annotated[Path, typer.Option("--gates", help="YAML thresholds (see examples/gates.yaml).")],
        teacher: Annotated[
            str | None, typer.Option(help="The teacher's run (id, directory or name).")
        ] = None,
        baseline: Annotated[str | None, typer.Option(help="The baseline run to beat.")] = None,
        promote: Annotated[
            bool, typer.Option("--promote", help="Mark the run promoted if it passes, rejected if not.")
        ] = False,
        registry: RegistryOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Check promotion gates; exit code 1 when any gate fails (so CI fails)."""
        from rationalign.report.gates import evaluate_gates, load_gates

        spec = load_gates(gates)  # bad gates fail before anything is registered
        report = evaluate_gates(run, spec, teacher, baseline, registry=_registry(registry), promote=promote)
        if as_json:
            print(json.dumps(report.to_dict()))
        else:
            table = Table(
                "gate",
                "value",
                "threshold",
                "result",
                "reason",
                title=f"gates for run {report.run_id} ({escape(report.run_name)})",
            )
            for g in report.gates:
                table.add_row(
                    escape(g.name),
                    _fmt(g.value),
                    _fmt(g.threshold),
                    "[green]pass[/green]" if g.passed else "[red]FAIL[/red]",
                    escape(g.reason),
                )
            console.print(table)
            verdict = (
                "[green]all gates pass[/green]"
                if report.passed
                else (f"[red]{len(report.failures)} of {len(report.gates)} gates fail[/red]")
            )
            console.print(verdict + (" (promotion recorded)" if promote else ""))
        if not report.passed:
            raise typer.Exit(1)

    @app.command("drift")
    def drift_command(
        model: Annotated[Path, typer.Argument(help="A model folder (or a run directory holding model/).")],
        train: Annotated[
            str, typer.Option("--train", help="Training data: file, split folder or dataset name.")
        ],
        incoming: Annotated[Path, typer.Option("--incoming", help="Log of incoming texts (.txt or .jsonl).")],
        split: Annotated[str, typer.Option(help="Split to read when --train is a folder.")] = "train",
        text_field: Annotated[str, typer.Option(help="Text field of JSON-lines inputs.")] = "text",
        alpha: Annotated[
            float, typer.Option(help="False-alarm rate for a sample of the training data.")
        ] = 0.01,
        max_samples: Annotated[
            int, typer.Option(help="Texts used per side (random subsample).", min=2)
        ] = 1000,
        out: Annotated[Path | None, typer.Option(help="Also write the drift report JSON here.")] = None,
        fail_on_drift: Annotated[
            bool, typer.Option("--fail-on-drift", help="Exit 1 when drift is found.")
        ] = False,
        registry: RegistryOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Has incoming traffic drifted from the training data? (labels, vocabulary, embeddings, confidence)"""
        from rationalign.models.classifier import META_FILE, IntentClassifier
        from rationalign.report.drift import DriftThresholds, detect_drift, load_reference, read_texts

        if not 0 < alpha < 1:
            raise ConfigError(f"--alpha {alpha}: must be between 0 and 1; fix: e.g. --alpha 0.01")
        model_dir = model / "model" if (model / "model" / META_FILE).is_file() else model
        clf = IntentClassifier.load(model_dir)
        reference = load_reference(train, split=split, text_field=text_field).texts
        texts = read_texts(incoming, text_field)
        report = detect_drift(clf, reference, texts, DriftThresholds(alpha=alpha, max_samples=max_samples))
        payload = {
            "model": str(model_dir),
            "train": str(train),
            "incoming": str(incoming),
            **report.to_dict(),
        }
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(out.suffix + ".tmp")
            tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
            tmp.replace(out)
        reg = _registry(registry, create=False)
        record = (
            reg.find(model_dir.parent)
            if reg is not None and (model_dir.parent / "manifest.json").is_file()
            else None
        )
        if record is not None:
            reg.append_audit(
                "drift",
                record.id,
                "drift" if report.drifted else "no drift",
                {k: payload[k] for k in ("incoming", "train", "drifted", "statistics")},
            )
        if as_json:
            print(json.dumps(payload))
        else:
            table = Table(
                "signal",
                "value",
                "p-value",
                "flagged",
                "detail",
                title=f"drift: {report.n_incoming} incoming vs {report.n_reference} training texts",
            )
            for s in report.signals:
                table.add_row(
                    s.name,
                    f"{s.value:.4f}",
                    "-" if s.p_value is None else f"{s.p_value:.3g}",
                    "[red]yes[/red]" if s.flagged else "no",
                    escape(s.detail),
                )
            console.print(table)
            console.print(
                "[red]drift detected[/red]" if report.drifted else "[green]no drift detected[/green]"
            )
        if fail_on_drift and report.drifted:
            raise typer.Exit(1)

    @app.command("recalibrate")
    def recalibrate_command(
        model: Annotated[Path, typer.Argument(help="A model folder (or a run directory holding model/).")],
        data: Annotated[
            str, typer.Option("--data", help="Fresh labelled sample (file, or folder: its valid split).")
        ],
        out: Annotated[Path, typer.Option("--out", help="New run directory for the recalibrated model.")],
        text_field: str = "text",
        label_field: str = "label",
        registry: RegistryOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Refit the temperature on fresh labels; saves a new model version registered as a child run."""
        from rationalign.report.drift import recalibrate

        result = recalibrate(
            model, data, out, _registry(registry), text_field=text_field, label_field=label_field
        )
        if as_json:
            print(json.dumps(result.to_dict()))
            return
        console.print(
            f"temperature {result.temperature_before:.3f} -> {result.temperature:.3f}; NLL {result.nll_before:.4f} -> "
            f"{result.nll_after:.4f}; ECE {result.ece_before:.4f} -> {result.ece_after:.4f} "
            f"on {result.n_examples} examples"
        )
        parent = f", child of run {result.run.parents[0]}" if result.run and result.run.parents else ""
        console.print(
            f"model saved to {escape(str(result.model_dir))} (run {result.run.id if result.run else '-'}"
            f"{parent})"
        )
