"""Promotion gates: thresholds a run must meet before it is promoted.

A gates file (YAML) has up to four sections::

    min: {test_accuracy: 0.85}                 # metric >= threshold
    max: {ece: 0.05, p50_latency_ms: 10}       # metric <= threshold
    relative_to_teacher:
      accuracy_within: 0.01                    # teacher.accuracy - run.accuracy <= 0.01
      cost_reduction_at_least: 0.5             # 1 - cost(run) / cost(teacher) >= 0.5
    relative_to_baseline:
      adversarial_accuracy_gain: 0.0           # run.adversarial_accuracy - baseline's >= 0.0

``<metric>_within`` and ``<metric>_gain`` work for any metric. A metric name also matches its ``test_``
form (``accuracy`` -> ``test_accuracy``). The cost is ``p50_latency_ms`` when both runs record it, else
``parameters``. A metric that is not recorded, or a teacher / baseline that is needed but not given, fails
its gate with a reason saying so: nothing passes by default.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rationalign.errors import ConfigError, located
from rationalign.report.registry import RunRecord, RunRegistry

SECTIONS = ("min", "max", "relative_to_teacher", "relative_to_baseline")
COST_METRICS = ("p50_latency_ms", "parameters")


@dataclass(frozen=True)
class GateSpec:
    """Parsed thresholds; ``source`` names the file (for messages and the audit log)."""

    min: dict[str, float] = field(default_factory=dict)
    max: dict[str, float] = field(default_factory=dict)
    relative_to_teacher: dict[str, float] = field(default_factory=dict)
    relative_to_baseline: dict[str, float] = field(default_factory=dict)
    source: str = "gates"
    digest: str | None = None

    def __len__(self) -> int:
        return sum(len(getattr(self, s)) for s in SECTIONS)

    def to_dict(self) -> dict[str, Any]:
        return {s: dict(getattr(self, s)) for s in SECTIONS}


@dataclass(frozen=True)
class GateResult:
    name: str
    value: float | None
    threshold: float
    passed: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateReport:
    run_id: int | None
    run_name: str
    gates: list[GateResult]
    source: str = "gates"
    teacher_id: int | None = None
    baseline_id: int | None = None

    @property
    def passed(self) -> bool:
        return bool(self.gates) and all(g.passed for g in self.gates)

    @property
    def failures(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run_name": self.run_name,
            "source": self.source,
            "teacher_id": self.teacher_id,
            "baseline_id": self.baseline_id,
            "passed": self.passed,
            "gates": [g.to_dict() for g in self.gates],
        }


# ---------------------------------------------------------------------------------------------- parsing


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """1-based line of every mapping key (two levels deep), for error messages."""
    lines: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            lines[(str(key.value),)] = key.start_mark.line + 1
            if isinstance(value, yaml.MappingNode):
                for sub_key, _ in value.value:
                    lines[(str(key.value), str(sub_key.value))] = sub_key.start_mark.line + 1
    return lines


def parse_gates(
    data: Any, source: str = "gates", lines: Mapping[tuple[str, ...], int] | None = None
) -> GateSpec:
    """Validate a gates mapping (as loaded from YAML) into a :class:`GateSpec`."""
    lines = lines or {}
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(located(source, 1, "the top level must be a mapping", "write sections like `min:`"))
    sections: dict[str, dict[str, float]] = {s: {} for s in SECTIONS}
    for section, body in data.items():
        line = lines.get((str(section),))
        if section not in SECTIONS:
            raise ConfigError(
                located(source, line, f"unknown section {section!r}", f"use one of {', '.join(SECTIONS)}")
            )
        if body is None:
            continue
        if not isinstance(body, Mapping):
            raise ConfigError(
                located(
                    source,
                    line,
                    f"{section} must map metric names to numbers",
                    f"e.g. `{section}: {{test_accuracy: 0.85}}`",
                )
            )
        for name, threshold in body.items():
            where = lines.get((str(section), str(name)), line)
            if (
                isinstance(threshold, bool)
                or not isinstance(threshold, int | float)
                or not math.isfinite(threshold)
            ):
                raise ConfigError(
                    located(
                        source, where, f"{section}.{name} = {threshold!r} is not a number", "give a number"
                    )
                )
            if (
                section == "relative_to_teacher"
                and name != "cost_reduction_at_least"
                and not (str(name).endswith("_within"))
            ):
                raise ConfigError(
                    located(
                        source,
                        where,
                        f"unknown teacher gate {name!r}",
                        "use <metric>_within (e.g. accuracy_within) or cost_reduction_at_least",
                    )
                )
            if section == "relative_to_baseline" and not str(name).endswith("_gain"):
                raise ConfigError(
                    located(
                        source,
                        where,
                        f"unknown baseline gate {name!r}",
                        "use <metric>_gain (e.g. adversarial_accuracy_gain)",
                    )
                )
            sections[section][str(name)] = float(threshold)
    spec = GateSpec(**sections, source=source)
    if len(spec) == 0:
        raise ConfigError(located(source, None, "defines no gates", "add e.g. `min: {test_accuracy: 0.85}`"))
    return spec


def load_gates(path: str | Path) -> GateSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(located(path, None, "gates file not found", "pass an existing YAML file"))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(located(path, None, "not UTF-8 text", "save the gates file as UTF-8")) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ConfigError(
            located(
                path,
                mark.line + 1 if mark else None,
                f"invalid YAML ({getattr(err, 'problem', err)})",
                "correct the syntax",
            )
        ) from None
    spec = parse_gates(data, str(path), _key_lines(text))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return GateSpec(**{s: getattr(spec, s) for s in SECTIONS}, source=str(path), digest=digest)


# ------------------------------------------------------------------------------------------- evaluation


def lookup_metric(metrics: Mapping[str, float], name: str) -> tuple[str, float] | None:
    """``(key, value)`` for ``name`` or ``test_<name>``; None when neither is recorded."""
    for key in (name, f"test_{name}"):
        value = metrics.get(key)
        if value is not None and isinstance(value, int | float) and math.isfinite(value):
            return key, float(value)
    return None


def _available(metrics: Mapping[str, float]) -> str:
    names = sorted(metrics)
    return ", ".join(names[:12]) + (" ..." if len(names) > 12 else "") if names else "none"


def _missing(name: str, who: str, metrics: Mapping[str, float]) -> str:
    return f"{who} has no metric {name!r} (recorded: {_available(metrics)}); a missing metric fails"


def check_gates(
    metrics: Mapping[str, float],
    gates: GateSpec,
    teacher_metrics: Mapping[str, float] | None = None,
    baseline_metrics: Mapping[str, float] | None = None,
) -> list[GateResult]:
    """Evaluate every gate on plain metric dicts (no registry, no side effects)."""
    results: list[GateResult] = []
    for name, threshold in gates.min.items():
        found = lookup_metric(metrics, name)
        if found is None:
            results.append(GateResult(f"min.{name}", None, threshold, False, _missing(name, "run", metrics)))
            continue
        key, value = found
        ok = value >= threshold
        results.append(
            GateResult(
                f"min.{name}",
                value,
                threshold,
                ok,
                f"{key} = {value:.4g} {'>=' if ok else '<'} {threshold:.4g}",
            )
        )
    for name, threshold in gates.max.items():
        found = lookup_metric(metrics, name)
        if found is None:
            results.append(GateResult(f"max.{name}", None, threshold, False, _missing(name, "run", metrics)))
            continue
        key, value = found
        ok = value <= threshold
        results.append(
            GateResult(
                f"max.{name}",
                value,
                threshold,
                ok,
                f"{key} = {value:.4g} {'<=' if ok else '>'} {threshold:.4g}",
            )
        )
    for name, threshold in gates.relative_to_teacher.items():
        gate = f"relative_to_teacher.{name}"
        if teacher_metrics is None:
            results.append(
                GateResult(gate, None, threshold, False, "no teacher run given; fix: pass --teacher RUN")
            )
        elif name == "cost_reduction_at_least":
            results.append(_cost_gate(gate, threshold, metrics, teacher_metrics))
        else:
            metric = name.removesuffix("_within")
            mine, theirs = lookup_metric(metrics, metric), lookup_metric(teacher_metrics, metric)
            if mine is None or theirs is None:
                reason = _missing(
                    metric, "run" if mine is None else "teacher", metrics if mine is None else teacher_metrics
                )
                results.append(GateResult(gate, None, threshold, False, reason))
                continue
            gap = theirs[1] - mine[1]
            ok = gap <= threshold
            results.append(
                GateResult(
                    gate,
                    gap,
                    threshold,
                    ok,
                    f"teacher {theirs[0]} {theirs[1]:.4g} - run {mine[1]:.4g} = {gap:.4g} "
                    f"{'<=' if ok else '>'} {threshold:.4g}",
                )
            )
    for name, threshold in gates.relative_to_baseline.items():
        gate = f"relative_to_baseline.{name}"
        metric = name.removesuffix("_gain")
        if baseline_metrics is None:
            results.append(
                GateResult(gate, None, threshold, False, "no baseline run given; fix: pass --baseline RUN")
            )
            continue
        mine, theirs = lookup_metric(metrics, metric), lookup_metric(baseline_metrics, metric)
        if mine is None or theirs is None:
            reason = _missing(
                metric, "run" if mine is None else "baseline", metrics if mine is None else baseline_metrics
            )
            results.append(GateResult(gate, None, threshold, False, reason))
            continue
        gain = mine[1] - theirs[1]
        ok = gain >= threshold
        results.append(
            GateResult(
                gate,
                gain,
                threshold,
                ok,
                f"run {mine[0]} {mine[1]:.4g} - baseline {theirs[1]:.4g} = {gain:.4g} "
                f"{'>=' if ok else '<'} {threshold:.4g}",
            )
        )
    return results


def _cost_gate(
    gate: str, threshold: float, metrics: Mapping[str, float], teacher: Mapping[str, float]
) -> GateResult:
    for cost in COST_METRICS:
        mine, theirs = lookup_metric(metrics, cost), lookup_metric(teacher, cost)
        if mine is None or theirs is None:
            continue
        if theirs[1] <= 0:
            return GateResult(
                gate, None, threshold, False, f"teacher {cost} is {theirs[1]:.4g}; cannot compare"
            )
        reduction = 1.0 - mine[1] / theirs[1]
        ok = reduction >= threshold
        return GateResult(
            gate,
            reduction,
            threshold,
            ok,
            f"1 - {cost} {mine[1]:.4g} / teacher {theirs[1]:.4g} = {reduction:.4g} "
            f"{'>=' if ok else '<'} {threshold:.4g}",
        )
    return GateResult(
        gate,
        None,
        threshold,
        False,
        f"neither {' nor '.join(COST_METRICS)} is recorded for both the run and the teacher",
    )


def evaluate_gates(
    run: RunRecord | int | str | Path,
    gates: GateSpec | str | Path,
    teacher: RunRecord | int | str | Path | None = None,
    baseline: RunRecord | int | str | Path | None = None,
    *,
    registry: RunRegistry | None = None,
    promote: bool = False,
    actor: str | None = None,
) -> GateReport:
    """Evaluate ``gates`` on ``run`` and append the decision to the registry's audit log.

    Runs may be records, ids or run directories (registered on the fly). ``promote=True`` marks a run
    that passes every gate ``promoted`` and one that fails ``rejected`` (each with its own audit row).
    """
    registry = registry or RunRegistry()
    spec = gates if isinstance(gates, GateSpec) else load_gates(gates)

    def record(ref: RunRecord | int | str | Path) -> RunRecord:
        return registry.get(ref.id) if isinstance(ref, RunRecord) else registry.resolve(ref, actor=actor)

    subject = record(run)
    teacher_rec = record(teacher) if teacher is not None else None
    baseline_rec = record(baseline) if baseline is not None else None
    results = check_gates(
        subject.metrics,
        spec,
        teacher_rec.metrics if teacher_rec else None,
        baseline_rec.metrics if baseline_rec else None,
    )
    report = GateReport(
        subject.id,
        subject.name,
        results,
        spec.source,
        teacher_rec.id if teacher_rec else None,
        baseline_rec.id if baseline_rec else None,
    )
    details = {**report.to_dict(), "gates_sha256": spec.digest, "thresholds": spec.to_dict()}
    registry.append_audit("gate", subject.id, "pass" if report.passed else "fail", details, actor)
    if promote:
        summary = {
            "gates": spec.source,
            "gates_sha256": spec.digest,
            "failed": [g.name for g in report.failures],
        }
        registry.set_status(subject.id, "promoted" if report.passed else "rejected", actor, summary)
    return report
