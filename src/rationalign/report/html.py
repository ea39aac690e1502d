"""One self-contained HTML report for one or more run directories.

No network: CSS is inline, figures are inline SVG (matplotlib), there is no JavaScript. All user text
(utterances, labels, config values) goes through jinja2's autoescaping.

Per run the report shows metrics (against the teacher, the other runs of the report and earlier registered
runs on the same data), word heat-maps, a reliability diagram, confused pairs, the divergence queue, gate
decisions and provenance. Optional files in a run directory, one JSON object a line:

- ``attributions.jsonl``: ``{"text", "kind": "sampled"|"worst"|"adversarial", "words": [...],
  "student": [...], "teacher": [...], "prior": [...], "label", "predicted"}`` (any of student / teacher /
  prior; each a score per word). Without it, student attributions are computed on the fly with
  ``rationalign.attribution.gradient.GradientXInput`` when that module is importable.
- ``adversarial.jsonl``: ``{"text", "label", "original"}`` (label and original optional).
- ``divergence_queue.jsonl``: ``{"text", "student_label", "teacher_label", "divergence"}`` (a score in
  ``divergence`` / ``score`` / ``js`` / ``kl`` orders the queue).
- ``metrics.json`` / ``suite.json``: extra metrics (see ``registry.collect_metrics``); ``calibration.json``
  (a ``CalibrationReport.to_dict()``) or ``suite.json``'s calibration give the reliability diagram when the
  test data cannot be reached.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from jinja2 import Environment, FileSystemLoader

from rationalign import __version__
from rationalign.errors import ConfigError, DataError, RationalignError
from rationalign.report import figures
from rationalign.report.registry import MANIFEST, RunRegistry, collect_metrics, read_manifest

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE = "report.html.j2"
OPTIONAL_FILES = ("attributions.jsonl", "adversarial.jsonl", "divergence_queue.jsonl")
KEY_METRICS = (
    "test_accuracy",
    "test_macro_f1",
    "best_valid_accuracy",
    "ece",
    "test_ece",
    "p50_latency_ms",
    "parameters",
    "adversarial_accuracy",
    "temperature",
)
SCORE_KEYS = ("divergence", "score", "js", "kl")


# ------------------------------------------------------------------------------------------ small pieces


@dataclass
class HeatRow:
    source: str
    cells: list[tuple[str, float, str]]  # word, score, css background


@dataclass
class HeatExample:
    text: str
    kind: str
    gold: str | None
    predicted: str | None
    confidence: float | None
    rows: list[HeatRow] = field(default_factory=list)


@dataclass
class RunView:
    name: str
    run_dir: str
    anchor: str
    manifest: dict[str, Any]
    metrics: dict[str, float]
    notes: list[str] = field(default_factory=list)
    test: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    reliability_svg: str | None = None
    history_svg: str | None = None
    confusion_svg: str | None = None
    heatmaps: dict[str, list[HeatExample]] = field(default_factory=dict)
    heatmap_note: str | None = None
    adversarial: dict[str, Any] | None = None
    divergence: dict[str, Any] | None = None
    gates: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    registry_id: int | None = None
    status: str | None = None
    provenance: list[tuple[str, str]] = field(default_factory=list)
    config_yaml: str = ""


def heat_color(score: float, scale: float) -> str:
    """Red for positive, blue for negative evidence; opacity ~ |score| / scale."""
    if not math.isfinite(score) or scale <= 0:
        return "transparent"
    alpha = min(abs(score) / scale, 1.0) * 0.85
    rgb = "214, 39, 40" if score > 0 else "31, 119, 180"
    return f"rgba({rgb}, {alpha:.3f})"


def heat_row(source: str, words: Sequence[str], scores: Sequence[float]) -> HeatRow:
    values = [float(s) for s in scores]
    scale = max((abs(v) for v in values if math.isfinite(v)), default=0.0)
    return HeatRow(source, [(w, v, heat_color(v, scale)) for w, v in zip(words, values, strict=False)])


def read_jsonl(path: Path, limit: int = 100_000) -> list[dict[str, Any]]:
    """Objects of a JSON-lines file (at most ``limit``); a bad line raises ``DataError`` naming file and
    line. Each object gets its line number as ``_line``."""
    from rationalign.data.io import iter_json_objects

    records: list[dict[str, Any]] = []
    for number, record in iter_json_objects(path, fix="write one JSON object a line"):
        record["_line"] = number
        records.append(record)
        if len(records) >= limit:
            break
    return records


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "\u2013"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "\u2013"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


# ------------------------------------------------------------------------------------------- one run


def _test_data(manifest: Mapping[str, Any]):
    """The run's test split, re-read from its config; raises RationalignError when unreachable."""
    from rationalign.data.io import DataConfig, load_data

    data_cfg = (manifest.get("config") or {}).get("data")
    if not data_cfg:
        raise ConfigError("the manifest has no data config; fix: train with `rationalign train`")
    bundle = load_data(DataConfig.model_validate(data_cfg))
    if bundle.test is None:
        raise DataError(f"{data_cfg.get('path')}: no test split; fix: add test.jsonl to the data folder")
    if bundle.fingerprint != (manifest.get("data") or {}).get("fingerprint"):
        raise DataError(
            f"{data_cfg.get('path')}: the data changed since training (fingerprint differs); "
            "fix: restore the data the run was trained on"
        )
    return bundle.test


def _load_model(run_dir: Path, manifest: Mapping[str, Any]):
    from rationalign.models.classifier import IntentClassifier

    folder = run_dir / "model"
    if not folder.is_dir():
        recorded = (manifest.get("model") or {}).get("dir")
        folder = Path(recorded) if recorded else folder
    return IntentClassifier.load(folder)


def _student_attributor(clf):
    """``GradientXInput(clf)`` when the attribution module is available, else (None, reason)."""
    try:
        from rationalign.attribution.gradient import GradientXInput
    except ImportError as err:
        return None, f"rationalign.attribution.gradient is not available ({err}); heat-maps omitted"
    try:
        return GradientXInput(clf), None
    except Exception as err:  # an API mismatch must not sink the whole report
        return None, f"GradientXInput could not be built ({type(err).__name__}: {err}); heat-maps omitted"


def _examples_from_file(records: list[dict[str, Any]], per_kind: int) -> dict[str, list[HeatExample]]:
    groups: dict[str, list[HeatExample]] = {}
    for rec in records:
        kind = str(rec.get("kind") or "sampled")
        if len(groups.setdefault(kind, [])) >= per_kind:
            continue
        text = str(rec.get("text", ""))
        words = rec.get("words")
        if not isinstance(words, list):
            from rationalign.attribution.words import split_words

            words = split_words(text)
        example = HeatExample(text, kind, rec.get("label"), rec.get("predicted"), rec.get("confidence"))
        scores = rec.get("scores") if isinstance(rec.get("scores"), dict) else rec
        for source in ("student", "teacher", "prior"):
            values = scores.get(source)
            if isinstance(values, list) and len(values) == len(words):
                example.rows.append(heat_row(source, [str(w) for w in words], values))
        if example.rows:
            groups[kind].append(example)
    return groups


def _compute_heatmaps(view: RunView, clf, items: dict[str, list[tuple[str, str | None]]]) -> None:
    attributor, reason = _student_attributor(clf)
    if attributor is None:
        view.heatmap_note = reason
        return
    for kind, pairs in items.items():
        if not pairs:
            continue
        texts = [t for t, _ in pairs]
        probs = clf.predict_proba(texts)
        targets = [int(i) for i in probs.argmax(1)]
        attributions = attributor.attribute(texts, targets)
        examples = []
        for (text, gold), attr, row, target in zip(pairs, attributions, probs, targets, strict=True):
            example = HeatExample(text, kind, gold, clf.label_space.name(target), float(row[target]))
            example.rows.append(heat_row(f"student ({attr.method})", attr.words, attr.scores))
            examples.append(example)
        view.heatmaps[kind] = examples
    view.heatmap_note = (
        "Student attributions computed now with gradient \u00d7 input on the predicted label; no "
        "attributions.jsonl in the run directory, so there are no teacher or prior rows."
    )


def _stored_calibration(folder: Path) -> dict[str, Any] | None:
    """Reliability data saved by another stage: ``calibration.json`` (a ``CalibrationReport.to_dict()``),
    else ``suite.json``'s calibration (after temperature scaling when the suite fitted one)."""
    stored = folder / "calibration.json"
    if stored.is_file():
        data = json.loads(stored.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "reliability" in data:
            return {**data, "source": f"stored in {stored.name}"}
    suite = folder / "suite.json"
    if suite.is_file():
        calibration = (json.loads(suite.read_text(encoding="utf-8")).get("metrics") or {}).get(
            "calibration"
        ) or {}
        for key in ("after", "before"):
            data = calibration.get(key)
            if isinstance(data, dict) and "reliability" in data:
                which = "after temperature scaling" if key == "after" else "uncalibrated"
                return {**data, "source": f"stored in {suite.name} ({which})"}
    return None


def _gate_entries(registry: RunRegistry | None, run_id: int | None) -> tuple[list[dict], list[dict]]:
    if registry is None or run_id is None:
        return [], []
    entries = registry.audit_log(run_id)
    gates = [e.to_dict() for e in entries if e.action == "gate"][::-1]
    audit = [e.to_dict() for e in entries][::-1]
    return gates, audit


def _provenance(run_dir: Path, manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
    model = manifest.get("model") or {}
    data = manifest.get("data") or {}
    env = manifest.get("environment") or {}
    rows = [
        ("run directory", str(run_dir)),
        ("kind", manifest.get("kind")),
        ("started", manifest.get("started_at")),
        (
            "wall time",
            f"{manifest['wall_seconds']:.1f} s"
            if isinstance(manifest.get("wall_seconds"), int | float)
            else None,
        ),
        ("git commit", manifest.get("git_commit") or "unknown"),
        ("rationalign version", manifest.get("rationalign_version")),
        ("data path", data.get("path")),
        ("data fingerprint", data.get("fingerprint")),
        (
            "examples (train / valid / test)",
            f"{data.get('train_examples')} / {data.get('valid_examples')} / {data.get('test_examples')}"
            if "train_examples" in data
            else None,
        ),
        ("base model", model.get("base")),
        ("base model hash", model.get("base_hash")),
        ("weights sha256", model.get("weights_sha256")),
        ("parameters", _fmt(model.get("parameters"))),
        ("pooling", model.get("pooling")),
        (
            "teacher fingerprint",
            (manifest.get("teacher") or {}).get("fingerprint")
            if isinstance(manifest.get("teacher"), dict)
            else None,
        ),
        (
            "priors fingerprint",
            (manifest.get("priors") or {}).get("fingerprint")
            if isinstance(manifest.get("priors"), dict)
            else None,
        ),
        ("environment", ", ".join(f"{k} {v}" for k, v in env.items()) or None),
    ]
    return [(k, str(v)) for k, v in rows if v not in (None, "", "None")]


def collect_run(
    run_dir: str | Path,
    registry: RunRegistry | None = None,
    *,
    max_examples: int = 6,
    seed: int = 0,
    attributions: bool = True,
) -> RunView:
    """Everything the template needs about one run (loads the model and test data when reachable)."""
    folder = Path(run_dir)
    manifest = read_manifest(folder)
    name = str(manifest.get("name") or folder.resolve().name)
    view = RunView(
        name=name,
        run_dir=str(folder.resolve()),
        anchor="",
        manifest=manifest,
        metrics=collect_metrics(folder, manifest),
    )
    view.provenance = _provenance(folder.resolve(), manifest)
    view.config_yaml = yaml.safe_dump(manifest.get("config") or {}, sort_keys=False)
    view.notes.extend(str(w) for w in (manifest.get("data") or {}).get("warnings", []))
    rng = np.random.default_rng(seed)

    if registry is not None:
        record = registry.find(folder)
        if record is not None:
            view.registry_id, view.status = record.id, record.status
            view.gates, view.audit = _gate_entries(registry, record.id)

    test_file = folder / "test_metrics.json"
    if test_file.is_file():
        view.test = json.loads(test_file.read_text(encoding="utf-8"))
        view.confusion_svg = figures.confusion_svg(view.test.get("most_confused", []))
    view.history_svg = figures.history_svg(manifest.get("history") or [])

    clf = None
    try:
        clf = _load_model(folder, manifest)
    except RationalignError as err:
        view.notes.append(f"model not loadable, so nothing is recomputed: {err}")

    test = None
    if clf is not None:
        try:
            test = _test_data(manifest)
        except RationalignError as err:
            view.notes.append(f"test data not reachable: {err}")

    items: dict[str, list[tuple[str, str | None]]] = {"sampled": [], "worst": [], "adversarial": []}
    if clf is not None and test is not None:
        from rationalign.evaluation.calibration import calibration_report

        probs = clf.predict_proba(test.texts)
        gold = np.asarray(test.label_ids(clf.label_space))
        report = calibration_report(probs, gold)
        view.calibration = {
            **report.to_dict(),
            "source": f"recomputed on {len(test)} test examples (temperature {clf.temperature:.3g})",
        }
        view.metrics.setdefault("test_ece", report.ece)
        predicted = probs.argmax(1)
        confidence = probs.max(1)
        wrong = np.flatnonzero(predicted != gold)
        worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:max_examples]
        sampled = rng.choice(len(test), size=min(max_examples, len(test)), replace=False)
        items["sampled"] = [(test[i].text, test[i].label) for i in sorted(sampled)]
        items["worst"] = [(test[i].text, test[i].label) for i in worst]
    else:
        view.calibration = _stored_calibration(folder)
    if view.calibration is not None:
        view.reliability_svg = figures.reliability_svg(view.calibration["reliability"]["bins"])

    adversarial_file = folder / "adversarial.jsonl"
    if adversarial_file.is_file():
        # `rationalign attack` files start with a header line and may keep rejected candidates.
        records = [r for r in read_jsonl(adversarial_file) if r.get("type", "example") == "example"]
        view.adversarial = {"count": len(records), "accuracy": None}
        labelled = [r for r in records if isinstance(r.get("text"), str)]
        items["adversarial"] = [(r["text"], r.get("label")) for r in labelled[:max_examples]]
        if clf is not None:
            known = [r for r in labelled if r.get("label") in clf.label_space]
            if known:
                pred = clf.predict_proba([r["text"] for r in known]).argmax(1)
                hits = [clf.label_space.name(int(p)) == r["label"] for p, r in zip(pred, known, strict=True)]
                view.adversarial["accuracy"] = float(np.mean(hits))
                view.adversarial["labelled"] = len(known)
                view.metrics.setdefault("adversarial_accuracy", float(np.mean(hits)))

    attribution_file = folder / "attributions.jsonl"
    if not attributions:
        view.heatmap_note = "attributions switched off for this report (--no-attributions)"
    elif attribution_file.is_file():
        view.heatmaps = _examples_from_file(read_jsonl(attribution_file), max_examples)
        view.heatmap_note = f"from {attribution_file.name} (stored student, teacher and prior scores)"
    elif clf is None:
        view.heatmap_note = "no attributions.jsonl and no loadable model: heat-maps omitted"
    else:
        _compute_heatmaps(view, clf, items)

    queue_file = folder / "divergence_queue.jsonl"
    if queue_file.is_file():
        records = read_jsonl(queue_file)
        key = next((k for k in SCORE_KEYS if any(isinstance(r.get(k), int | float) for r in records)), None)
        if key is not None:
            records.sort(key=lambda r: -float(r.get(key) or 0.0))
        pairs = Counter(
            (str(r.get("student_label")), str(r.get("teacher_label")))
            for r in records
            if r.get("student_label") is not None and r.get("teacher_label") is not None
        )
        view.divergence = {
            "count": len(records),
            "score_key": key,
            "top": records[:10],
            "pairs": pairs.most_common(8),
        }
    return view


# ---------------------------------------------------------------------------------------------- report


def _comparison(views: list[RunView], registry: RunRegistry | None) -> dict[str, Any]:
    """Columns: the report's runs, earlier registered runs on the same data, teachers found in manifests."""
    columns: list[dict[str, Any]] = [
        {"title": v.name, "kind": "run", "metrics": v.metrics, "anchor": v.anchor} for v in views
    ]
    seen = {v.run_dir for v in views}
    if registry is not None:
        fingerprints = {(v.manifest.get("data") or {}).get("fingerprint") for v in views}
        earlier = [
            r for r in registry.list_runs() if r.data_fingerprint in fingerprints and r.run_dir not in seen
        ]
        for record in earlier[-4:]:
            columns.append(
                {
                    "title": f"#{record.id} {record.name}",
                    "kind": "earlier",
                    "metrics": record.metrics,
                    "anchor": None,
                }
            )
    for view in views:
        teacher = view.manifest.get("teacher")
        if not isinstance(teacher, dict):
            continue
        metrics = teacher.get("metrics")
        if not isinstance(metrics, dict) and teacher.get("run_dir"):
            try:
                metrics = collect_metrics(teacher["run_dir"], read_manifest(teacher["run_dir"]))
            except RationalignError:
                metrics = None
        if isinstance(metrics, dict):
            title = f"teacher of {view.name}" + (f" ({teacher['name']})" if teacher.get("name") else "")
            columns.append(
                {
                    "title": title,
                    "kind": "teacher",
                    "metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
                    "anchor": None,
                }
            )
    names = [m for m in KEY_METRICS if any(m in c["metrics"] for c in columns)]
    # suite.<path> numbers (dozens) stay in the registry for gates; the table keeps the headline ones.
    names += sorted({m for c in columns for m in c["metrics"] if "." not in m} - set(names))
    reference = columns[0]["metrics"]
    rows = []
    for metric in names:
        cells = []
        for column in columns:
            value = column["metrics"].get(metric)
            delta = None
            if column is not columns[0] and value is not None and reference.get(metric) is not None:
                delta = reference[metric] - value
            cells.append({"value": _fmt(value), "delta": None if delta is None else f"{delta:+.4f}"})
        rows.append({"metric": metric, "cells": cells})
    return {"columns": columns, "rows": rows}


def render_report(views: list[RunView], registry: RunRegistry | None = None) -> str:
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR), autoescape=True, trim_blocks=True, lstrip_blocks=True
    )
    env.filters["fmt"] = _fmt
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=1, default=str, ensure_ascii=False)
    template = env.get_template(TEMPLATE)
    return template.render(
        views=views,
        comparison=_comparison(views, registry),
        generated=datetime.now(UTC).isoformat(timespec="seconds"),
        version=__version__,
        registry=str(registry.path) if registry is not None else None,
    )


def build_report(
    run_dirs: Sequence[str | Path] | str | Path,
    out_path: str | Path,
    registry: RunRegistry | str | Path | None = None,
    *,
    max_examples: int = 6,
    seed: int = 0,
    attributions: bool = True,
) -> Path:
    """Write one self-contained HTML report for ``run_dirs`` to ``out_path`` (atomically); returns it.

    ``registry``: a ``RunRegistry`` or its path, for gate decisions, status and earlier runs; None builds
    the report from the run directories alone.
    """
    dirs = [run_dirs] if isinstance(run_dirs, str | Path) else list(run_dirs)
    if not dirs:
        raise ConfigError("no run directories given; fix: rationalign report RUN_DIR --out report.html")
    reg = registry if isinstance(registry, RunRegistry) or registry is None else RunRegistry(registry)
    views = []
    for i, run_dir in enumerate(dirs):
        if not (Path(run_dir) / MANIFEST).is_file():
            read_manifest(run_dir)  # raises the one-line error
        view = collect_run(run_dir, reg, max_examples=max_examples, seed=seed, attributions=attributions)
        view.anchor = f"run-{i + 1}"
        views.append(view)
    html = render_report(views, reg)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(html)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a report is meant to be shared
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
