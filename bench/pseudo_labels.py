"""How right are a self-trained teacher's pseudo-labels? Checked against the transfer file's hidden gold labels.

`teacher.self_train` labels the transfer set with the current teacher and keeps what it is at least
`min_confidence` sure of. When the transfer set is a data set's own training split (`transfer: {split:
train}`), its gold labels exist but are never read by training; this script reads them, after the fact, to
say how good the pseudo-labels were. It never chooses anything: the threshold rows are for reading only
(a user without gold labels chooses `min_confidence` on validation).

For each teacher of the run (the base teacher, then each finished self-training round) it reports the
argmax accuracy on the whole transfer set, and for the base teacher the share kept and the accuracy of the
kept texts at several thresholds. For each finished round it reports what `pseudo_labels.jsonl` holds:
kept, labels covered, and the accuracy of the kept labels. The teachers' probabilities come from the
transfer store when the distillation cached them (nothing is recomputed then). Pass the same config and
`--set` overrides as the `bench/distill_grid.py` run:

    .venv/bin/python bench/pseudo_labels.py --config examples/distill/clinc150_5shot.yaml --set \
        transfer.split=train transfer.store=runs/priors/clinc150-5shot.sqlite \
        teacher.self_train.min_confidence=0.9 teacher.self_train.epochs=2
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, command_line, load_jsonl, machine_info, write_results
from distill_grid import dataset_and_setting
from rationalign.config import apply_overrides, build, load_yaml
from rationalign.data.io import load_data
from rationalign.data.transfer import load_transfer_set
from rationalign.data.validate import normalise_for_match
from rationalign.errors import ConfigError
from rationalign.pipeline import (
    DistillRunConfig,
    _teacher,
    _transfer_soft_labels,
    self_train_round_dirs,
)
from rationalign.teachers.self_training import PSEUDO_LABELS


def gold_labels(texts: list[str], source: Path) -> tuple[dict[str, str], int]:
    """The source file's gold label by normalised text, and how many of ``texts`` it labels inconsistently
    (those count as the first label seen)."""
    source_texts, source_labels = load_jsonl(source)
    seen: dict[str, set[str]] = {}
    first: dict[str, str] = {}
    for text, label in zip(source_texts, source_labels, strict=True):
        key = normalise_for_match(text)
        seen.setdefault(key, set()).add(label)
        first.setdefault(key, label)
    conflicting = sum(len(seen.get(normalise_for_match(t), ())) > 1 for t in texts)
    return first, conflicting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", nargs="*", default=[], help="config overrides, a.b=value")
    parser.add_argument("--thresholds", nargs="+", type=float, default=[0.5, 0.7, 0.8, 0.9, 0.95, 0.99])
    args = parser.parse_args()
    cfg = build(DistillRunConfig, apply_overrides(load_yaml(args.config), args.set), args.config)
    if cfg.transfer is None or cfg.teacher.self_train is None:
        raise ConfigError(
            "pseudo_labels: the config needs a transfer set and teacher.self_train; fix: --set them"
        )
    bundle = load_data(cfg.data)
    transfer = load_transfer_set(cfg.transfer, bundle, cfg.data.path)
    gold_by_text, conflicting = gold_labels(transfer.texts, transfer.source)
    gold = [gold_by_text.get(normalise_for_match(t)) for t in transfer.texts]
    known = np.array([g is not None for g in gold])
    if not known.any():
        raise ConfigError(
            f"pseudo_labels: {transfer.source} has no labels for the transfer texts; fix: use a labelled file"
        )
    names = bundle.label_space.names
    gold_ids = np.array([names.index(g) if g in names else -1 for g in gold])

    run_dir = Path(cfg.output_dir)
    dataset, setting = dataset_and_setting(cfg.model_dump(mode="json"))
    setting += (
        f", transfer set {len(transfer.texts)} texts, min_confidence {cfg.teacher.self_train.min_confidence}"
    )
    machine, cmd, today = machine_info(), command_line(), date.today().isoformat()
    rows: list[Row] = []

    def add(method: str, metric: str, value: float) -> None:
        rows.append(
            Row(dataset, setting, method, metric, round(float(value), 2), 0.0, 1, cmd, today, machine)
        )
        print(f"{method:28s} {metric:36s} {value:10.2f}", flush=True)

    from rationalign.teachers.classifier import ClassifierTeacher

    teachers = [("base teacher", _teacher(cfg, bundle, run_dir))]
    rounds = [d for d in self_train_round_dirs(cfg, transfer, run_dir) if (d / "model").is_dir()]
    for number, folder in enumerate(rounds, start=1):
        teachers.append(
            (
                f"self-trained round {number}",
                ClassifierTeacher(folder / "model", precision=cfg.teacher.precision),
            )
        )
    for index, (method, teacher) in enumerate(teachers):
        probs = _transfer_soft_labels(cfg, teacher, transfer, run_dir)
        predicted, confidence = probs.argmax(1), probs.max(1)
        right = (predicted == gold_ids)[known]
        add(method, "transfer accuracy (all texts)", 100 * right.mean())
        if index == 0:
            for threshold in args.thresholds:
                keep = (confidence >= threshold)[known]
                add(method, f"kept % at confidence >= {threshold}", 100 * keep.mean())
                add(
                    method,
                    f"kept accuracy at confidence >= {threshold}",
                    100 * right[keep].mean() if keep.any() else 0,
                )
        if index < len(rounds):  # this teacher labelled round index + 1: what did that round keep?
            folder = rounds[index]
            kept = [
                json.loads(line) for line in (folder / PSEUDO_LABELS).read_text(encoding="utf-8").splitlines()
            ]
            checked = [
                row["label"] == gold_by_text[key]
                for row in kept
                if (key := normalise_for_match(row["text"])) in gold_by_text
            ]
            per_label = Counter(row["label"] for row in kept)
            label = f"round {index + 1} pseudo-labels"
            add(label, "kept", len(kept))
            add(label, "kept %", 100 * len(kept) / len(transfer.texts))
            add(label, "labels covered", len(per_label))
            add(label, "kept accuracy", 100 * float(np.mean(checked)))
    add("transfer set", "texts without a gold label", int((~known).sum()))
    add("transfer set", "texts with conflicting gold labels", conflicting)
    write_results("pseudo_labels", rows)


if __name__ == "__main__":
    main()
