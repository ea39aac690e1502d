"""The run registry: an embedded SQLite database of runs plus an append-only audit log.

Default location ``runs/registry.sqlite`` (relative to the working folder); ``$RATIONALIGN_REGISTRY``
overrides it. One row per run directory and weights hash (registering the same run twice returns the same
row), with its config, data / teacher / priors fingerprints, metrics, parents and status
(``registered`` -> ``promoted`` or ``rejected``).

Every decision (registration, gate evaluation, promotion, rejection, recalibration, drift check) is
appended to ``audit_log``. SQLite triggers abort any UPDATE or DELETE on that table, so the history cannot
be rewritten through SQL; only dropping the whole table (a schema change, visible to anyone) could.

Metrics of a run are ``manifest.json``'s ``metrics`` plus ``parameters`` (from ``manifest.model``), the
scalar values of an optional ``metrics.json`` in the run directory (where later stages record numbers such
as ``ece`` or ``p50_latency_ms``), and, from an optional ``suite.json`` (``rationalign suite MODEL --out
RUN/suite.json``), every numeric leaf as ``suite.<path>`` plus the gate names ``ece``, ``nll``, ``brier``
(after temperature scaling when the suite fitted one), ``adversarial_accuracy`` and ``adversarial_drop``.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import math
import os
import socket
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rationalign.errors import ConfigError, located

REGISTRY_ENV = "RATIONALIGN_REGISTRY"
DEFAULT_REGISTRY = Path("runs") / "registry.sqlite"
MANIFEST = "manifest.json"
EXTRA_METRICS = "metrics.json"
SUITE_METRICS = "suite.json"
SCHEMA_VERSION = 1
Status = Literal["registered", "promoted", "rejected"]
STATUSES: tuple[str, ...] = ("registered", "promoted", "rejected")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    run_dir TEXT NOT NULL,
    config_json TEXT NOT NULL,
    data_fingerprint TEXT,
    teacher_fingerprint TEXT,
    priors_fingerprint TEXT,
    weights_hash TEXT NOT NULL,
    metrics_json TEXT NOT NULL,
    parents_json TEXT NOT NULL DEFAULT '[]',
    wall_seconds REAL,
    status TEXT NOT NULL DEFAULT 'registered'
        CHECK (status IN ('registered', 'promoted', 'rejected')),
    manifest_json TEXT NOT NULL,
    UNIQUE (run_dir, weights_hash)
);
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    run_id INTEGER REFERENCES runs(id),
    decision TEXT,
    details_json TEXT NOT NULL DEFAULT '{}'
);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: rows cannot be updated');
END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: rows cannot be deleted');
END;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def default_registry_path() -> Path:
    return Path(os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY)


def current_actor() -> str:
    """``user@host`` of whoever runs the command (``$RATIONALIGN_ACTOR`` overrides, e.g. in CI)."""
    override = os.environ.get("RATIONALIGN_ACTOR")
    if override:
        return override
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``manifest.json``; a one-line ``ConfigError`` when it is missing or not JSON."""
    path = Path(run_dir) / MANIFEST
    if not Path(run_dir).is_dir():
        raise ConfigError(located(run_dir, None, "no such run directory", "pass a folder written by a run"))
    if not path.is_file():
        raise ConfigError(
            located(path, None, "no manifest.json", "pass a run directory written by `rationalign train`")
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfigError(
            located(path, err.lineno, f"invalid JSON ({err.msg})", "re-run the stage")
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(located(path, None, "not UTF-8 text", "re-run the stage")) from None
    if not isinstance(manifest, dict):
        raise ConfigError(located(path, 1, "the manifest is not a JSON object", "re-run the stage"))
    return manifest


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(
            located(path, getattr(err, "lineno", None), "invalid JSON", "write a JSON object of numbers")
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(located(path, 1, "not a JSON object", 'write e.g. {"ece": 0.03}'))
    return data


def _numeric_leaves(node: Any, prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(_numeric_leaves(value, f"{prefix}.{key}"))
    elif _is_number(node):
        out[prefix] = node
    return out


def suite_metrics(payload: Mapping[str, Any]) -> dict[str, float]:
    """Gate-ready numbers from a ``rationalign suite`` JSON (its ``metrics`` section)."""
    metrics = payload.get("metrics") or {}
    out = _numeric_leaves(metrics, "suite")
    calibration = metrics.get("calibration") or {}
    chosen = calibration.get("after") or calibration.get("before") or {}
    for name in ("ece", "nll", "brier"):
        if _is_number(chosen.get(name)):
            out[name] = chosen[name]
    adversarial = (metrics.get("adversarial") or {}).get("all") or {}
    for source, name in (("accuracy", "adversarial_accuracy"), ("drop", "adversarial_drop")):
        if _is_number(adversarial.get(source)):
            out[name] = adversarial[source]
    return out


def collect_metrics(run_dir: str | Path, manifest: Mapping[str, Any]) -> dict[str, float]:
    """Numeric metrics of a run: manifest ``metrics``, ``parameters``, ``metrics.json`` and ``suite.json``."""
    metrics: dict[str, float] = {}  # ints stay ints (epochs, counts), so reports print them as such
    for key, value in (manifest.get("metrics") or {}).items():
        if _is_number(value):
            metrics[key] = value
    parameters = (manifest.get("model") or {}).get("parameters")
    if _is_number(parameters):
        metrics.setdefault("parameters", parameters)
    suite = Path(run_dir) / SUITE_METRICS
    if suite.is_file():
        metrics.update(suite_metrics(_read_json_object(suite)))
    extra = Path(run_dir) / EXTRA_METRICS
    if extra.is_file():  # written by hand or by a stage for this run: it has the last word
        for key, value in _read_json_object(extra).items():
            if _is_number(value):
                metrics[key] = value
    return metrics


def _fingerprint(manifest: Mapping[str, Any], section: str) -> str | None:
    node = manifest.get(section)
    if isinstance(node, dict):
        value = node.get("fingerprint")
        return str(value) if value else None
    value = manifest.get(f"{section}_fingerprint")
    return str(value) if value else None


def _weights_hash(run_dir: Path, manifest: Mapping[str, Any]) -> str:
    model = manifest.get("model") or {}
    value = model.get("weights_sha256") if isinstance(model, dict) else None
    if value:
        return str(value)
    folder = run_dir / "model"
    if (folder / "model.safetensors").is_file():
        from rationalign.models.resolver import weights_hash

        return weights_hash(folder)
    raise ConfigError(
        located(
            run_dir / MANIFEST,
            None,
            "no model.weights_sha256 and no model/model.safetensors",
            "register a run directory that holds its trained model",
        )
    )


@dataclass(frozen=True)
class RunRecord:
    id: int
    name: str
    kind: str
    created_at: str
    registered_at: str
    run_dir: str
    config: dict[str, Any]
    data_fingerprint: str | None
    teacher_fingerprint: str | None
    priors_fingerprint: str | None
    weights_hash: str
    metrics: dict[str, float]
    parents: list[int]
    wall_seconds: float | None
    status: str
    manifest: dict[str, Any] = field(repr=False)

    @property
    def model_dir(self) -> Path:
        recorded = (self.manifest.get("model") or {}).get("dir")
        local = Path(self.run_dir) / "model"
        if local.is_dir() or not recorded:
            return local
        return Path(recorded)

    def to_dict(self, with_manifest: bool = False) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "manifest"}
        if with_manifest:
            out["manifest"] = self.manifest
        return out


@dataclass(frozen=True)
class AuditEntry:
    id: int
    time: str
    actor: str
    action: str
    run_id: int | None
    decision: str | None
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _record(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=int(row["id"]),
        name=row["name"],
        kind=row["kind"],
        created_at=row["created_at"],
        registered_at=row["registered_at"],
        run_dir=row["run_dir"],
        config=json.loads(row["config_json"]),
        data_fingerprint=row["data_fingerprint"],
        teacher_fingerprint=row["teacher_fingerprint"],
        priors_fingerprint=row["priors_fingerprint"],
        weights_hash=row["weights_hash"],
        metrics=json.loads(row["metrics_json"]),
        parents=list(json.loads(row["parents_json"])),
        wall_seconds=row["wall_seconds"],
        status=row["status"],
        manifest=json.loads(row["manifest_json"]),
    )


def _entry(row: sqlite3.Row) -> AuditEntry:
    return AuditEntry(
        id=int(row["id"]),
        time=row["time"],
        actor=row["actor"],
        action=row["action"],
        run_id=row["run_id"],
        decision=row["decision"],
        details=json.loads(row["details_json"]),
    )


class RunRegistry:
    """``RunRegistry(path)``; ``path=None`` uses ``$RATIONALIGN_REGISTRY`` or ``runs/registry.sqlite``."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_registry_path()
        if self.path.is_dir():
            raise ConfigError(
                located(self.path, None, "is a folder", "give a file path like runs/registry.sqlite")
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as err:
            raise ConfigError(
                located(self.path, None, f"cannot open the registry ({err})", "check the path")
            ) from None
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys = ON")
        try:
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        except sqlite3.DatabaseError as err:
            if isinstance(err, sqlite3.IntegrityError):
                raise
            raise ConfigError(
                located(
                    self.path,
                    None,
                    f"registry database error ({err})",
                    "point $RATIONALIGN_REGISTRY at a registry file written by rationalign",
                )
            ) from None
        finally:
            db.close()

    # ------------------------------------------------------------------ runs
    def register_run(
        self, run_dir: str | Path, parents: Sequence[int] = (), actor: str | None = None
    ) -> RunRecord:
        """Add a run directory (reads its manifest). The same directory with the same weights hash
        returns the existing row unchanged, so registering is safe to repeat."""
        folder = Path(run_dir).resolve()
        manifest = read_manifest(folder)
        weights = _weights_hash(folder, manifest)
        parent_ids = [int(p) for p in parents]
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM runs WHERE run_dir = ? AND weights_hash = ?", (str(folder), weights)
            ).fetchone()
            if row is not None:
                return _record(row)
            for pid in parent_ids:
                if db.execute("SELECT 1 FROM runs WHERE id = ?", (pid,)).fetchone() is None:
                    raise ConfigError(
                        located(
                            self.path,
                            None,
                            f"parent run {pid} is not registered",
                            "register the parent first",
                        )
                    )
            wall = manifest.get("wall_seconds")
            cursor = db.execute(
                """INSERT INTO runs (name, kind, created_at, registered_at, run_dir, config_json,
                   data_fingerprint, teacher_fingerprint, priors_fingerprint, weights_hash, metrics_json,
                   parents_json, wall_seconds, status, manifest_json)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'registered', ?)""",
                (
                    str(manifest.get("name") or folder.name),
                    str(manifest.get("kind") or "train"),
                    str(manifest.get("started_at") or _now()),
                    _now(),
                    str(folder),
                    json.dumps(manifest.get("config") or {}, sort_keys=True, default=str),
                    _fingerprint(manifest, "data"),
                    _fingerprint(manifest, "teacher"),
                    _fingerprint(manifest, "priors"),
                    weights,
                    json.dumps(collect_metrics(folder, manifest), sort_keys=True),
                    json.dumps(parent_ids),
                    float(wall) if _is_number(wall) else None,
                    json.dumps(manifest, default=str),
                ),
            )
            run_id = int(cursor.lastrowid or 0)
            self._append(
                db, "register", run_id, "registered", {"run_dir": str(folder), "parents": parent_ids}, actor
            )
            return _record(db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone())

    def find(self, ref: int | str | Path) -> RunRecord | None:
        """A run by id, by run directory (its newest registration) or by unique name; None if unknown."""
        with self._connect() as db:
            text = str(ref).strip()
            if isinstance(ref, int) or text.isdigit():
                row = db.execute("SELECT * FROM runs WHERE id = ?", (int(text),)).fetchone()
                if row is not None:
                    return _record(row)
            path = Path(text).expanduser()
            if path.exists():
                row = db.execute(
                    "SELECT * FROM runs WHERE run_dir = ? ORDER BY id DESC LIMIT 1", (str(path.resolve()),)
                ).fetchone()
                return _record(row) if row is not None else None
            rows = db.execute("SELECT * FROM runs WHERE name = ? ORDER BY id", (text,)).fetchall()
            if len(rows) > 1:
                ids = ", ".join(str(r["id"]) for r in rows)
                raise ConfigError(
                    located(
                        self.path,
                        None,
                        f"{len(rows)} runs are named {text!r} (ids {ids})",
                        "refer to it by id",
                    )
                )
            return _record(rows[0]) if rows else None

    def get(self, ref: int | str | Path) -> RunRecord:
        record = self.find(ref)
        if record is None:
            raise ConfigError(
                located(
                    self.path,
                    None,
                    f"no registered run {str(ref)!r}",
                    "use `rationalign runs list`, or pass a run directory",
                )
            )
        return record

    def resolve(self, ref: int | str | Path, actor: str | None = None) -> RunRecord:
        """Like :meth:`get`, but an unregistered run directory is registered first."""
        record = self.find(ref)
        if record is not None:
            return record
        if Path(str(ref)).expanduser().is_dir():
            return self.register_run(Path(str(ref)).expanduser(), actor=actor)
        return self.get(ref)

    def list_runs(self, status: str | None = None, kind: str | None = None) -> list[RunRecord]:
        if status is not None and status not in STATUSES:
            raise ConfigError(f"unknown status {status!r}; fix: one of {', '.join(STATUSES)}")
        query, args = "SELECT * FROM runs WHERE 1 = 1", []
        if status is not None:
            query, args = query + " AND status = ?", [*args, status]
        if kind is not None:
            query, args = query + " AND kind = ?", [*args, kind]
        with self._connect() as db:
            return [_record(r) for r in db.execute(query + " ORDER BY id", args).fetchall()]

    def children(self, run_id: int) -> list[RunRecord]:
        return [r for r in self.list_runs() if run_id in r.parents]

    def set_status(
        self,
        run_id: int,
        status: Status,
        actor: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> RunRecord:
        """Change a run's status and append the decision to the audit log in the same transaction."""
        if status not in STATUSES:
            raise ConfigError(f"unknown status {status!r}; fix: one of {', '.join(STATUSES)}")
        action = {"promoted": "promote", "rejected": "reject", "registered": "reset"}[status]
        with self._connect() as db:
            if db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                raise ConfigError(located(self.path, None, f"no registered run {run_id}", "check the id"))
            db.execute("UPDATE runs SET status = ? WHERE id = ?", (status, run_id))
            self._append(db, action, run_id, status, dict(details or {}), actor)
            return _record(db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone())

    # ------------------------------------------------------------------ audit log
    def _append(
        self,
        db: sqlite3.Connection,
        action: str,
        run_id: int | None,
        decision: str | None,
        details: Mapping[str, Any],
        actor: str | None,
    ) -> int:
        cursor = db.execute(
            "INSERT INTO audit_log (time, actor, action, run_id, decision, details_json) VALUES (?, ?, ?, ?, ?, ?)",
            (
                _now(),
                actor or current_actor(),
                action,
                run_id,
                decision,
                json.dumps(dict(details), default=str),
            ),
        )
        return int(cursor.lastrowid or 0)

    def append_audit(
        self,
        action: str,
        run_id: int | None = None,
        decision: str | None = None,
        details: Mapping[str, Any] | None = None,
        actor: str | None = None,
    ) -> AuditEntry:
        with self._connect() as db:
            entry_id = self._append(db, action, run_id, decision, details or {}, actor)
            return _entry(db.execute("SELECT * FROM audit_log WHERE id = ?", (entry_id,)).fetchone())

    def audit_log(self, run_id: int | None = None, action: str | None = None) -> list[AuditEntry]:
        query, args = "SELECT * FROM audit_log WHERE 1 = 1", []
        if run_id is not None:
            query, args = query + " AND run_id = ?", [*args, run_id]
        if action is not None:
            query, args = query + " AND action = ?", [*args, action]
        with self._connect() as db:
            return [_entry(r) for r in db.execute(query + " ORDER BY id", args).fetchall()]


def register_run(
    run_dir: str | Path, parents: Sequence[int] = (), registry: RunRegistry | str | Path | None = None
) -> RunRecord:
    """Register a run directory in ``registry`` (a ``RunRegistry``, a path, or None for the default)."""
    reg = registry if isinstance(registry, RunRegistry) else RunRegistry(registry)
    return reg.register_run(run_dir, parents)


def mlflow_available() -> bool:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return False
    return True


def log_to_mlflow(
    run: RunRecord, tracking_uri: str | None = None, experiment: str = "rationalign"
) -> str | None:
    """Mirror a registered run into MLflow (params, metrics, fingerprints as tags).

    Returns the MLflow run id, or None when mlflow is not installed (it is optional). ``tracking_uri``
    defaults to MLflow's own configuration (``$MLFLOW_TRACKING_URI``).
    """
    if not mlflow_available():
        return None
    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    try:
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
        tags = {
            "rationalign.run_id": str(run.id),
            "rationalign.kind": run.kind,
            "rationalign.status": run.status,
            "rationalign.run_dir": run.run_dir,
            "rationalign.weights_hash": run.weights_hash,
            "rationalign.data_fingerprint": run.data_fingerprint or "",
            "rationalign.teacher_fingerprint": run.teacher_fingerprint or "",
            "rationalign.priors_fingerprint": run.priors_fingerprint or "",
            "rationalign.parents": json.dumps(run.parents),
        }
        created = client.create_run(experiment_id, run_name=run.name, tags=tags)
        run_id = created.info.run_id
        stamp = int(datetime.now(UTC).timestamp() * 1000)
        params = [Param(key[:250], str(value)[:6000]) for key, value in _flatten(run.config).items()]
        metrics = [Metric(key, float(value), stamp, 0) for key, value in run.metrics.items()]
        for start in range(0, max(len(params), len(metrics)), 100):  # MLflow's batch limit is 100 params
            client.log_batch(run_id, metrics=metrics[start : start + 100], params=params[start : start + 100])
        client.set_terminated(run_id)
    except MlflowException as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(
            f"MLflow logging failed ({first_line[:300]}); fix: set MLFLOW_TRACKING_URI to a reachable "
            "tracking server or a database such as sqlite:///mlflow.db"
        ) from None
    return run_id


def _flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
