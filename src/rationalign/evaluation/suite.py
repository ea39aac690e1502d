"""The one-command evaluation suite: every metric of a student on one split, one JSON file.

``evaluate_suite(model, data)`` runs, on the test split (``split``):

1. clean accuracy and macro-F1 (all examples);
2. adversarial accuracy per generator of an attack set, the clean accuracy of the same source utterances,
   the drop between the two and the attack success rate (originally correct -> now wrong); and the
   worst case per source utterance (``worst_case``: right on the original and on every variant);
3. on the first ``limit`` examples (the expensive part, batched): word attributions of the predicted
   class (``gxi`` or ``ig``), ERASER faithfulness (comprehensiveness, sufficiency, AOPC, soft variants),
   counterfactual rates, stability (typo / casing / punctuation / WordNet synonym), and fidelity to the
   teacher's rationale when ``teacher_priors`` are given;
4. calibration (ECE / MCE / Brier / NLL) at temperature 1 and after temperature scaling fitted on the
   VALIDATION split (never on test);
5. out-of-scope detection when the data folder has ``oos_valid`` / ``oos_test`` (CLINC150): MSP and energy
   AUROC, FPR at 95% TPR, and an abstain threshold on MSP chosen on validation.

``store_calibration=True`` writes the fitted temperature (and abstain threshold) into the model folder
(``rationalign.json``). Explanation metrics use the raw softmax (temperature 1), so they describe the
weights and do not move when a temperature is stored.

The result is ONE schema-versioned JSON (``{"schema_version": 1, "model": ..., "split": ...,
"metrics": {...}}``) plus per-example records (JSON lines).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from scipy.special import softmax

from rationalign import __version__
from rationalign.data.io import (
    DataBundle,
    DataConfig,
    iter_json_objects,
    load_data,
    load_dataset,
    resolve_data,
    split_files,
)
from rationalign.data.types import IntentDataset, LabelSpace
from rationalign.errors import ConfigError, DataError, ModelError, located
from rationalign.evaluation.adversarial import AttackSet
from rationalign.evaluation.calibration import calibration_report, fit_temperature_report
from rationalign.evaluation.counterfactual import evaluate_counterfactual
from rationalign.evaluation.faithfulness import FaithfulnessConfig, evaluate_faithfulness
from rationalign.evaluation.fidelity import evaluate_fidelity
from rationalign.evaluation.metrics import accuracy, classification_report, macro_f1
from rationalign.evaluation.ood import choose_abstain_threshold, evaluate_ood, in_scope_scores
from rationalign.evaluation.stability import evaluate_stability
from rationalign.files import atomic_write_text, json_default

SCHEMA_VERSION = 1
AttributionName = Literal["gxi", "ig"]
OOS_SPLITS = ("oos_valid", "oos_test")


# ------------------------------------------------------------------------------------------- inputs
@dataclass
class SuiteData:
    """The splits the suite reads. ``oos_*`` are the out-of-scope files, when the data has them."""

    test: IntentDataset
    valid: IntentDataset | None = None
    oos_valid: IntentDataset | None = None
    oos_test: IntentDataset | None = None
    name: str = "data"
    notes: list[str] = field(default_factory=list)


def resolve_suite_data(
    data: DataConfig | DataBundle | IntentDataset | Mapping[str, IntentDataset] | str | Path,
    split: str = "test",
    ood: bool | None = None,
) -> SuiteData:
    """Load the evaluated split, the validation split and (unless ``ood=False``) the OOS files."""
    if isinstance(data, IntentDataset):
        return SuiteData(test=data, name=data.name)
    if isinstance(data, Mapping):
        if split not in data:
            raise DataError(f"no {split!r} split among {sorted(data)}; fix: pass it or choose --split")
        return SuiteData(
            test=data[split],
            valid=data.get("valid"),
            oos_valid=data.get("oos_valid") if ood is not False else None,
            oos_test=data.get("oos_test") if ood is not False else None,
            name=data[split].name.split("/")[0],
        )
    if isinstance(data, DataBundle):
        if data.test is None:
            raise DataError("the data bundle has no test split; fix: load data with a test split")
        return SuiteData(
            test=data.test, valid=data.valid, name=data.test.name.split("/")[0], notes=list(data.notes)
        )
    cfg = data if isinstance(data, DataConfig) else DataConfig(path=str(data))
    root = resolve_data(cfg.path)
    if root.is_file():
        return SuiteData(
            test=load_dataset(root), name=root.stem, notes=[f"{root} is one file: evaluated as is"]
        )
    bundle = load_data(cfg.model_copy(update={"test_split": split}))
    if bundle.test is None:
        raise DataError(located(root, None, f"no {split!r} split", "choose an existing split with --split"))
    result = SuiteData(test=bundle.test, valid=bundle.valid, name=root.name, notes=list(bundle.notes))
    if ood is not False:
        files = split_files(root)
        if all(s in files for s in OOS_SPLITS):
            result.oos_valid = load_dataset(files["oos_valid"], name=f"{root.name}/oos_valid")
            result.oos_test = load_dataset(files["oos_test"], name=f"{root.name}/oos_test")
        elif ood:
            raise DataError(located(root, None, "no oos_valid/oos_test files", "use CLINC150 or drop --ood"))
    return result


def _load_model(model: Any) -> tuple[Any, Path | None]:
    from rationalign.models.classifier import IntentClassifier

    if isinstance(model, str | Path):
        return IntentClassifier.load(model), Path(model)
    if not (hasattr(model, "logits") and hasattr(model, "label_space") and hasattr(model, "model")):
        raise ModelError(
            f"{type(model).__name__} is not a classifier; fix: pass a model folder or an IntentClassifier"
        )
    return model, None


def _check_labels(clf: Any, dataset: IntentDataset, what: str) -> None:
    unknown = sorted({y for y in dataset.labels if y not in clf.label_space})
    if unknown:
        raise DataError(
            located(
                dataset.path or dataset.name,
                None,
                f"{len(unknown)} {what} labels are not in the model's label space of {len(clf.label_space)} "
                f"(e.g. {unknown[0]!r})",
                "evaluate the model on the data set it was trained for (the label spaces must match)",
            )
        )


def load_teacher_priors(
    source: Any, *, method: str | None = None, fingerprint: str | None = None
) -> dict[tuple[str, int], Any]:
    """Teacher rationales keyed by ``(text, target)``.

    ``source``: a ``PriorStore`` or its ``.sqlite`` path (every row, optionally filtered by ``method`` /
    ``fingerprint``; several methods or teachers for one text is an error), a JSONL export of one, or a
    mapping ``text -> WordAttribution`` (the attribution's ``target`` is used)."""
    from rationalign.attribution.base import WordAttribution

    if isinstance(source, Mapping):
        return {(text, int(a.target)): a for text, a in source.items()}
    if isinstance(source, str | Path) and Path(source).suffix.lower() in (".jsonl", ".json"):
        path = Path(source)
        if not path.is_file():
            raise DataError(
                located(path, None, "no such prior file", "export one with PriorStore.export_jsonl")
            )
        return _priors_from_jsonl(path, method, fingerprint)
    from rationalign.attribution.store import PriorStore

    if isinstance(source, str | Path):
        if not Path(source).is_file():
            raise DataError(
                located(source, None, "no such prior store", "compute priors into a .sqlite file first")
            )
        store = PriorStore(source)
        close = True
    elif isinstance(source, PriorStore):
        store, close = source, False
    else:
        raise ConfigError(
            f"teacher priors of type {type(source).__name__}; fix: pass a PriorStore, its path, or a list of "
            "WordAttribution"
        )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            exported = Path(tmp) / "priors.jsonl"
            store.export_jsonl(exported, fingerprint=fingerprint, method=method)
            priors = _priors_from_jsonl(exported, method, fingerprint, origin=store.path)
    finally:
        if close:
            store.close()
    assert all(isinstance(a, WordAttribution) for a in priors.values())
    return priors


def _priors_from_jsonl(
    path: Path, method: str | None, fingerprint: str | None, origin: Path | None = None
) -> dict[tuple[str, int], Any]:
    from rationalign.attribution.base import WordAttribution

    priors: dict[tuple[str, int], Any] = {}
    sources: set[tuple[str, str, str]] = set()
    fix = "re-export the prior store"
    for number, r in iter_json_objects(path, fix=fix, origin=origin):
        try:
            if (method and r["method"] != method) or (fingerprint and r["fingerprint"] != fingerprint):
                continue
            attribution = WordAttribution(
                r["words"], np.asarray(r["scores"]), r["method"], int(r["target"]), r.get("meta") or {}
            )
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(located(origin or path, number, f"malformed prior ({err})", fix)) from None
        sources.add((r["fingerprint"], r["method"], json.dumps(r.get("params"), sort_keys=True)))
        priors[(r["text"], attribution.target)] = attribution
    if len(sources) > 1:
        methods = sorted({m for _, m, _ in sources})
        raise DataError(
            located(
                origin or path,
                None,
                f"priors of {len(sources)} teachers/methods/settings ({', '.join(methods)})",
                "choose one with --prior-method (and --prior-fingerprint)",
            )
        )
    return priors


# ------------------------------------------------------------------------------------------- result
@dataclass
class SuiteResult:
    model: dict[str, Any]
    split: str
    data: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, Any]
    timings: dict[str, float]
    records: list[dict[str, Any]] = field(repr=False)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "rationalign_version": __version__,
            "created": self.created,
            "model": self.model,
            "split": self.split,
            "data": self.data,
            "config": self.config,
            "metrics": self.metrics,
            "timings": self.timings,
        }

    def save(self, path: str | Path, records_path: str | Path | None = None) -> tuple[Path, Path]:
        """Write the metrics JSON and the records JSONL (default ``<stem>.records.jsonl``) atomically."""
        path = Path(path)
        records = Path(records_path) if records_path else path.with_name(f"{path.stem}.records.jsonl")
        atomic_write_text(records, "".join(json.dumps(r, default=json_default) + "\n" for r in self.records))
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, default=json_default) + "\n")
        return path, records


# ------------------------------------------------------------------------------------------- helpers
def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _clean(obj: Any) -> Any:
    """NaN -> None, recursively, so the JSON is strict."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return _finite(float(obj))
    return obj


def _attributor(clf: Any, name: str, batch_size: int, ig_steps: int) -> Any:
    from rationalign.attribution.gradient import GradientXInput
    from rationalign.attribution.integrated_gradients import IntegratedGradients

    if name == "gxi":
        return GradientXInput(clf, batch_size=batch_size)
    if name == "ig":
        return IntegratedGradients(clf, n_steps=ig_steps)
    raise ConfigError(f"unknown attribution {name!r}; fix: use 'gxi' or 'ig'")


def _adversarial(
    clf: Any, attack: AttackSet, batch_size: int, records: list[dict[str, Any]]
) -> dict[str, Any]:
    if not attack.examples:
        raise DataError(f"attack set of {attack.dataset!r} holds no examples; fix: build it with more data")
    unknown = sorted({e.label for e in attack.examples if e.label not in clf.label_space})
    if unknown:
        raise DataError(
            f"the attack set's labels do not match the model's label space ({len(unknown)} unknown, e.g. "
            f"{unknown[0]!r}); fix: attack the data set the model was trained on"
        )
    gold, clean, adv_pred = attack_predictions(
        attack, lambda texts: clf.logits(texts, batch_size).argmax(-1).numpy(), clf.label_space
    )
    out = attack_metrics(attack, gold, clean, adv_pred, len(clf.label_space))
    for i, e in enumerate(attack.examples):
        records.append(
            {
                "kind": "adversarial",
                "generator": e.generator,
                "source_index": e.source_index,
                "original": e.original,
                "text": e.text,
                "label": e.label,
                "edits": [list(x) for x in e.edits],
                "validity": e.validity,
                "predicted": clf.label_space.name(int(adv_pred[i])),
                "correct": bool(adv_pred[i] == gold[i]),
                "original_correct": bool(clean[i] == gold[i]),
            }
        )
    return out


def attack_predictions(
    attack: AttackSet, predict: Any, label_space: LabelSpace
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(gold, clean, adv_pred)`` label ids aligned with ``attack.examples`` from ``predict(texts) -> ids``,
    in one call over every variant and each distinct original (``clean`` is the original's prediction)."""
    texts = [e.text for e in attack.examples]
    originals = list(dict.fromkeys(e.original for e in attack.examples))
    predicted = np.asarray(predict(texts + originals))
    by_original = dict(zip(originals, predicted[len(texts) :].tolist(), strict=True))
    gold = np.array(label_space.ids([e.label for e in attack.examples]))
    clean = np.array([by_original[e.original] for e in attack.examples])
    return gold, clean, predicted[: len(texts)]


def attack_metrics(
    attack: AttackSet, gold: np.ndarray, clean: np.ndarray, adv_pred: np.ndarray, n_labels: int
) -> dict[str, Any]:
    """Per generator (and ``all``): adversarial accuracy, the clean accuracy of the same sources, the drop
    and the attack success rate; plus ``worst_case`` (see :func:`_worst_case`). ``gold``, ``clean`` (the
    prediction on each example's original) and ``adv_pred`` are label ids aligned with ``attack.examples``,
    so any predictor (a student, a baseline) is scored the same way."""
    out: dict[str, Any] = {
        "attack_set": {"dataset": attack.dataset, "seed": attack.seed, "generators": attack.generators}
    }
    groups = {"all": np.arange(len(attack.examples))}
    for name in attack.generator_names:
        groups[name] = np.array(
            [i for i, e in enumerate(attack.examples) if e.generator == name], dtype=np.int64
        )
    for name, idx in groups.items():
        if idx.size == 0:
            out[name] = {"n_examples": 0}
            continue
        adv_acc = accuracy(gold[idx], adv_pred[idx])
        clean_acc = accuracy(gold[idx], clean[idx])
        correct_before = clean[idx] == gold[idx]
        flipped = correct_before & (adv_pred[idx] != gold[idx])
        stats = attack.stats.get(name)
        out[name] = {
            "n_examples": int(idx.size),
            "n_sources": len({attack.examples[i].original for i in idx}),
            "accuracy": adv_acc,
            "macro_f1": macro_f1(gold[idx], adv_pred[idx], n_labels),
            "clean_accuracy_same_sources": clean_acc,
            "drop": clean_acc - adv_acc,
            "attack_success_rate": float(flipped.sum() / correct_before.sum())
            if correct_before.any()
            else None,
            "validity_pass_rate": stats.pass_rate if stats is not None else None,
            "n_candidates": stats.n_candidates if stats is not None else None,
        }
    out["worst_case"] = _worst_case(attack, gold, clean, adv_pred)
    return out


def _worst_case(
    attack: AttackSet, gold: np.ndarray, clean: np.ndarray, adv_pred: np.ndarray
) -> dict[str, Any]:
    """Accuracy under attack, per source utterance: it counts as correct only when the model is right on
    the original AND on every adversarial variant of it (all generators, all candidates). With several
    valid candidates per utterance (``rationalign attack --n-per-example``) this is the attacker's best
    pick among them for this model, the "accuracy under attack" of TextAttack-style searches, while every
    model still faces the same fixed candidate set."""
    by_source: dict[tuple[str, str], list[int]] = {}
    for i, e in enumerate(attack.examples):
        by_source.setdefault((e.original, e.label), []).append(i)
    clean_ok = np.array([clean[idx[0]] == gold[idx[0]] for idx in by_source.values()], dtype=bool)
    robust = (
        np.array([bool((adv_pred[idx] == gold[idx]).all()) for idx in by_source.values()], dtype=bool)
        & clean_ok
    )
    n = len(by_source)
    return {
        "n_examples": len(attack.examples),
        "n_sources": n,
        "variants_per_source": len(attack.examples) / n,
        "accuracy": float(robust.mean()),
        "clean_accuracy_same_sources": float(clean_ok.mean()),
        "drop": float(clean_ok.mean() - robust.mean()),
        "attack_success_rate": float((clean_ok & ~robust).sum() / clean_ok.sum()) if clean_ok.any() else None,
    }


# ------------------------------------------------------------------------------------------- the suite
def evaluate_suite(
    model: Any,
    data: DataConfig | DataBundle | IntentDataset | Mapping[str, IntentDataset] | str | Path,
    *,
    split: str = "test",
    attack_set: AttackSet | str | Path | None = None,
    teacher_priors: Any | None = None,
    prior_method: str | None = None,
    attribution: AttributionName = "gxi",
    calibrate: bool = True,
    store_calibration: bool = False,
    ood: bool | None = None,
    limit: int | None = None,
    stability: bool = True,
    seed: int = 0,
    batch_size: int = 64,
    ig_steps: int = 16,
    faithfulness: FaithfulnessConfig | None = None,
    target_tpr: float = 0.95,
    synonym: Any | None = None,
) -> SuiteResult:
    """Run every metric (see module docstring). ``model``: a model folder or an ``IntentClassifier``;
    ``limit``: how many test utterances the attribution-based metrics use (the first ``limit``)."""
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    if store_calibration and not calibrate:
        raise ConfigError("store_calibration needs calibrate=True; fix: drop --no-calibrate")
    if attribution not in ("gxi", "ig"):
        raise ConfigError(f"unknown attribution {attribution!r}; fix: use 'gxi' or 'ig'")
    started = time.perf_counter()
    timings: dict[str, float] = {}
    clf, model_dir = _load_model(model)
    if store_calibration and model_dir is None:
        raise ConfigError("store_calibration needs the model folder; fix: pass the model as a path")
    n_outputs = getattr(getattr(clf.model, "config", None), "num_labels", None)
    if n_outputs is not None and n_outputs != len(clf.label_space):
        raise ModelError(
            f"the model has {n_outputs} logits for {len(clf.label_space)} labels; fix: use a model whose "
            "classification head covers its label space (re-save it with `rationalign train`)"
        )
    suite_data = resolve_suite_data(data, split, ood)
    test = suite_data.test
    if len(test) == 0:
        raise DataError(f"{test.name}: the {split} split is empty; fix: evaluate on a non-empty split")
    _check_labels(clf, test, split)
    if suite_data.valid is not None:
        _check_labels(clf, suite_data.valid, "validation")
    labels = clf.label_space
    records: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {}
    notes = list(suite_data.notes)

    # 1. clean
    t0 = time.perf_counter()
    test_logits = clf.logits(test.texts, batch_size).numpy().astype(np.float64)
    gold = np.array(test.label_ids(labels))
    predicted = test_logits.argmax(1)
    report = classification_report(gold, predicted, labels.names)
    metrics["clean"] = {
        "accuracy": report.accuracy,
        "macro_f1": report.macro_f1,
        "n_examples": report.n_examples,
        "most_confused": [p.to_dict() for p in report.most_confused],
    }
    timings["clean_seconds"] = time.perf_counter() - t0

    # 4. calibration (before the rest: the fitted temperature is used by the OOS threshold)
    t0 = time.perf_counter()
    temperature = float(clf.temperature)
    valid_logits = valid_gold = None
    if suite_data.valid is not None:
        valid_logits = clf.logits(suite_data.valid.texts, batch_size).numpy().astype(np.float64)
        valid_gold = np.array(suite_data.valid.label_ids(labels))
    calibration: dict[str, Any] = {
        "model_temperature": float(clf.temperature),
        "before": calibration_report(softmax(test_logits, axis=1), gold).to_dict(),
    }
    if calibrate:
        if valid_logits is None:
            notes.append("no validation split: temperature scaling skipped")
            calibration["after"] = None
        else:
            fit = fit_temperature_report(valid_logits, valid_gold)
            temperature = fit.temperature
            calibration.update(
                temperature=fit.temperature,
                fitted_on=suite_data.valid.name,
                fit=fit.to_dict(),
                after=calibration_report(softmax(test_logits / temperature, axis=1), gold).to_dict(),
            )
    metrics["calibration"] = calibration
    timings["calibration_seconds"] = time.perf_counter() - t0
    test_probs = softmax(test_logits / temperature, axis=1)
    for i, example in enumerate(test):
        records.append(
            {
                "kind": "clean",
                "index": i,
                "text": example.text,
                "label": example.label,
                "predicted": labels.name(int(predicted[i])),
                "probability": float(test_probs[i, predicted[i]]),
                "correct": bool(predicted[i] == gold[i]),
            }
        )

    # 5. out of scope
    threshold = None
    if suite_data.oos_test is not None and suite_data.oos_valid is not None:
        t0 = time.perf_counter()
        metrics["ood"], threshold = _ood(
            clf, suite_data, test_logits, gold, valid_logits, temperature, batch_size, target_tpr, records
        )
        timings["ood_seconds"] = time.perf_counter() - t0

    # 2. adversarial
    if attack_set is not None:
        t0 = time.perf_counter()
        attack = attack_set if isinstance(attack_set, AttackSet) else AttackSet.load(attack_set)
        metrics["adversarial"] = _adversarial(clf, attack, batch_size, records)
        metrics["adversarial"]["clean_accuracy_full_split"] = report.accuracy
        timings["adversarial_seconds"] = time.perf_counter() - t0

    # 3. explanations on the first `limit` utterances
    n_explained = len(test) if limit is None else min(limit, len(test))
    subset = list(range(n_explained))
    texts = [test[i].text for i in subset]
    targets = [int(predicted[i]) for i in subset]
    attributor = _attributor(clf, attribution, batch_size, ig_steps)

    def predict_raw(batch: list[str]) -> np.ndarray:  # temperature 1: explanation metrics see the weights
        return torch.softmax(clf.logits(batch, batch_size).float(), dim=-1).numpy()

    t0 = time.perf_counter()
    explained = attributor.attribute(texts, targets)
    timings["attribution_seconds"] = time.perf_counter() - t0
    keep = [j for j, a in enumerate(explained) if len(a.words) > 0]
    if len(keep) < len(explained):
        notes.append(
            f"{len(explained) - len(keep)} utterances without words were left out of explanation metrics"
        )
    explained_kept = [explained[j] for j in keep]
    targets_kept = [targets[j] for j in keep]
    t0 = time.perf_counter()
    faith = evaluate_faithfulness(
        predict_raw,
        explained_kept,
        targets_kept,
        faithfulness or FaithfulnessConfig(seed=seed, batch_size=256),
    )
    timings["faithfulness_seconds"] = time.perf_counter() - t0
    metrics["faithfulness"] = {
        "attribution": attribution,
        "target": "predicted",
        **faith.summary.to_dict(),
        "config": faith.config.to_dict(),
        "n_model_texts": faith.n_model_texts,
    }
    timings["faithfulness_per_100_seconds"] = (
        100.0
        * (timings["attribution_seconds"] + timings["faithfulness_seconds"])
        / max(len(explained_kept), 1)
    )
    t0 = time.perf_counter()
    counter = evaluate_counterfactual(predict_raw, explained_kept, batch_size=256)
    metrics["counterfactual"] = {
        "n_examples": counter.n_examples,
        "removal_pass_rate": counter.removal_pass_rate,
        "rationale_only_pass_rate": counter.rationale_only_pass_rate,
        "both_pass_rate": counter.both_pass_rate,
    }
    timings["counterfactual_seconds"] = time.perf_counter() - t0
    for j, a, f, c in zip(keep, explained_kept, faith.examples, counter.examples, strict=True):
        records[j].update(
            rationale=[w for w, _ in a.top(3)],
            aopc_comprehensiveness=f.aopc_comprehensiveness,
            aopc_sufficiency=f.aopc_sufficiency,
            soft_comprehensiveness=_finite(f.soft_comprehensiveness),
            soft_sufficiency=_finite(f.soft_sufficiency),
            removal_changes_prediction=c.removal_changes_prediction,
            rationale_only_keeps_prediction=c.rationale_only_keeps_prediction,
        )

    if stability:
        t0 = time.perf_counter()
        synonym_fn = synonym
        if synonym_fn is None:
            from rationalign.evaluation.adversarial import wordnet_synonym_fn

            synonym_fn = wordnet_synonym_fn(missing_ok=True)
            if synonym_fn is None:
                notes.append("WordNet not installed: the synonym stability perturbation was skipped")
        report_stability = evaluate_stability(
            attributor.attribute, [texts[j] for j in keep], targets_kept, synonym=synonym_fn, seed=seed
        )
        metrics["stability"] = {s.perturbation: s.to_dict() for s in report_stability.summaries}
        timings["stability_seconds"] = time.perf_counter() - t0

    if teacher_priors is not None:
        t0 = time.perf_counter()
        metrics["fidelity"] = _fidelity(attributor, teacher_priors, prior_method, test, subset, gold, records)
        timings["fidelity_seconds"] = time.perf_counter() - t0

    # store the calibration in the model folder (only after everything above succeeded)
    if store_calibration and model_dir is not None:
        clf.temperature = temperature
        if threshold is not None:
            clf.abstain_threshold = threshold
        clf.save_meta(model_dir)
        metrics["calibration"]["stored_in"] = str(model_dir)

    timings["total_seconds"] = time.perf_counter() - started
    model_info = {
        "path": str(model_dir) if model_dir is not None else None,
        "base_model": clf.meta.get("base_model"),
        "labels": len(labels),
        "parameters": clf.num_parameters(),
        "pooling": getattr(clf, "pooling", None),
    }
    data_info = {
        "name": suite_data.name,
        "split": split,
        "n_examples": len(test),
        "n_explained": len(explained_kept),
        "valid": suite_data.valid.name if suite_data.valid is not None else None,
        "oos": suite_data.oos_test is not None,
        "notes": notes,
    }
    config = {
        "attribution": attribution,
        "calibrate": calibrate,
        "store_calibration": store_calibration,
        "limit": limit,
        "seed": seed,
        "ig_steps": ig_steps if attribution == "ig" else None,
        "target_tpr": target_tpr,
        "attack_set": str(attack_set) if isinstance(attack_set, str | Path) else None,
        "teacher_priors": str(teacher_priors) if isinstance(teacher_priors, str | Path) else None,
    }
    return SuiteResult(model_info, split, data_info, config, _clean(metrics), timings, records)


def _ood(
    clf: Any,
    data: SuiteData,
    test_logits: np.ndarray,
    gold: np.ndarray,
    valid_logits: np.ndarray | None,
    temperature: float,
    batch_size: int,
    target_tpr: float,
    records: list[dict[str, Any]],
) -> tuple[dict[str, Any], float | None]:
    assert data.oos_valid is not None and data.oos_test is not None
    oos_test_logits = clf.logits(data.oos_test.texts, batch_size).numpy().astype(np.float64)
    out: dict[str, Any] = {
        "n_in_scope": int(test_logits.shape[0]),
        "n_out_of_scope": int(oos_test_logits.shape[0]),
    }
    for method in ("msp", "energy"):
        t = temperature if method == "msp" else 1.0
        report = evaluate_ood(
            in_scope_scores(test_logits, method, t), in_scope_scores(oos_test_logits, method, t), method
        )
        out[method] = report.to_dict()
    threshold = None
    if valid_logits is None:
        out["abstain"] = None
        return out, None
    oos_valid_logits = clf.logits(data.oos_valid.texts, batch_size).numpy().astype(np.float64)
    chosen = choose_abstain_threshold(
        in_scope_scores(valid_logits, "msp", temperature),
        in_scope_scores(oos_valid_logits, "msp", temperature),
        target_tpr,
    )
    threshold = chosen.threshold
    in_msp = in_scope_scores(test_logits, "msp", temperature)
    oos_msp = in_scope_scores(oos_test_logits, "msp", temperature)
    answered = in_msp >= threshold
    correct = test_logits.argmax(1) == gold
    rejected_oos = oos_msp < threshold
    n_total = in_msp.size + oos_msp.size
    out["abstain"] = {
        "score": "msp",
        "temperature": temperature,
        "chosen_on": "valid + oos_valid",
        **chosen.to_dict(),
        "test_in_scope_answered": float(answered.mean()),
        "test_in_scope_accuracy_with_abstain": float((answered & correct).mean()),
        "test_oos_recall": float(rejected_oos.mean()),
        "test_overall_accuracy": float(((answered & correct).sum() + rejected_oos.sum()) / n_total),
    }
    for text, score, rejected in zip(data.oos_test.texts, oos_msp, rejected_oos, strict=True):
        records.append(
            {"kind": "oos", "text": text, "label": "oos", "msp": float(score), "abstained": bool(rejected)}
        )
    return out, threshold


def _fidelity(
    attributor: Any,
    teacher_priors: Any,
    prior_method: str | None,
    test: IntentDataset,
    subset: Sequence[int],
    gold: np.ndarray,
    records: list[dict[str, Any]],
) -> dict[str, Any]:
    from rationalign.attribution.base import WordAttribution

    if isinstance(teacher_priors, Sequence) and not isinstance(teacher_priors, str):
        items = list(teacher_priors)
        if not all(isinstance(a, WordAttribution) for a in items):
            raise ConfigError(
                "teacher_priors as a list must hold WordAttribution objects, one per explained utterance"
            )
        if len(items) < len(subset):
            raise DataError(
                f"{len(items)} teacher priors for {len(subset)} explained utterances; fix: give one prior per "
                "utterance, in split order, or a PriorStore"
            )
        found = {i: items[k] for k, i in enumerate(subset)}
    else:
        table = load_teacher_priors(teacher_priors, method=prior_method)
        by_text: dict[str, list[Any]] = {}
        for (text, _), a in table.items():
            by_text.setdefault(text, []).append(a)
        found = {}
        for i in subset:
            text = test[i].text
            prior = table.get((text, int(gold[i])))
            if prior is None and len(by_text.get(text, [])) == 1:
                prior = by_text[text][0]
            if prior is not None:
                found[i] = prior
    usable = [
        i
        for i in subset
        if i in found and list(found[i].words) and len(found[i].words) == len(found[i].scores)
    ]
    if not usable:
        raise DataError(
            "no teacher prior matches the evaluated utterances; fix: compute priors for this split "
            "(same texts) or drop --priors"
        )
    student = attributor.attribute([test[i].text for i in usable], [int(found[i].target) for i in usable])
    pairs = [
        (s, found[i]) for s, i in zip(student, usable, strict=True) if list(s.words) == list(found[i].words)
    ]
    mismatched = len(usable) - len(pairs)
    report = evaluate_fidelity([s for s, _ in pairs], [t for _, t in pairs])
    kept_index = [i for s, i in zip(student, usable, strict=True) if list(s.words) == list(found[i].words)]
    for i, r in zip(kept_index, report.examples, strict=True):
        records[i]["fidelity_spearman"] = _finite(r.spearman)
        records[i]["fidelity_top_k_iou"] = _finite(r.top_k_iou)
    return {
        **report.summary.to_dict(),
        "n_without_prior": len(subset) - len(usable),
        "n_word_mismatch": mismatched,
        "prior_method": sorted({found[i].method for i in usable}),
    }
