"""One training run end to end: data -> student -> training -> test evaluation -> manifest + model card."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from rationalign import __version__
from rationalign.config import dump_yaml
from rationalign.data.fingerprint import fingerprint_splits
from rationalign.data.io import DataBundle, DataConfig, load_data, load_dataset
from rationalign.data.types import Example, IntentDataset, LabelSpace
from rationalign.errors import ConfigError, DataError, located
from rationalign.evaluation.metrics import ClassificationReport, classification_report
from rationalign.files import atomic_write_text
from rationalign.models.classifier import IntentClassifier
from rationalign.training.config import TrainConfig
from rationalign.training.trainer import Trainer, TrainResult

MANIFEST = "manifest.json"
CONFIG_FILE = "config.yaml"


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: DataConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    extra_data: list[str] = Field(
        default_factory=list, description="reviewed divergence queues (JSONL) added to the training split"
    )
    pseudo_labelled: list[str] = Field(
        default_factory=list,
        description="machine-labelled examples (JSONL/CSV with text and label, e.g. a self-training round's "
        "pseudo_labels.jsonl) added to the training split",
    )
    output_dir: str = Field("runs/latest", description="run directory (manifest, checkpoints, model)")


@dataclass
class RunResult:
    run_dir: Path
    model_dir: Path
    train: TrainResult
    test: ClassificationReport | None
    manifest: dict[str, Any]


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def new_classifier(tc: TrainConfig, label_space: LabelSpace) -> IntentClassifier:
    """The untrained classifier a training config describes (backbone, pooling, layers, seed)."""
    return IntentClassifier.from_base(
        tc.model,
        label_space,
        pooling=tc.pooling,
        num_layers=tc.num_layers,
        max_length=tc.max_length,
        seed=tc.seed,
    )


def add_extra_data(bundle: DataBundle, paths: list[str], pseudo_labelled: list[str] = ()) -> DataBundle:
    """Append reviewed divergence-queue items and machine-labelled examples to the training split (the
    fingerprint covers them). A label outside the label space is an error naming the file and line."""
    if not paths and not pseudo_labelled:
        return bundle
    from rationalign.evaluation.divergence import load_reviewed_queue

    reviewed = [e for p in paths for e in load_reviewed_queue(p, bundle.label_space).examples]
    pseudo = [e for p in pseudo_labelled for e in _labelled_file(p, bundle.label_space)]
    train = IntentDataset(bundle.train.examples + reviewed + pseudo, bundle.train.name, bundle.train.path)
    splits = {"train": train, "valid": bundle.valid, "test": bundle.test}
    notes = list(bundle.notes)
    if paths:
        notes.append(f"{len(reviewed)} reviewed examples added from {', '.join(paths)}")
    if pseudo_labelled:
        notes.append(f"{len(pseudo)} pseudo-labelled examples added from {', '.join(pseudo_labelled)}")
    return replace(bundle, train=train, fingerprint=fingerprint_splits(splits), notes=notes)


def _labelled_file(path: str, label_space: LabelSpace) -> list[Example]:
    examples = load_dataset(path).examples
    for example in examples:
        if example.label not in label_space:
            problem = f"label {example.label!r} is not in the label space"
            raise DataError(located(path, example.line, problem, "use an existing label"))
    return examples


def evaluate_classifier(
    clf: IntentClassifier, ds: IntentDataset, batch_size: int = 128
) -> ClassificationReport:
    missing = sorted({y for y in ds.labels if y not in clf.label_space})
    if missing:
        raise ConfigError(
            f"{ds.path or ds.name}: {len(missing)} labels the model does not know (e.g. {missing[0]!r}); "
            "fix: evaluate on data with the model's label space"
        )
    preds = clf.logits(ds.texts, batch_size).argmax(-1).numpy()
    return classification_report(ds.label_ids(clf.label_space), preds, clf.label_space.names)


def model_card(cfg: RunConfig, manifest: dict[str, Any]) -> str:
    metrics = manifest.get("metrics", {})
    rows = "\n".join(
        f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()
    )
    return f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [rationalign, intent-classification]
---
# rationalign intent classifier

Fine-tuned from `{cfg.train.model}` ({manifest["model"]["parameters"]:,} parameters, pooling
`{manifest["model"]["pooling"]}`) on `{cfg.data.path}` (train split `{cfg.data.train_split}`,
{manifest["data"]["train_examples"]} examples, {manifest["data"]["labels"]} labels,
fingerprint `{manifest["data"]["fingerprint"][:16]}`).

## Metrics
| metric | value |
|---|---|
{rows}

## Load
```python
from rationalign.models.classifier import IntentClassifier
clf = IntentClassifier.load("this/folder")
# or, with transformers only (mean pooling ships its class in modeling_rationalign.py):
from transformers import AutoModelForSequenceClassification
model = AutoModelForSequenceClassification.from_pretrained("this/folder", trust_remote_code=True)
```

## Training config
```yaml
{dump_yaml(cfg).strip()}
```
Produced by rationalign {__version__}, commit `{manifest.get("git_commit") or "unknown"}`.
"""


def train_run(cfg: RunConfig, resume: bool = False, progress: bool = True) -> RunResult:
    run_dir = Path(cfg.output_dir)
    config_text = dump_yaml(cfg)
    if resume and (run_dir / CONFIG_FILE).is_file():
        previous = (run_dir / CONFIG_FILE).read_text(encoding="utf-8")
        if previous != config_text:
            raise ConfigError(
                f"{run_dir / CONFIG_FILE}: --resume with a different config; fix: resume with the same "
                "config, or train into a new --out folder"
            )
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    bundle = add_extra_data(load_data(cfg.data), cfg.extra_data, cfg.pseudo_labelled)
    tc = cfg.train
    clf = new_classifier(tc, bundle.label_space)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(config_text, encoding="utf-8")
    result = Trainer(clf, bundle.train, bundle.valid, tc, run_dir, progress=progress).fit(resume=resume)
    test = evaluate_classifier(clf, bundle.test, tc.eval_batch_size) if bundle.test is not None else None
    metrics: dict[str, Any] = {
        "best_valid_accuracy": result.best_valid_accuracy,
        "best_epoch": result.best_epoch,
    }
    if test is not None:
        metrics.update(test_accuracy=test.accuracy, test_macro_f1=test.macro_f1)
    metrics["train_seconds"] = result.wall_seconds  # every resumed part summed; wall_seconds is this call's
    metrics["train_examples_per_second"] = result.train_examples_per_second
    manifest = {
        "kind": "train",
        "rationalign_version": __version__,
        "git_commit": git_commit(),
        "started_at": started_at,
        "wall_seconds": time.perf_counter() - t0,
        "config": cfg.model_dump(mode="json"),
        "data": {
            "path": str(cfg.data.path),
            "fingerprint": bundle.fingerprint,
            "train_examples": len(bundle.train),
            "valid_examples": len(bundle.valid) if bundle.valid is not None else 0,
            "test_examples": len(bundle.test) if bundle.test is not None else 0,
            "labels": len(bundle.label_space),
            "warnings": list(bundle.report.warnings),
            "notes": list(getattr(bundle, "notes", [])),
        },
        "model": {
            "base": tc.model,
            "base_hash": clf.base_model_hash(),
            "parameters": clf.num_parameters(),
            "pooling": clf.pooling,
            "weights_sha256": clf.weights_fingerprint(),
            "dir": str(result.model_dir),
        },
        "training": {k: v for k, v in asdict(result).items() if k not in {"model_dir", "history"}},
        "history": [asdict(h) for h in result.history],
        "metrics": metrics,
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "threads": torch.get_num_threads(),
        },
    }
    if test is not None:
        (run_dir / "test_metrics.json").write_text(
            json.dumps(test.to_dict(), indent=1) + "\n", encoding="utf-8"
        )
    clf.meta.update(dataset_fingerprint=bundle.fingerprint, train_config=cfg.train.model_dump(mode="json"))
    clf.save(result.model_dir, card=model_card(cfg, manifest))
    atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=1, default=str) + "\n")
    return RunResult(run_dir, result.model_dir, result, test, manifest)
