"""A resumable store of word priors on SQLite (WAL mode), and ``compute_priors`` that fills it batch by batch.

A row is keyed by ``(fingerprint, method, params, text, target)``: the fingerprint of the model or teacher
that produced it, the method name, the method's parameters as canonical JSON (sorted keys, no spaces), the
utterance and the explained class. It holds the words (JSON), the scores (little-endian float32 bytes),
the attribution's meta (JSON) and when it was written. Each ``put_many`` is one transaction, so a killed
job loses at most the batch in flight and a re-run computes only what is missing.

Beside the priors, ``teacher_scores`` keeps a teacher's label distribution of each text it scored (keyed by
the teacher's fingerprint and the text, in the dtype the teacher returned), so CAP and LIME, which score the
same masked texts, share one teacher pass across runs and processes (see ``CachedTeacher``). The table was
added without a schema bump: ``CREATE TABLE IF NOT EXISTS`` adds it to older stores, which stay readable.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rationalign.attribution.base import WordAttribution
from rationalign.attribution.masks import CostReport
from rationalign.errors import DataError, located
from rationalign.files import atomic_writer, json_default

SCHEMA_VERSION = 1
SCORE_DTYPE = "<f4"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS version (
    schema_version INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS priors (
    fingerprint TEXT NOT NULL,
    method TEXT NOT NULL,
    params TEXT NOT NULL,
    text TEXT NOT NULL,
    target INTEGER NOT NULL,
    words TEXT NOT NULL,
    scores BLOB NOT NULL,
    meta TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (fingerprint, method, params, text, target)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS teacher_scores (
    fingerprint TEXT NOT NULL,
    text TEXT NOT NULL,
    dtype TEXT NOT NULL,
    probs BLOB NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (fingerprint, text)
) WITHOUT ROWID;
"""


def canonical_params(params: dict | str | None) -> str:
    """Parameters as canonical JSON (sorted keys, compact): equal settings give equal keys."""
    if params is None:
        params = {}
    if isinstance(params, str):
        params = json.loads(params)
    return json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=json_default)


@dataclass(frozen=True)
class PriorKey:
    """What identifies one stored prior. ``params`` is canonical JSON (use :meth:`make`)."""

    fingerprint: str
    method: str
    params: str
    text: str
    target: int

    @classmethod
    def make(
        cls, fingerprint: str, method: str, params: dict | str | None, text: str, target: int
    ) -> PriorKey:
        return cls(str(fingerprint), str(method), canonical_params(params), str(text), int(target))

    def as_tuple(self) -> tuple[str, str, str, str, int]:
        return (self.fingerprint, self.method, self.params, self.text, self.target)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class PriorStore:
    """Word priors on disk. Safe to read while another process writes (WAL); ``put_many`` is atomic."""

    def __init__(self, path: str | Path, *, timeout: float = 60.0):
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise DataError(
                located(
                    self.path,
                    None,
                    "is a folder, not a prior store",
                    "give a file path such as priors.sqlite",
                )
            )
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed batch survives the process being killed (not a power cut).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._check_version()
        except sqlite3.DatabaseError as err:
            raise DataError(
                located(
                    self.path,
                    None,
                    f"not a prior store ({err})",
                    "point at a .sqlite file written by rationalign, or at a new path",
                )
            ) from None

    def _check_version(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute("SELECT schema_version FROM version").fetchone()
            if row is None:
                self._db.execute("INSERT INTO version VALUES (?, ?)", (SCHEMA_VERSION, _now()))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        if row is not None and row[0] != SCHEMA_VERSION:
            raise DataError(
                located(
                    self.path,
                    None,
                    f"prior store schema version {row[0]}, this rationalign reads version {SCHEMA_VERSION}",
                    "compute the priors again into a new file",
                )
            )

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("SELECT schema_version FROM version").fetchone()[0])

    # ------------------------------------------------------------------------------------ reading
    def _row_to_attribution(self, key: PriorKey, row: tuple) -> WordAttribution:
        words_json, blob, meta_json = row
        scores = np.frombuffer(blob, dtype=SCORE_DTYPE).astype(np.float64)
        return WordAttribution(json.loads(words_json), scores, key.method, key.target, json.loads(meta_json))

    def get_many(self, keys: Sequence[PriorKey]) -> list[WordAttribution | None]:
        """The stored attribution of each key, ``None`` where there is none (input order)."""
        out: list[WordAttribution | None] = []
        query = (
            "SELECT words, scores, meta FROM priors "
            "WHERE fingerprint = ? AND method = ? AND params = ? AND text = ? AND target = ?"
        )
        self._db.execute("BEGIN")  # one consistent snapshot for the whole lookup
        try:
            for key in keys:
                row = self._db.execute(query, key.as_tuple()).fetchone()
                out.append(None if row is None else self._row_to_attribution(key, row))
        finally:
            self._db.execute("COMMIT")
        return out

    def get(self, key: PriorKey) -> WordAttribution | None:
        return self.get_many([key])[0]

    def missing(self, keys: Sequence[PriorKey]) -> list[PriorKey]:
        """The keys with no stored row, each once, in input order."""
        query = "SELECT 1 FROM priors WHERE fingerprint = ? AND method = ? AND params = ? AND text = ? AND target = ?"
        seen: set[PriorKey] = set()
        out: list[PriorKey] = []
        self._db.execute("BEGIN")
        try:
            for key in keys:
                if key in seen:
                    continue
                seen.add(key)
                if self._db.execute(query, key.as_tuple()).fetchone() is None:
                    out.append(key)
        finally:
            self._db.execute("COMMIT")
        return out

    def count(self, *, fingerprint: str | None = None, method: str | None = None) -> int:
        where, args = self._filter(fingerprint, method)
        return int(self._db.execute(f"SELECT COUNT(*) FROM priors{where}", args).fetchone()[0])

    @staticmethod
    def _filter(fingerprint: str | None, method: str | None) -> tuple[str, list[str]]:
        clauses, args = [], []
        if fingerprint is not None:
            clauses.append("fingerprint = ?")
            args.append(fingerprint)
        if method is not None:
            clauses.append("method = ?")
            args.append(method)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), args

    def get_scores(self, fingerprint: str, texts: Sequence[str]) -> list[np.ndarray | None]:
        """The stored label distribution of each text under ``fingerprint``, ``None`` where there is none."""
        query = "SELECT dtype, probs FROM teacher_scores WHERE fingerprint = ? AND text = ?"
        out: list[np.ndarray | None] = []
        self._db.execute("BEGIN")
        try:
            for text in texts:
                row = self._db.execute(query, (fingerprint, text)).fetchone()
                out.append(None if row is None else np.frombuffer(row[1], dtype=row[0]).copy())
        finally:
            self._db.execute("COMMIT")
        return out

    def count_scores(self, *, fingerprint: str | None = None) -> int:
        where, args = self._filter(fingerprint, None)
        return int(self._db.execute(f"SELECT COUNT(*) FROM teacher_scores{where}", args).fetchone()[0])

    # ------------------------------------------------------------------------------------ writing
    def put_scores(self, fingerprint: str, texts: Sequence[str], probs: np.ndarray) -> int:
        """Store a teacher's label distributions of ``texts`` in ONE transaction; returns the row count."""
        probs = np.asarray(probs)
        if probs.dtype.kind != "f":
            probs = probs.astype(np.float64)
        if probs.ndim != 2 or len(probs) != len(texts):
            raise ValueError(f"{len(texts)} texts but teacher scores of shape {probs.shape}")
        dtype = probs.dtype.newbyteorder("<").str  # explicit byte order: the file reads the same anywhere
        stamp = _now()
        rows = [
            (str(fingerprint), str(t), dtype, np.ascontiguousarray(p, dtype=dtype).tobytes(), stamp)
            for t, p in zip(texts, probs, strict=True)
        ]
        return self._insert("teacher_scores", rows)

    def _insert(self, table: str, rows: list[tuple]) -> int:
        """``rows`` into ``table`` in ONE transaction (all or nothing; a row with the same key is replaced)."""
        if not rows:
            return 0
        marks = ", ".join("?" * len(rows[0]))
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", rows)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return len(rows)

    def put_many(self, items: Iterable[tuple[PriorKey, WordAttribution]]) -> int:
        """Store every ``(key, attribution)`` in ONE transaction (all or nothing). Returns the row count."""
        stamp = _now()
        rows = []
        for key, attribution in items:
            scores = np.asarray(attribution.scores, dtype=np.float64)
            if scores.shape != (len(attribution.words),):
                raise ValueError(
                    f"{key.text!r}: {len(attribution.words)} words but scores of shape {scores.shape}"
                )
            rows.append(
                (
                    *key.as_tuple(),
                    json.dumps(list(attribution.words), ensure_ascii=False),
                    scores.astype(SCORE_DTYPE).tobytes(),
                    json.dumps(
                        attribution.meta or {}, sort_keys=True, ensure_ascii=False, default=json_default
                    ),
                    stamp,
                )
            )
        return self._insert("priors", rows)

    def export_jsonl(
        self, path: str | Path, *, fingerprint: str | None = None, method: str | None = None
    ) -> int:
        """Write the (optionally filtered) rows as JSON lines; written to a temporary file, then renamed."""
        path = Path(path)
        where, args = self._filter(fingerprint, method)
        query = (
            "SELECT fingerprint, method, params, text, target, words, scores, meta, created_at FROM priors"
            f"{where} ORDER BY fingerprint, method, params, text, target"
        )
        n = 0
        with atomic_writer(path) as out:
            for fp, method_name, params, text, target, words, blob, meta, created in self._db.execute(
                query, args
            ):
                record = {
                    "fingerprint": fp,
                    "method": method_name,
                    "params": json.loads(params),
                    "text": text,
                    "target": target,
                    "words": json.loads(words),
                    "scores": np.frombuffer(blob, dtype=SCORE_DTYPE).astype(float).tolist(),
                    "meta": json.loads(meta),
                    "created_at": created,
                }
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                n += 1
        return n

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PriorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------ computing


@dataclass
class PriorRun:
    """What :func:`compute_priors` returns: attributions in input order and what computing them cost."""

    attributions: list[WordAttribution]
    computed: int  # utterances computed in this run
    reused: int  # utterances already in the store
    seconds: float
    cost: CostReport | None = None  # the attributor's own counter for this run, if it keeps one
    keys: list[PriorKey] = field(default_factory=list)

    def summary(self) -> dict:
        out: dict[str, Any] = {
            "utterances": len(self.attributions),
            "computed": self.computed,
            "reused": self.reused,
            "seconds": round(self.seconds, 3),
            "seconds_per_computed_utterance": round(self.seconds / self.computed, 6)
            if self.computed
            else 0.0,
        }
        if self.cost is not None:
            out["texts_scored"] = self.cost.texts_scored
            out["texts_scored_per_utterance"] = round(self.cost.texts_per_utterance, 3)
            out["model_calls"] = self.cost.calls
            if self.cost.tokens:
                out["teacher_tokens"] = self.cost.tokens
                out["teacher_tokens_per_utterance"] = round(self.cost.tokens_per_utterance, 1)
        return out


def attributor_key_params(attributor: Any) -> dict:
    return attributor.params() if callable(getattr(attributor, "params", None)) else {}


def compute_priors(
    attributor: Any,
    texts: Sequence[str],
    targets: Sequence[int],
    store: PriorStore,
    key_params: dict | None = None,
    *,
    fingerprint: str | None = None,
    method: str | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> PriorRun:
    """Attributions for every ``(text, target)``, computing only what ``store`` lacks, one stored batch at
    a time (a killed run resumes where it stopped). ``key_params`` defaults to ``attributor.params()``,
    ``fingerprint`` to ``attributor.fingerprint`` and ``method`` to ``attributor.name``."""
    texts = list(texts)
    targets = [int(t) for t in targets]
    if len(texts) != len(targets):
        raise ValueError(f"{len(texts)} texts but {len(targets)} targets")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if fingerprint is None:
        fingerprint = getattr(attributor, "fingerprint", None)
        if fingerprint is None:
            raise ValueError(
                "the attributor has no fingerprint; pass fingerprint= (what produced the scores)"
            )
    method = method or attributor.name
    params = attributor_key_params(attributor) if key_params is None else key_params
    keys = [PriorKey.make(fingerprint, method, params, t, y) for t, y in zip(texts, targets, strict=True)]
    todo = store.missing(keys)
    cost_before = (
        attributor.cost.copy() if isinstance(getattr(attributor, "cost", None), CostReport) else None
    )
    started = time.perf_counter()
    if todo:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=Console(stderr=True), disable=not progress, transient=False) as bar:
            task = bar.add_task(f"{method} priors", total=len(todo))
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                results = attributor.attribute([k.text for k in batch], [k.target for k in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{method}: {len(results)} attributions for {len(batch)} texts")
                store.put_many(zip(batch, results, strict=True))
                bar.advance(task, len(batch))
    seconds = time.perf_counter() - started
    stored = store.get_many(keys)
    lost = [k.text for k, a in zip(keys, stored, strict=True) if a is None]
    if lost:
        raise RuntimeError(
            f"{len(lost)} priors are missing from {store.path} after computing them, e.g. {lost[0]!r}"
        )
    cost = attributor.cost.minus(cost_before) if cost_before is not None else None
    return PriorRun(
        attributions=[a for a in stored if a is not None],
        computed=len(todo),
        reused=len(set(keys)) - len(todo),
        seconds=seconds,
        cost=cost,
        keys=keys,
    )
