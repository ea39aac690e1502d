"""Cheap baselines every accuracy table needs: TF-IDF + LR and frozen MiniLM + LR.

For each dataset and setting (full train, k-shot) this trains a logistic regression on the train split,
chooses its regularisation C on the validation split only, and reports test accuracy and macro-F1 (percent).

Few-shot variance: seed 0 uses the shipped ``train_<k>.jsonl``; seeds 1, 2, ... resample k examples per
label from the full train split with ``rationalign.data.sample_k_shot``. Full-data runs are deterministic
(lbfgs), so they run once (std 0). C is chosen per run from DEFAULT_GRID on validation accuracy.

MiniLM embeddings (mean pooling over non-pad tokens, then L2-normalised, as sentence-transformers does for
all-MiniLM-L6-v2) are computed once per dataset for every distinct text and cached under ``bench/.cache/``.

    .venv/bin/python bench/baselines.py --datasets banking77 hwu64 clinc150 --settings full 10-shot 5-shot
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from threadpoolctl import threadpool_limits

from _common import (
    CACHE_DIR,
    Row,
    atomic_write_text,
    command_line,
    datasets_root,
    load_jsonl,
    machine_info,
    markdown_table,
    matmul_peak_gflops,
    read_results,
    write_results,
)
from rationalign.data.fewshot import sample_k_shot
from rationalign.data.types import IntentDataset
from rationalign.errors import RationalignError
from rationalign.models.resolver import resolve_model, weights_hash

RESULTS_NAME = "baselines"
METHODS = ("tfidf+lr", "minilm-frozen+lr")
EMBED_METHOD = "minilm-l6 embedding"  # the throughput row
DEFAULT_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
SETTING_RE = re.compile(r"^(?:full|(\d+)-shot)$")


@dataclass
class Split:
    texts: list[str]
    labels: list[str]


@dataclass
class RunResult:
    seed: int
    accuracy: float
    macro_f1: float
    chosen_c: float
    validation_accuracy: float
    fit_seconds: float
    converged: bool


def shots(setting: str) -> int | None:
    """``full`` -> None, ``10-shot`` -> 10."""
    match = SETTING_RE.match(setting)
    if match is None:
        raise RationalignError(
            f"--settings {setting}: unknown setting; fix: use full or <k>-shot, e.g. 10-shot"
        )
    return int(match.group(1)) if match.group(1) else None


def load_split(dataset: str, split: str) -> Split:
    texts, labels = load_jsonl(datasets_root() / dataset / f"{split}.jsonl")
    return Split(texts, labels)


def sample_k_per_label(full: Split, k: int, seed: int) -> Split:
    """k examples per label from ``full`` with the library's sampler, so every benchmark that resamples
    with the same (k, seed) trains on the same examples (and the 5-shot sample is inside the 10-shot one)."""
    sample = sample_k_shot(IntentDataset.from_pairs(zip(full.texts, full.labels, strict=True)), k, seed)
    return Split(sample.texts, sample.labels)


def train_sets(dataset: str, setting: str, seeds: Sequence[int], full: Split) -> list[tuple[int, Split]]:
    k = shots(setting)
    if k is None:
        return [(0, full)]
    out = []
    for seed in seeds:
        if seed == 0:  # the shipped, fixed few-shot file: comparable with published numbers
            out.append((0, load_split(dataset, f"train_{k}")))
        else:
            out.append((seed, sample_k_per_label(full, k, seed)))
    return out


class MiniLMEmbedder:
    """Frozen sentence embeddings: mean pooling over non-pad tokens, then L2 normalisation."""

    def __init__(self, model: str = "minilm-l6", batch_size: int = 128):
        from transformers import AutoModel, AutoTokenizer

        self.folder = resolve_model(model)
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.model = AutoModel.from_pretrained(self.folder).eval()
        config = self.folder / "sentence_bert_config.json"
        # sentence-transformers truncates at max_seq_length (256 for all-MiniLM-L6-v2), not at 512.
        self.max_length = int(json.loads(config.read_text())["max_seq_length"]) if config.is_file() else 256
        self.batch_size = batch_size
        # Work done by the last embed() call, for the throughput / FLOP-rate report.
        self.last_tokens = 0
        self.last_padded_tokens = 0
        self.last_widths: list[int] = []  # padded length of every sequence

    def flops(self, widths: Sequence[int]) -> float:
        """Estimated forward FLOPs: 2 x encoder weights per token, plus attention scores and mixing."""
        encoder_weights = sum(p.numel() for p in self.model.encoder.parameters() if p.dim() == 2)
        hidden, layers = self.model.config.hidden_size, self.model.config.num_hidden_layers
        # QK^T and attention x V: 2 x (2 x seq x hidden) per token per layer.
        attention = sum(4 * width * width * hidden * layers for width in widths)
        return 2.0 * encoder_weights * sum(widths) + attention

    def fingerprint(self) -> str:
        return f"{weights_hash(self.folder)}:{self.max_length}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        # Sorting by token length keeps padding, hence wasted compute, small inside each batch.
        lengths = [
            len(ids)
            for ids in self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        ]
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(texts), self.model.config.hidden_size), dtype=np.float32)
        self.last_tokens, self.last_padded_tokens, self.last_widths = sum(lengths), 0, []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                index = order[start : start + self.batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in index],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                rows, width = batch["input_ids"].shape
                self.last_padded_tokens += rows * width
                self.last_widths.extend([width] * rows)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                out[index] = F.normalize(pooled, p=2, dim=1).numpy()
        return out


def cached_embeddings(
    dataset: str, texts: Sequence[str], embedder: MiniLMEmbedder, use_cache: bool
) -> tuple[dict[str, np.ndarray], dict]:
    """Embeddings of every distinct text, keyed by text, plus metadata (throughput, whether cached)."""
    distinct = sorted(set(texts))
    digest = hashlib.sha256()
    digest.update(embedder.fingerprint().encode())
    for text in distinct:
        digest.update(text.encode() + b"\0")
    stem = CACHE_DIR / f"minilm-l6-{dataset}-{digest.hexdigest()[:16]}"
    array_path, meta_path = stem.with_suffix(".npy"), stem.with_suffix(".json")
    if use_cache and array_path.is_file() and meta_path.is_file():
        vectors = np.load(array_path, allow_pickle=False)
        meta = json.loads(meta_path.read_text())
        if vectors.shape[0] == len(distinct):
            meta["cached"] = True
            return dict(zip(distinct, vectors, strict=True)), meta
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    vectors = embedder.embed(distinct)
    seconds = time.perf_counter() - start
    meta = {
        "n_texts": len(distinct),
        "seconds": round(seconds, 2),
        "texts_per_s": round(len(distinct) / seconds, 1),
        "tokens": embedder.last_tokens,
        "padded_tokens": embedder.last_padded_tokens,
        "est_gflop_per_s": round(embedder.flops(embedder.last_widths) / seconds / 1e9, 1),
        "matmul_peak_gflop_per_s": round(matmul_peak_gflops(), 1),
        # Other jobs share the 2 cores: the load average says how contended the timing was.
        "load_average": round(max(load_before, os.getloadavg()[0]), 1),
        "date": date.today().isoformat(),
        "machine": machine_info(),
        "cached": False,
    }
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = array_path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(array_path)
    atomic_write_text(meta_path, json.dumps(meta, indent=1) + "\n")
    return dict(zip(distinct, vectors, strict=True)), meta


def fit_and_select(
    train_x, train_y: np.ndarray, valid_x, valid_y: np.ndarray, grid: Sequence[float]
) -> tuple[LogisticRegression, float, float, bool]:
    """Fit one LR per C; keep the best on validation accuracy (ties: the smaller, more regularised C)."""
    best: tuple[float, float, LogisticRegression, bool] | None = None
    for c in sorted(grid):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model = LogisticRegression(C=c, max_iter=5000, solver="lbfgs").fit(train_x, train_y)
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        accuracy = accuracy_score(valid_y, model.predict(valid_x))
        if best is None or accuracy > best[0]:
            best = (accuracy, c, model, converged)
    assert best is not None
    return best[2], best[1], best[0], best[3]


def features(method: str, train: Split, others: Sequence[Split], vectors: dict[str, np.ndarray] | None):
    if method == "tfidf+lr":
        # Fit on this setting's train texts only: the vocabulary never sees validation or test text.
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        train_x = vectorizer.fit_transform(train.texts)
        return train_x, [vectorizer.transform(s.texts) for s in others]
    assert vectors is not None
    stack = lambda split: np.stack([vectors[t] for t in split.texts])  # noqa: E731
    return stack(train), [stack(s) for s in others]


def run_one(
    method: str, train: Split, valid: Split, test: Split, label_ids: dict[str, int], grid, vectors, seed
):
    start = time.perf_counter()
    train_x, (valid_x, test_x) = features(method, train, [valid, test], vectors)
    to_ids = lambda labels: np.array([label_ids[y] for y in labels])  # noqa: E731
    model, c, valid_accuracy, converged = fit_and_select(
        train_x, to_ids(train.labels), valid_x, to_ids(valid.labels), grid
    )
    predicted = model.predict(test_x)
    gold = to_ids(test.labels)
    return RunResult(
        seed=seed,
        accuracy=100 * accuracy_score(gold, predicted),
        macro_f1=100 * f1_score(gold, predicted, average="macro", zero_division=0),
        chosen_c=c,
        validation_accuracy=100 * valid_accuracy,
        fit_seconds=time.perf_counter() - start,
        converged=converged,
    )


def row_command(dataset: str, setting: str, seeds: Sequence[int], method: str, grid: Sequence[float]) -> str:
    argv = [__file__, "--datasets", dataset, "--settings", setting, "--methods", method]
    if shots(setting) is not None:
        argv += ["--seeds", *map(str, seeds)]
    if list(grid) != list(DEFAULT_GRID):
        argv += ["--grid", *map(str, grid)]
    return command_line(argv)


def summarise(runs: list[RunResult], field: str) -> tuple[float, float]:
    values = [getattr(r, field) for r in runs]
    # Sample standard deviation (ddof=1) over seeds; a single run has none.
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return round(statistics.fmean(values), 2), round(std, 2)


# Published accuracy (%), printed beside ours for scale; never produced by this script.
# Few-shot: Zhang et al., "Few-Shot Intent Detection via Contrastive Pre-Training and Fine-Tuning"
# (CPFT, EMNLP 2021); columns banking77, hwu64, clinc150.
PUBLISHED: dict[tuple[str, str], tuple[float | None, float | None, float | None]] = {
    ("full", "RoBERTa-base classifier"): (92.63, None, None),
    ("10-shot", "RoBERTa-base classifier"): (84.3, 82.9, 91.6),
    ("10-shot", "CPFT"): (87.2, 87.1, 94.2),
    ("5-shot", "RoBERTa-base classifier"): (74.0, 75.6, 88.0),
    ("5-shot", "CPFT"): (80.9, 82.0, 92.3),
}
PUBLISHED_COLUMNS = ("banking77", "hwu64", "clinc150")


def render_markdown(rows: list[dict], datasets: Sequence[str], settings: Sequence[str]) -> str:
    """The tables of the "Cheap baselines" section of BENCHMARKS.md, from the results file."""
    order = [(s, m) for s in settings for m in METHODS]
    fields = ("setting", "method")
    out = []
    for metric, title in (("accuracy", "Accuracy"), ("macro_f1", "Macro-F1")):
        out.append(f"**{title}** (%, test split; few-shot: mean ± sample std over seeds)\n")
        out.append(markdown_table(rows, metric, columns=datasets, row_fields=fields, row_order=order))
    out.append("**Published reference points** (accuracy %, *published figures, not measured by us*)\n")
    out.append("| setting | method | " + " | ".join(PUBLISHED_COLUMNS) + " |")
    out.append("|---|---|" + "---:|" * len(PUBLISHED_COLUMNS))
    for (setting, method), values in PUBLISHED.items():
        cells = ["-" if v is None else f"{v:g}" for v in values]
        out.append(f"| {setting} | {method} (published) | " + " | ".join(cells) + " |")
    embed = {(r["dataset"], r["metric"]): r for r in rows if r["method"] == EMBED_METHOD}
    if embed:
        out.append(
            "\n**MiniLM-L6 embedding throughput** (all distinct texts of train+valid+test, batch 128, 1 thread)\n"
        )
        out.append(
            "| dataset | texts/s | est. GFLOP/s | 1-thread fp32 matmul GFLOP/s (same run) | fraction |"
        )
        out.append("|---|---:|---:|---:|---:|")
        for dataset in datasets:
            if (dataset, "texts_per_s") not in embed:
                continue
            speed = embed[(dataset, "texts_per_s")]["value"]
            gflops = embed.get((dataset, "est_gflop_per_s"), {}).get("value")
            peak = embed.get((dataset, "matmul_peak_gflop_per_s"), {}).get("value")
            fraction = f"{gflops / peak:.0%}" if gflops and peak else "-"
            out.append(f"| {dataset} | {speed:g} | {gflops or '-'} | {peak or '-'} | {fraction} |")
    used = [r for r in rows if r["dataset"] in datasets]
    dates = sorted({r["date"] for r in used})
    machines = sorted({r["machine"] for r in used})
    everything = command_line(
        [__file__, "--datasets", *datasets, "--settings", *settings, "--seeds", "0", "1", "2"]
    )
    example = next((r["command"] for r in used if r["method"] in METHODS), None)
    out.append(f"\nReproduce all rows: `{everything}` (then `--markdown` prints these tables).")
    if example:
        out.append(
            f"Each row in `bench/results/baselines.json` carries its own narrower command, e.g. `{example}`."
        )
    out.append(f"\nDate: {', '.join(dates)}. Machine: {'; '.join(machines)}.")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["banking77", "hwu64", "clinc150"])
    parser.add_argument("--settings", nargs="+", default=["full", "10-shot", "5-shot"])
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[0, 1, 2], help="few-shot seeds; 0 = shipped file"
    )
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--grid", nargs="+", type=float, default=list(DEFAULT_GRID), help="C values tried")
    parser.add_argument("--batch-size", type=int, default=128, help="embedding batch size")
    parser.add_argument("--no-cache", action="store_true", help="recompute MiniLM embeddings")
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print the BENCHMARKS.md tables from the results file; no runs",
    )
    args = parser.parse_args(argv)
    if args.markdown:
        try:
            print(render_markdown(read_results(RESULTS_NAME), args.datasets, args.settings), end="")
        except RationalignError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0

    torch.set_num_threads(1)
    wall_start = time.perf_counter()
    today = date.today().isoformat()
    try:
        for setting in args.settings:
            shots(setting)
        machine = machine_info()
        embedder = MiniLMEmbedder(batch_size=args.batch_size) if "minilm-frozen+lr" in args.methods else None
        all_rows: list[Row] = []
        for dataset in args.datasets:
            rows: list[Row] = []
            full, valid, test = (load_split(dataset, s) for s in ("train", "valid", "test"))
            label_ids = {name: i for i, name in enumerate(sorted(set(full.labels)))}
            for split_name, split in (("valid", valid), ("test", test)):
                unknown = sorted(set(split.labels) - label_ids.keys())
                if unknown:
                    raise RationalignError(
                        f"{datasets_root() / dataset / split_name}.jsonl: labels not in train: {unknown[:5]}; "
                        "fix: use splits of the same dataset"
                    )
            vectors = None
            if embedder is not None:
                vectors, meta = cached_embeddings(
                    dataset, full.texts + valid.texts + test.texts, embedder, not args.no_cache
                )
                how = "from cache, measured" if meta["cached"] else "measured"
                print(
                    f"[{dataset}] embeddings: {meta['n_texts']} distinct texts, {meta['texts_per_s']} texts/s, "
                    f"~{meta['est_gflop_per_s']} GFLOP/s vs {meta['matmul_peak_gflop_per_s']} GFLOP/s 1-thread "
                    f"matmul peak ({how} {meta['date']}, {meta['seconds']} s, load average {meta.get('load_average', '?')})",
                    flush=True,
                )
                if not meta["cached"]:
                    command = command_line(
                        [__file__, "--datasets", dataset, "--settings", "full", "--methods", "minilm-frozen+lr",
                         "--no-cache"]
                    )  # fmt: skip
                    for metric in ("texts_per_s", "est_gflop_per_s", "matmul_peak_gflop_per_s"):
                        rows.append(
                            Row(
                                dataset,
                                "all splits",
                                EMBED_METHOD,
                                metric,
                                meta[metric],
                                0.0,
                                1,
                                command,
                                today,
                                machine,
                            )
                        )
            for setting in args.settings:
                sets = train_sets(dataset, setting, args.seeds, full)
                for method in args.methods:
                    runs = []
                    for seed, train in sets:
                        with threadpool_limits(limits=1):
                            result = run_one(method, train, valid, test, label_ids, args.grid, vectors, seed)
                        runs.append(result)
                        print(
                            f"[{dataset} {setting} {method} seed {seed}] n_train={len(train.texts)} "
                            f"C={result.chosen_c:g} valid={result.validation_accuracy:.2f} "
                            f"test acc={result.accuracy:.2f} F1={result.macro_f1:.2f} "
                            f"({result.fit_seconds:.1f} s{'' if result.converged else ', NOT CONVERGED'})",
                            flush=True,
                        )
                    command = row_command(dataset, setting, [s for s, _ in sets], method, args.grid)
                    for metric, field in (("accuracy", "accuracy"), ("macro_f1", "macro_f1")):
                        mean, std = summarise(runs, field)
                        rows.append(
                            Row(
                                dataset,
                                setting,
                                method,
                                metric,
                                mean,
                                std,
                                len(runs),
                                command,
                                today,
                                machine,
                            )
                        )
            # Write after every dataset: an interrupted run keeps what it finished.
            write_results(RESULTS_NAME, rows)
            all_rows.extend(rows)
    except RationalignError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    order = [(m, s) for m in args.methods for s in args.settings]
    for metric in ("accuracy", "macro_f1"):
        print(f"\n{metric} (%, test)\n")
        print(markdown_table(all_rows, metric, columns=args.datasets, row_order=order))
    print(f"wall time {time.perf_counter() - wall_start:.1f} s on {machine_info()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
