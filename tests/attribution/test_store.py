"""The SQLite prior store, compute_priors, and resuming after the job is killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from rationalign.attribution.base import WordAttribution
from rationalign.attribution.store import (
    SCHEMA_VERSION,
    PriorKey,
    PriorStore,
    canonical_params,
    compute_priors,
)
from rationalign.errors import DataError


def _attr(words, scores, method="lime", target=0, **meta):
    return WordAttribution(list(words), np.asarray(scores, float), method, target, meta)


def test_keys_canonicalise_params():
    a = PriorKey.make("fp", "lime", {"b": 1, "a": np.float64(0.5), "c": [np.int64(2)]}, "hi", np.int64(3))
    b = PriorKey.make("fp", "lime", '{"c": [2], "a": 0.5, "b": 1}', "hi", 3)
    assert a == b and a.params == '{"a":0.5,"b":1,"c":[2]}' and a.target == 3
    assert canonical_params(None) == "{}"


def test_put_get_missing_count_export(tmp_path):
    store = PriorStore(tmp_path / "p.sqlite")
    assert store.schema_version == SCHEMA_VERSION
    k1 = PriorKey.make("fp", "lime", {"n": 1}, "set an alarm", 0)
    k2 = PriorKey.make("fp", "lime", {"n": 1}, "set an alarm", 1)
    k3 = PriorKey.make("fp", "cap", {"n": 1}, "set an alarm", 0)
    k4 = PriorKey.make("fp", "lime", {"n": 2}, "set an alarm", 0)
    assert store.missing([k1, k2, k1]) == [k1, k2]
    assert (
        store.put_many(
            [
                (k1, _attr(["set", "an", "alarm"], [0.5, -0.25, 1 / 3], n_masks=7)),
                (k3, _attr(["set", "an", "alarm"], [1, 2, 3], "cap")),
            ]
        )
        == 2
    )
    assert store.count() == 2 and store.count(method="cap") == 1 and store.count(fingerprint="other") == 0
    assert store.missing([k1, k2, k3, k4]) == [k2, k4]
    got = store.get_many([k1, k2, k3])
    assert got[1] is None
    assert got[0].words == ["set", "an", "alarm"] and got[0].method == "lime" and got[0].target == 0
    np.testing.assert_allclose(got[0].scores, [0.5, -0.25, 1 / 3], rtol=1e-7)  # float32 on disk
    assert got[0].scores.dtype == np.float64 and got[0].meta == {"n_masks": 7}
    # A WAL-mode SQLite file with a version table.
    db = sqlite3.connect(tmp_path / "p.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT schema_version FROM version").fetchall() == [(SCHEMA_VERSION,)]
    db.close()
    n = store.export_jsonl(tmp_path / "out" / "p.jsonl", method="lime")
    lines = [json.loads(line) for line in (tmp_path / "out" / "p.jsonl").read_text().splitlines()]
    assert n == 1 and len(lines) == 1
    assert (
        lines[0]["params"] == {"n": 1}
        and lines[0]["words"] == ["set", "an", "alarm"]
        and lines[0]["created_at"]
    )
    assert not list((tmp_path / "out").glob(".*tmp"))
    store.close()
    with PriorStore(tmp_path / "p.sqlite") as again:  # reopening keeps everything
        assert again.count() == 2


def test_a_failed_batch_writes_nothing(tmp_path):
    store = PriorStore(tmp_path / "p.sqlite")
    good = (PriorKey.make("fp", "m", {}, "a b", 0), _attr(["a", "b"], [1, 2]))
    bad = (PriorKey.make("fp", "m", {}, "c d", 0), _attr(["c", "d"], [1, 2]))
    bad[1].scores = np.zeros(3)  # corrupted after construction
    with pytest.raises(ValueError):
        store.put_many([good, bad])
    assert store.count() == 0


def test_bad_store_files_are_user_errors(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database, not at all" * 100)
    with pytest.raises(DataError, match="not a prior store"):
        PriorStore(junk)
    with pytest.raises(DataError, match="folder"):
        PriorStore(tmp_path)
    old = tmp_path / "old.sqlite"
    PriorStore(old).close()
    db = sqlite3.connect(old)
    db.execute("UPDATE version SET schema_version = 99")
    db.commit()
    db.close()
    with pytest.raises(DataError, match="schema version 99"):
        PriorStore(old)


class Counting:
    """An attributor with a fingerprint and params that counts the texts it attributes."""

    name = "fake"
    fingerprint = "fake-fp"

    def __init__(self):
        self.seen: list[str] = []
        self.batches: list[int] = []

    def params(self):
        return {"scale": 2}

    def attribute(self, texts, targets):
        self.seen.extend(texts)
        self.batches.append(len(texts))
        return [
            _attr(t.split(), [len(w) * (y + 1) for w in t.split()], "fake", y)
            for t, y in zip(texts, targets, strict=True)
        ]


def test_compute_priors_skips_what_is_stored_and_keeps_input_order(tmp_path):
    store = PriorStore(tmp_path / "p.sqlite")
    texts = ["a bb", "ccc d", "a bb", "e", "ff gg hhh"]
    targets = [0, 1, 0, 2, 0]
    first = Counting()
    run = compute_priors(first, texts[:2], targets[:2], store, batch_size=1, progress=False)
    assert run.computed == 2 and first.batches == [1, 1]
    second = Counting()
    run = compute_priors(second, texts, targets, store, batch_size=2, progress=False)
    # Only the two new (text, target) pairs are computed, in one batch; the duplicate once.
    assert sorted(second.seen) == ["e", "ff gg hhh"] and run.computed == 2 and run.reused == 2
    assert [a.words for a in run.attributions] == [t.split() for t in texts]
    np.testing.assert_allclose(run.attributions[1].scores, [6, 2])
    assert run.summary()["utterances"] == 5 and "texts_scored" not in run.summary()
    # Other params: a different key, so computed again.
    third = Counting()
    compute_priors(third, texts[:1], targets[:1], store, key_params={"scale": 3}, progress=False)
    assert third.seen == ["a bb"] and store.count() == 5
    with pytest.raises(ValueError, match="targets"):
        compute_priors(Counting(), texts, targets[:2], store, progress=False)


def test_compute_priors_reports_the_attributors_cost(tmp_path):
    from rationalign.attribution.lime import LimePrior

    def model(texts):
        s = np.array([len(t) % 7 for t in texts], dtype=float) / 7
        return np.stack([s, 1 - s], axis=1)

    prior = LimePrior(model, n_samples=40, fingerprint="len-model")
    store = PriorStore(tmp_path / "p.sqlite")
    texts = ["one two three four five six", "seven eight", "nine"]
    run = compute_priors(prior, texts, [0, 0, 1], store, batch_size=2, progress=True)
    summary = run.summary()
    assert summary["computed"] == 3 and summary["texts_scored"] == prior.cost.texts_scored > 0
    assert summary["model_calls"] == 2 and summary["seconds_per_computed_utterance"] > 0
    assert store.count(fingerprint="len-model", method="lime") == 3
    again = compute_priors(
        LimePrior(model, n_samples=40, fingerprint="len-model"), texts, [0, 0, 1], store, progress=False
    )
    assert again.computed == 0 and again.cost.texts_scored == 0
    for a, b in zip(run.attributions, again.attributions, strict=True):
        np.testing.assert_array_equal(a.scores, b.scores)


# ------------------------------------------------------------------------------ kill and resume

WORKER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from rationalign.attribution.lime import LimePrior
    from rationalign.attribution.store import PriorStore, compute_priors
    from rationalign.attribution.words import split_words

    WEIGHTS = {"card": 1.0, "alarm": -0.8, "block": 0.6, "set": -0.4, "my": 0.1}
    TEXTS = [f"please block my card number {i} and set an alarm at {i % 7} now" for i in range(24)]
    TARGETS = [i % 2 for i in range(24)]

    def build(log_path, delay):
        def model(batch):
            time.sleep(delay)  # a slow model, so the test can kill the job mid-way
            s = np.array([sum(WEIGHTS.get(w, 0.05) for w in split_words(t)) for t in batch])
            return np.stack([1 / (1 + np.exp(-s)), 1 / (1 + np.exp(s))], axis=1)

        class Logged(LimePrior):
            def attribute(self, batch_texts, batch_targets):
                with open(log_path, "a") as log:  # one line per utterance computed, before scoring
                    log.writelines(f"{t}\\t{y}\\n" for t, y in zip(batch_texts, batch_targets))
                return super().attribute(batch_texts, batch_targets)

        return Logged(model, n_samples=300, seed=11, fingerprint="weights-v1")

    def run(store_path, log_path, delay):
        prior = build(log_path, delay)
        return compute_priors(prior, TEXTS, TARGETS, PriorStore(store_path), batch_size=2, progress=False)

    if __name__ == "__main__":
        run(sys.argv[1], sys.argv[2], float(sys.argv[3]))
    """
)


def _log(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _rows(path: Path) -> dict[tuple, tuple]:
    db = sqlite3.connect(path)
    rows = db.execute("SELECT text, target, words, scores FROM priors").fetchall()
    db.close()
    return {(t, y): (w, np.frombuffer(s, "<f4")) for t, y, w, s in rows}


def test_resume_after_sigkill_computes_each_missing_row_once(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    store_path, log1 = tmp_path / "priors.sqlite", tmp_path / "run1.log"
    job = subprocess.Popen(
        [sys.executable, str(script), str(store_path), str(log1), "0.3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    stored = 0
    while time.monotonic() < deadline and job.poll() is None:
        if store_path.exists():
            try:
                db = sqlite3.connect(store_path, timeout=5)
                stored = db.execute("SELECT COUNT(*) FROM priors").fetchone()[0]
                db.close()
            except sqlite3.OperationalError:
                stored = 0  # the schema is being created
            if stored >= 4:
                break
        time.sleep(0.05)
    assert job.poll() is None, f"the job ended before it could be killed: {job.communicate()}"
    os.kill(job.pid, signal.SIGKILL)
    job.wait(30)
    assert job.returncode == -signal.SIGKILL
    at_kill = _rows(store_path)
    assert 4 <= len(at_kill) < 24, "killed mid-way: some rows stored, not all"
    # Resume (in this process, same code): only the rows missing at the kill are computed, each once.
    worker: dict = {"__name__": "worker"}
    exec(compile(WORKER, str(script), "exec"), worker)
    log2 = tmp_path / "run2.log"
    run = worker["run"](store_path, log2, 0.0)
    recomputed = _log(log2)
    all_keys = {f"{t}\t{y}" for t, y in zip(worker["TEXTS"], worker["TARGETS"], strict=True)}
    missing_at_kill = all_keys - {f"{t}\t{y}" for t, y in at_kill}
    assert sorted(recomputed) == sorted(missing_at_kill)
    assert len(recomputed) == len(set(recomputed))
    assert (run.computed, run.reused) == (len(missing_at_kill), len(at_kill))
    final = _rows(store_path)
    assert len(final) == 24
    for key, (words, scores) in at_kill.items():  # rows written before the kill are untouched
        assert final[key][0] == words and np.array_equal(final[key][1], scores)
    # The same as an uninterrupted run.
    clean_path = tmp_path / "clean.sqlite"
    worker["run"](clean_path, tmp_path / "clean.log", 0.0)
    reference = _rows(clean_path)
    assert reference.keys() == final.keys()
    for key, (words, scores) in reference.items():
        assert final[key][0] == words
        # Same masks and model outputs; only the padded batched solve's summation order may differ.
        np.testing.assert_allclose(final[key][1], scores, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        [a.scores.sum() for a in run.attributions],
        [reference[(t, y)][1].sum() for t, y in zip(worker["TEXTS"], worker["TARGETS"], strict=True)],
        rtol=1e-5,
    )


def test_teacher_scores_round_trip_and_reject_a_shape_mismatch(tmp_path):
    with PriorStore(tmp_path / "p.sqlite") as store:
        probs = np.array([[0.25, 0.75], [0.5, 0.5]])
        assert store.put_scores("t", ["a", "b"], probs) == 2
        got = store.get_scores("t", ["b", "zzz", "a"])
        assert got[1] is None
        np.testing.assert_array_equal(got[0], probs[1])
        np.testing.assert_array_equal(got[2], probs[0])
        with pytest.raises(ValueError, match="2 texts but teacher scores of shape"):
            store.put_scores("t", ["a", "b"], np.ones(3))


def test_a_store_written_before_teacher_scores_existed_still_opens(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    with PriorStore(path) as store:
        store.put_many([(PriorKey.make("fp", "lime", {}, "hi there", 0), _attr(["hi", "there"], [0.1, 0.9]))])
    db = sqlite3.connect(path)
    db.execute("DROP TABLE teacher_scores")  # the layout of stores written before the table was added
    db.commit()
    db.close()
    with PriorStore(path) as store:
        assert store.count(method="lime") == 1 and store.count_scores() == 0
        store.put_scores("t", ["x"], np.ones((1, 2)) / 2)
        assert store.count_scores(fingerprint="t") == 1
