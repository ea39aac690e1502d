"""Robustness of the results table's students under a harder keyword-substitution attack.

The suite's default attack set keeps ONE candidate per utterance and generator: the most similar
(most meaning-preserving) one, which is also the mildest. Here each utterance keeps up to k valid
candidates (``rationalign attack --n-per-example k``) and a model counts as right on an utterance only
when it is right on the original and on every variant ("worst case", the accuracy under a search over
the same fixed candidate set for every model). Models: the students ``bench/distill_grid.py`` trained
(read from their run folders, nothing is retrained) and the two cheap baselines (TF-IDF + LR, frozen
MiniLM embeddings + LR, C chosen on validation) fitted on the same training split.

    .venv/bin/rationalign attack banking77 --n-per-example 8 --out runs/attacks/banking77-test-k8.jsonl
    .venv/bin/python bench/robustness.py --configs examples/distill/banking77_10shot.yaml --seeds 0 1 2

Several ``--attack`` sets are merged, e.g. the one above with two-word synonym swaps
(``rationalign attack banking77 --generators synonym --swaps 2 --n-per-example 8 --out
runs/attacks/banking77-test-k8-x2.jsonl``), so the worst case runs over every variant of both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, Row, command_line, format_cell, machine_info, read_results, write_results
from baselines import DEFAULT_GRID, MiniLMEmbedder, Split, features, fit_and_select
from distill_grid import VARIANTS, dataset_and_setting, run_directory
from rationalign.config import load_yaml
from rationalign.data.io import DataConfig, load_data
from rationalign.evaluation.adversarial import AttackSet
from rationalign.evaluation.suite import attack_metrics, attack_predictions
from rationalign.models.classifier import IntentClassifier

BASELINES = ("tfidf+lr", "minilm-l6 frozen+lr")
METRICS = {  # row metric -> (group of attack_metrics, field)
    "clean_accuracy_same_sources": ("worst_case", "clean_accuracy_same_sources"),
    "adversarial_accuracy": ("all", "accuracy"),
    "adversarial_accuracy_synonym": ("synonym", "accuracy"),
    "adversarial_accuracy_confusable": ("confusable", "accuracy"),
    "adversarial_accuracy_synonym_x2": ("synonym_x2", "accuracy"),
    "worst_case_accuracy": ("worst_case", "accuracy"),
    "worst_case_drop": ("worst_case", "drop"),
}


def _ids(label_space, labels) -> np.ndarray:
    return np.asarray(label_space.ids(list(labels)), dtype=np.int64)


def score(attack: AttackSet, predict, label_space) -> dict[str, float]:
    """``predict(texts) -> label ids``; the table's numbers (percent) for one model."""
    gold, clean, adv_pred = attack_predictions(attack, predict, label_space)
    metrics = attack_metrics(attack, gold, clean, adv_pred, len(label_space))
    out = {}
    for name, (group, field) in METRICS.items():
        value = (metrics.get(group) or {}).get(field)
        if value is not None:
            out[name] = 100 * value
    return out


def student_predictor(model_dir: Path):
    clf = IntentClassifier.load(model_dir)
    return lambda texts: clf.logits(texts, 128).argmax(-1).numpy(), clf.label_space


def baseline_predictor(method: str, bundle, embedder: MiniLMEmbedder | None, attack_texts: list[str]):
    """Fit the baseline on the config's training split (C on validation) and return its predictor."""
    train = Split(bundle.train.texts, bundle.train.labels)
    valid = Split(bundle.valid.texts, bundle.valid.labels)
    vectors = None
    if method != "tfidf+lr":
        assert embedder is not None
        distinct = sorted(set(train.texts) | set(valid.texts) | set(attack_texts))
        vectors = dict(zip(distinct, embedder.embed(distinct), strict=True))
    space = bundle.label_space
    train_x, (valid_x,) = features(method, train, [valid], vectors)
    model, _, _, _ = fit_and_select(
        train_x, _ids(space, train.labels), valid_x, _ids(space, valid.labels), DEFAULT_GRID
    )

    def predict(texts: list[str]) -> np.ndarray:
        _, (x,) = features(method, train, [Split(list(texts), [])], vectors)
        return np.asarray(model.predict(x), dtype=np.int64)

    return predict


TITLES = {
    "clean_accuracy_same_sources": "clean, same utterances",
    "adversarial_accuracy": "adversarial, all variants",
    "adversarial_accuracy_synonym": "synonym variants",
    "adversarial_accuracy_confusable": "confusable variants",
    "adversarial_accuracy_synonym_x2": "2-word synonym variants",
    "worst_case_accuracy": "**worst case**",
    "worst_case_drop": "worst-case drop",
}
BASELINE_NAMES = {
    "tfidf+lr": "*TF-IDF + LR (cheap baseline)*",
    "minilm-l6 frozen+lr": "*frozen MiniLM + LR (cheap baseline)*",
}


def markdown() -> None:
    """BENCHMARKS.md's tables: one per (dataset, setting), baselines first, then VARIANTS order."""
    rows = [Row(**r) for r in read_results("robustness")]
    cells = {(r.dataset, r.setting, r.method, r.metric): r for r in rows}
    for dataset, setting in dict.fromkeys((r.dataset, r.setting) for r in rows):
        metrics = [m for m in TITLES if any(k[:2] == (dataset, setting) and k[3] == m for k in cells)]
        methods = [m for m in (*BASELINES, *VARIANTS) if (dataset, setting, m, metrics[0]) in cells]
        seeds = max(cells[(dataset, setting, m, metrics[0])].n_seeds for m in methods)
        print(f"**{dataset}, {setting}** (students: mean ± std over {seeds} seeds)\n")
        print("| model | " + " | ".join(TITLES[m] for m in metrics) + " |")
        print("|---|" + "---:|" * len(metrics))
        for method in methods:
            values = []
            for metric in metrics:
                row = cells.get((dataset, setting, method, metric))
                values.append("-" if row is None else format_cell(row.value, row.std, row.n_seeds, 2))
            n = cells[(dataset, setting, method, metrics[0])].n_seeds
            name = BASELINE_NAMES.get(method) or method + (f" ({n} seed)" if n < seeds else "")
            print(f"| {name} | " + " | ".join(values) + " |")
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print BENCHMARKS.md's tables and exit")
    parser.add_argument("--configs", nargs="+")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--attack",
        nargs="+",
        default=["runs/attacks/{dataset}-test-k8.jsonl"],
        help="attack-set path templates; several are merged (worst case over all their variants)",
    )
    parser.add_argument("--no-baselines", action="store_true")
    args = parser.parse_args()
    if args.markdown:
        markdown()
        return
    if not args.configs:
        parser.error("--configs is required (or --markdown)")
    machine = machine_info()
    command = command_line()
    for config_path in args.configs:
        base = load_yaml(config_path)
        dataset, setting = dataset_and_setting(base)
        attack = AttackSet.merge(
            [AttackSet.load(REPO_ROOT / template.format(dataset=dataset)) for template in args.attack]
        )
        per_source = len(attack.examples) / len({(e.original, e.label) for e in attack.examples})
        row_setting = f"{setting}, attack k={attack.n_per_example}"
        multi_word = sorted(
            {str(g["config"]["swaps"]) for g in attack.generators if g["config"].get("swaps", 1) > 1}
        )
        if multi_word:  # e.g. "10-shot, attack k=8, + 2-word swaps"
            row_setting += ", + " + "/".join(multi_word) + "-word swaps"
        print(
            f"{dataset} {setting}: {len(attack.examples)} variants of "
            f"{len({e.original for e in attack.examples})} utterances ({per_source:.2f} each)",
            flush=True,
        )
        bundle = load_data(DataConfig(path=dataset, train_split=base["data"].get("train_split", "train")))
        models: dict[str, list] = {}
        if not args.no_baselines:
            embedder = MiniLMEmbedder()
            texts = [e.text for e in attack.examples] + [e.original for e in attack.examples]
            for method in BASELINES:
                models[method] = [
                    (0, baseline_predictor(method, bundle, embedder, texts), bundle.label_space)
                ]
        for variant in args.variants:
            found = []
            for seed in args.seeds:
                model_dir = run_directory(dataset, setting, variant, seed) / "model"
                if (model_dir / "rationalign.json").is_file():
                    found.append((seed, *student_predictor(model_dir)))
            if found:
                models[variant] = found
        rows = []
        for method, runs in models.items():
            start = time.perf_counter()
            per_seed = [score(attack, predict, space) for _, predict, space in runs]
            seeds = [seed for seed, _, _ in runs]
            print(method, seeds, per_seed, f"{time.perf_counter() - start:.0f}s", flush=True)
            for metric in per_seed[0]:
                values = [r[metric] for r in per_seed]
                rows.append(
                    Row(
                        dataset,
                        row_setting,
                        method,
                        metric,
                        round(statistics.mean(values), 3),
                        round(statistics.stdev(values), 3) if len(values) > 1 else 0.0,
                        len(values),
                        command,
                        date.today().isoformat(),
                        machine,
                    )
                )
        write_results("robustness", rows)


if __name__ == "__main__":
    main()
