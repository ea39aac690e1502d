"""Drift between the training data and a log of incoming texts, and recalibration on fresh labels.

Signals (reference = training texts, incoming = the log; each side subsampled to ``max_samples``):

- **labels**: the model's predicted-label distributions; Jensen-Shannon divergence (base 2, in [0, 1])
  and the chi-square test of homogeneity of the 2 x C count table.
- **vocabulary**: out-of-vocabulary rate of incoming word tokens against the training vocabulary, and JS
  divergence between the unigram distributions (words as in ``rationalign.attribution.words``, lower-cased).
- **embedding**: mean-pooled last hidden states; cosine between the two mean vectors and the squared MMD
  with an RBF kernel (bandwidth: median pairwise distance) on at most ``permutation_samples`` per side.
- **confidence**: mean max-probability; Mann-Whitney U test between the two samples.

A raw divergence depends on sample size (two samples of the same data never have JS 0), so each signal's
decision is a test: vocabulary and embedding statistics get permutation p-values (the texts are pooled and
re-split ``permutations`` times), labels the chi-square p-value, confidence the Mann-Whitney p-value. A
signal is flagged when its p-value is at most ``alpha / number_of_signals`` (Bonferroni: a sample of the
training distribution is flagged with probability at most ``alpha``) and, for labels and confidence, the
shift is also large enough to matter (``min_label_js``, ``min_confidence_shift``).

A model is more confident on the texts it was fitted on than on any unseen text, so with the train split
as reference the confidence signal is biased towards "lower on incoming". That is why it also needs a
minimum shift; a held-out split the model never trained on (``--split valid``) removes the bias.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import sparse
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, mannwhitneyu

from rationalign.attribution.words import split_words
from rationalign.data.io import JSONL_SUFFIXES, load_dataset, resolve_data, split_files
from rationalign.data.types import IntentDataset
from rationalign.errors import ConfigError, DataError, located
from rationalign.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    temperature_nll,
)
from rationalign.models.classifier import META_FILE, IntentClassifier
from rationalign.report.registry import MANIFEST, RunRecord, RunRegistry

TEXT_SUFFIXES = (".txt", ".log")


# ------------------------------------------------------------------------------------------------ input


def read_texts(path: str | Path, text_field: str = "text") -> list[str]:
    """Texts of a log: ``.txt``/``.log`` (one per non-empty line) or JSON lines (objects with
    ``text_field``, or bare JSON strings). Errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(located(path, None, "no such file", "pass a .txt or .jsonl log of incoming texts"))
    suffix = path.suffix.lower()
    if suffix not in (*TEXT_SUFFIXES, *JSONL_SUFFIXES):
        raise DataError(
            located(path, None, f"unsupported log type {suffix or '(no suffix)'!r}", "use .txt or .jsonl")
        )
    texts: list[str] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").lstrip("\ufeff").rstrip("\r\n")
            except UnicodeDecodeError:
                raise DataError(located(path, number, "not UTF-8", "re-encode the log as UTF-8")) from None
            if not line.strip():
                continue
            if suffix in TEXT_SUFFIXES:
                texts.append(line)
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(
                    located(path, number, f"invalid JSON ({err.msg})", "write one JSON object per line")
                ) from None
            value = record.get(text_field) if isinstance(record, dict) else record
            if not isinstance(value, str) or not value.strip():
                raise DataError(
                    located(
                        path,
                        number,
                        f"no non-empty string field {text_field!r}",
                        f'write {{"{text_field}": "..."}} per line, or pass --text-field',
                    )
                )
            texts.append(value)
    if not texts:
        raise DataError(located(path, None, "no texts", "log at least one incoming text"))
    return texts


def load_reference(
    spec: str | Path, split: str = "train", text_field: str = "text", label_field: str = "label"
) -> IntentDataset:
    """A labelled data file, or split ``split`` of a folder / dataset name."""
    path = resolve_data(spec)
    if path.is_dir():
        files = split_files(path)
        if split not in files:
            raise DataError(
                located(
                    path,
                    None,
                    f"no {split!r} split (found {', '.join(sorted(files))})",
                    "pass --split with an existing split",
                )
            )
        path = files[split]
    return load_dataset(path, text_field=text_field, label_field=label_field)


# ------------------------------------------------------------------------------------------- statistics


def words_of(text: str) -> list[str]:
    """Lower-cased words with at least one letter or digit (punctuation is not vocabulary)."""
    return [w.lower() for w in split_words(text) if any(c.isalnum() for c in w)]


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0 = identical, 1 = disjoint) of two count/probability vectors."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return math.nan
    return float(jensenshannon(p, q, base=2) ** 2)


def _rows_js(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """JS (bits) between matching rows of two count matrices, vectorised."""
    p = a / np.maximum(a.sum(1, keepdims=True), 1e-300)
    q = b / np.maximum(b.sum(1, keepdims=True), 1e-300)
    m = 0.5 * (p + q)

    def kl(x: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(x > 0, x * np.log2(x / np.where(m > 0, m, 1.0)), 0.0).sum(1)

    return 0.5 * kl(p) + 0.5 * kl(q)


def _permutation_p(observed: float, permuted: np.ndarray) -> float:
    return float((1 + np.sum(permuted >= observed - 1e-12)) / (1 + len(permuted)))


def _split_indicators(n_a: int, n_b: int, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """``[permutations + 1, n_a + n_b]`` 0/1 rows: row 0 the observed split, others random re-splits."""
    n = n_a + n_b
    rows = np.zeros((permutations + 1, n), dtype=np.float64)
    rows[0, :n_a] = 1.0
    for r in range(1, permutations + 1):
        rows[r, rng.permutation(n)[:n_a]] = 1.0
    return rows


def vocabulary_shift(
    reference: Sequence[str], incoming: Sequence[str], permutations: int, rng: np.random.Generator
) -> dict[str, float]:
    """OOV rate and unigram JS, with permutation p-values, on the given (already subsampled) texts."""
    docs = [Counter(words_of(t)) for t in [*reference, *incoming]]
    vocab = {w: i for i, w in enumerate(sorted({w for d in docs for w in d}))}
    if not vocab:
        return {"oov_rate": math.nan, "vocab_js": math.nan, "oov_p": 1.0, "vocab_js_p": 1.0}
    rows, cols, vals = [], [], []
    for r, d in enumerate(docs):
        for w, c in d.items():
            rows.append(r)
            cols.append(vocab[w])
            vals.append(c)
    counts = sparse.csr_matrix((vals, (rows, cols)), shape=(len(docs), len(vocab)), dtype=np.float64)
    split = _split_indicators(len(reference), len(incoming), permutations, rng)
    side_a = (sparse.csr_matrix(split) @ counts).toarray()
    side_b = (sparse.csr_matrix(1.0 - split) @ counts).toarray()
    oov = np.where(side_a > 0, 0.0, side_b).sum(1) / np.maximum(side_b.sum(1), 1e-300)
    js = _rows_js(side_a, side_b)
    return {
        "oov_rate": float(oov[0]),
        "vocab_js": float(js[0]),
        "oov_p": _permutation_p(oov[0], oov[1:]),
        "vocab_js_p": _permutation_p(js[0], js[1:]),
    }


def mmd_permutation(
    x: np.ndarray, y: np.ndarray, permutations: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Squared MMD (biased V-statistic) with an RBF kernel, bandwidth = median pairwise distance of the
    pooled sample, and its permutation p-value."""
    z = np.concatenate([x, y]).astype(np.float64)
    sq = np.sum(z * z, axis=1)
    dist2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)
    off_diagonal = dist2[np.triu_indices(len(z), k=1)]
    median = float(np.median(off_diagonal)) if off_diagonal.size else 1.0
    kernel = np.exp(-dist2 / (median if median > 0 else 1.0))
    split = _split_indicators(len(x), len(y), permutations, rng)
    # With a = indicator of side x scaled 1/n_x and b = indicator of side y scaled 1/n_y,
    # MMD^2 = a'Ka + b'Kb - 2 a'Kb = (a - b)' K (a - b).
    weights = split / len(x) - (1.0 - split) / len(y)
    stats = np.sum((weights @ kernel) * weights, axis=1)
    return float(stats[0]), _permutation_p(stats[0], stats[1:])


def mean_pooled_embeddings(clf: IntentClassifier, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """``[n, hidden]`` mean over real tokens of the last hidden layer (input order kept)."""
    texts = list(texts)
    out: list[np.ndarray] = [np.empty(0)] * len(texts)
    order = np.argsort([len(t) for t in texts], kind="stable")
    was_training = clf.model.training
    clf.model.eval()
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            batch = clf.encode([texts[i] for i in idx])
            hidden = clf.model(**batch, output_hidden_states=True).hidden_states[-1].float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).cpu().numpy()
            for j, i in enumerate(idx):
                out[i] = pooled[j]
    clf.model.train(was_training)
    return np.stack(out) if out else np.zeros((0, 0))


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class DriftThresholds:
    alpha: float = 0.01
    min_label_js: float = 0.02
    min_confidence_shift: float = 0.05
    max_samples: int = 1000
    permutation_samples: int = 300
    permutations: int = 999
    seed: int = 0


@dataclass(frozen=True)
class DriftSignal:
    name: str
    value: float
    p_value: float | None
    threshold: str
    flagged: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DriftReport:
    n_reference: int
    n_incoming: int
    signals: list[DriftSignal]
    statistics: dict[str, float]
    reference_label_distribution: dict[str, float] = field(default_factory=dict)
    incoming_label_distribution: dict[str, float] = field(default_factory=dict)
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)

    @property
    def drifted(self) -> bool:
        return any(s.flagged for s in self.signals)

    def signal(self, name: str) -> DriftSignal:
        return next(s for s in self.signals if s.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "drifted": self.drifted,
            "n_reference": self.n_reference,
            "n_incoming": self.n_incoming,
            "signals": [s.to_dict() for s in self.signals],
            "statistics": self.statistics,
            "reference_label_distribution": self.reference_label_distribution,
            "incoming_label_distribution": self.incoming_label_distribution,
            "thresholds": asdict(self.thresholds),
        }


def _subsample(texts: Sequence[str], k: int, rng: np.random.Generator) -> list[str]:
    texts = list(texts)
    if len(texts) <= k:
        return texts
    return [texts[i] for i in sorted(rng.choice(len(texts), size=k, replace=False))]


def detect_drift(
    clf: IntentClassifier,
    reference: Sequence[str],
    incoming: Sequence[str],
    thresholds: DriftThresholds | None = None,
) -> DriftReport:
    """Compare ``incoming`` texts with ``reference`` (training) texts; see the module docstring."""
    th = thresholds or DriftThresholds()
    if not 0 < th.alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {th.alpha}")
    if len(reference) < 2 or len(incoming) < 2:
        raise DataError(
            f"drift needs at least 2 reference and 2 incoming texts (got {len(reference)} and {len(incoming)}); "
            "fix: log more incoming texts"
        )
    rng = np.random.default_rng(th.seed)
    ref = _subsample(reference, th.max_samples, rng)
    inc = _subsample(incoming, th.max_samples, rng)
    n_signals = 5
    level = th.alpha / n_signals
    if 1.0 / (th.permutations + 1) > level:
        raise ConfigError(
            f"{th.permutations} permutations cannot give a p-value <= {level:.3g} (alpha {th.alpha} / "
            f"{n_signals} signals); fix: use at least {math.ceil(1 / level) - 1} permutations or a larger alpha"
        )

    probs_ref, probs_inc = clf.predict_proba(ref), clf.predict_proba(inc)
    n_labels = len(clf.label_space)
    counts_ref = np.bincount(probs_ref.argmax(1), minlength=n_labels)
    counts_inc = np.bincount(probs_inc.argmax(1), minlength=n_labels)
    label_js = js_divergence(counts_ref, counts_inc)
    table = np.stack([counts_ref, counts_inc])
    table = table[:, table.sum(0) > 0]
    label_p = float(chi2_contingency(table)[1]) if table.shape[1] > 1 else 1.0

    conf_ref, conf_inc = probs_ref.max(1), probs_inc.max(1)
    conf_shift = float(conf_inc.mean() - conf_ref.mean())
    conf_p = float(mannwhitneyu(conf_ref, conf_inc, alternative="two-sided").pvalue)

    k = th.permutation_samples
    ref_small, inc_small = _subsample(ref, k, rng), _subsample(inc, k, rng)
    vocab = vocabulary_shift(ref_small, inc_small, th.permutations, rng)
    train_vocab = {w for t in ref for w in words_of(t)}
    inc_words = [w for t in inc for w in words_of(t)]
    oov_full = sum(w not in train_vocab for w in inc_words) / max(len(inc_words), 1)
    counter_ref, counter_inc = Counter(w for t in ref for w in words_of(t)), Counter(inc_words)
    keys = sorted(set(counter_ref) | set(counter_inc))
    vocab_js_full = (
        js_divergence(
            np.array([counter_ref[w] for w in keys], dtype=float),
            np.array([counter_inc[w] for w in keys], dtype=float),
        )
        if keys
        else math.nan
    )

    emb_ref, emb_inc = mean_pooled_embeddings(clf, ref_small), mean_pooled_embeddings(clf, inc_small)
    mean_ref, mean_inc = emb_ref.mean(0), emb_inc.mean(0)
    cosine = float(mean_ref @ mean_inc / max(np.linalg.norm(mean_ref) * np.linalg.norm(mean_inc), 1e-12))
    mmd, mmd_p = mmd_permutation(emb_ref, emb_inc, th.permutations, rng)

    perm = f"{th.permutations} permutations of {len(ref_small)} + {len(inc_small)} texts"
    signals = [
        DriftSignal(
            "label_distribution",
            label_js,
            label_p,
            f"chi-square p <= {level:.3g} and JS >= {th.min_label_js}",
            label_p <= level and label_js >= th.min_label_js,
            f"JS {label_js:.4f} bits between predicted-label distributions; chi-square p = {label_p:.3g}",
        ),
        DriftSignal(
            "vocabulary_oov",
            oov_full,
            vocab["oov_p"],
            f"permutation p <= {level:.3g}",
            vocab["oov_p"] <= level,
            f"{oov_full:.1%} of incoming words are not in the training vocabulary "
            f"({vocab['oov_rate']:.1%} on the subsample; {perm})",
        ),
        DriftSignal(
            "vocabulary_js",
            vocab_js_full,
            vocab["vocab_js_p"],
            f"permutation p <= {level:.3g}",
            vocab["vocab_js_p"] <= level,
            f"unigram JS {vocab_js_full:.4f} bits ({vocab['vocab_js']:.4f} on the subsample; {perm})",
        ),
        DriftSignal(
            "embedding_mmd",
            mmd,
            mmd_p,
            f"permutation p <= {level:.3g}",
            mmd_p <= level,
            f"RBF MMD^2 {mmd:.4g}; cosine between mean embeddings {cosine:.4f} ({perm})",
        ),
        DriftSignal(
            "confidence",
            conf_shift,
            conf_p,
            f"Mann-Whitney p <= {level:.3g} and |shift| >= {th.min_confidence_shift}",
            conf_p <= level and abs(conf_shift) >= th.min_confidence_shift,
            f"mean max-probability {conf_ref.mean():.3f} -> {conf_inc.mean():.3f}",
        ),
    ]
    names = clf.label_space.names
    return DriftReport(
        n_reference=len(ref),
        n_incoming=len(inc),
        signals=signals,
        statistics={
            "label_js": label_js,
            "label_chi2_p": label_p,
            "oov_rate": oov_full,
            "vocab_js": vocab_js_full,
            "embedding_cosine": cosine,
            "embedding_mmd2": mmd,
            "embedding_mmd_p": mmd_p,
            "confidence_reference": float(conf_ref.mean()),
            "confidence_incoming": float(conf_inc.mean()),
            "confidence_shift": conf_shift,
            "confidence_p": conf_p,
        },
        reference_label_distribution={
            names[i]: float(c / counts_ref.sum()) for i, c in enumerate(counts_ref) if c
        },
        incoming_label_distribution={
            names[i]: float(c / counts_inc.sum()) for i, c in enumerate(counts_inc) if c
        },
        thresholds=th,
    )


# ------------------------------------------------------------------------------------------ recalibration


@dataclass(frozen=True)
class RecalibrationResult:
    run_dir: Path
    model_dir: Path
    temperature_before: float
    temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    n_examples: int
    run: RunRecord | None

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "run"}
        out.update(
            run_dir=str(self.run_dir),
            model_dir=str(self.model_dir),
            run_id=self.run.id if self.run else None,
            parents=self.run.parents if self.run else [],
        )
        return out


def _labelled(sample: str | Path | IntentDataset, text_field: str, label_field: str) -> IntentDataset:
    if isinstance(sample, IntentDataset):
        return sample
    return load_reference(sample, split="valid", text_field=text_field, label_field=label_field)


def recalibrate(
    model_dir: str | Path,
    labelled_sample: str | Path | IntentDataset,
    out_dir: str | Path,
    registry: RunRegistry | None = None,
    *,
    text_field: str = "text",
    label_field: str = "label",
    actor: str | None = None,
) -> RecalibrationResult:
    """Refit the temperature on ``labelled_sample`` and save a NEW model version under ``out_dir``.

    ``out_dir`` becomes a run directory (``model/`` = a copy of ``model_dir`` with the new temperature in
    ``rationalign.json``, and ``manifest.json`` with kind ``recalibrate``), registered as a child of the
    run that holds ``model_dir`` (when that folder is a run's ``model/``). The weights are unchanged, so
    accuracy metrics carry over from the parent; calibration numbers are measured on the sample (which
    the temperature was fitted on, so they are in-sample and named ``recalibration_*``).
    """
    t0 = time.perf_counter()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    source = Path(model_dir)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(located(out, None, "already exists and is not empty", "choose a new --out folder"))
    if (source / MANIFEST).is_file() and (source / "model" / META_FILE).is_file():
        source = source / "model"  # a run directory was given
    clf = IntentClassifier.load(source)
    ds = _labelled(labelled_sample, text_field, label_field)
    unknown = next((e for e in ds if e.label not in clf.label_space), None)
    if unknown is not None:
        raise DataError(
            located(
                unknown.source or ds.path or ds.name,
                unknown.line,
                f"label {unknown.label!r} is not in the model's label space",
                "recalibrate on data labelled with the model's labels",
            )
        )
    if len(ds) < 2:
        raise DataError(located(ds.path or ds.name, None, "fewer than 2 examples", "label more examples"))
    logits = clf.logits(ds.texts).numpy().astype(np.float64)
    labels = np.asarray(ds.label_ids(clf.label_space))
    before = clf.temperature
    temperature = fit_temperature(logits, labels)
    nll_before, nll_after = (
        temperature_nll(logits, labels, before),
        temperature_nll(logits, labels, temperature),
    )
    ece_before = expected_calibration_error(apply_temperature(logits, before), labels)
    ece_after = expected_calibration_error(apply_temperature(logits, temperature), labels)

    parent_run_dir = source.parent if (source.parent / MANIFEST).is_file() else None
    registry = registry or RunRegistry()
    parent = registry.resolve(parent_run_dir, actor=actor) if parent_run_dir is not None else None
    parent_manifest = parent.manifest if parent is not None else {}

    from rationalign.data.fingerprint import fingerprint

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copytree(source, tmp / "model")
        clf.temperature = temperature
        clf.meta.update(
            recalibrated_from=str(source.resolve()),
            recalibration={
                "temperature_before": before,
                "nll_before": nll_before,
                "nll_after": nll_after,
                "n_examples": len(ds),
                "data": str(ds.path or ds.name),
            },
        )
        clf.save_meta(tmp / "model")
        inherited = {
            k: v
            for k, v in (parent_manifest.get("metrics") or {}).items()
            if k.startswith(("test_accuracy", "test_macro_f1", "best_valid"))
        }
        metrics = {
            **inherited,
            "temperature": temperature,
            "recalibration_nll_before": nll_before,
            "recalibration_nll_after": nll_after,
            "recalibration_ece_before": ece_before,
            "recalibration_ece_after": ece_after,
            "recalibration_examples": len(ds),
        }
        manifest = {
            "kind": "recalibrate",
            "name": out.name,
            "started_at": started,
            "wall_seconds": time.perf_counter() - t0,
            "git_commit": parent_manifest.get("git_commit"),
            "parent": {
                "run_dir": str(parent_run_dir.resolve()) if parent_run_dir else None,
                "model_dir": str(source.resolve()),
                "run_id": parent.id if parent else None,
            },
            "config": {
                "recalibrate": {
                    "model": str(source),
                    "data": str(ds.path or ds.name),
                    "method": "temperature scaling (NLL, bounded Brent on log T)",
                },
                "parent_config": parent_manifest.get("config"),
            },
            "data": {"fingerprint": fingerprint(ds), "path": str(ds.path or ds.name), "examples": len(ds)},
            "model": {
                **(parent_manifest.get("model") or {}),
                "weights_sha256": clf.weights_fingerprint(),
                "dir": str(out.resolve() / "model"),
                "temperature": temperature,
            },
            "metrics": metrics,
            "inherited_metrics": sorted(inherited),
        }
        if parent_manifest.get("teacher"):
            manifest["teacher"] = parent_manifest["teacher"]
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    child = registry.register_run(out, parents=[parent.id] if parent else [], actor=actor)
    result = RecalibrationResult(
        out, out / "model", before, temperature, nll_before, nll_after, ece_before, ece_after, len(ds), child
    )
    registry.append_audit("recalibrate", child.id, "saved", result.to_dict(), actor)
    return result
