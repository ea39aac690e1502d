"""How good and how costly is the local LLM teacher (SmolLM2-135M-Instruct)?

On a fixed random subset of each test split (seeded, ``--n`` utterances) this measures:

* ``llm codes`` zero-shot (chat template, the default) and with in-context examples (``--shots`` per label
  from train, seeded): accuracy, macro-F1, top-5 accuracy, prefix length, forward passes, tokens and
  texts/s, and the estimated GFLOP/s of the model calls (compare with the measured matmul peak);
* the prompt format check: ``plain`` vs ``chat`` on the first ``--format-n`` utterances of the subset;
* ``llm label_text`` on the first ``--label-text-n`` utterances, and its top-1 agreement with codes mode;
* the prefix KV cache speed-up: the same ``--nocache-n`` utterances with and without the cache;
* scale: random guessing (1/|Y|), the train split's majority class, and TF-IDF + LR / frozen MiniLM + LR
  trained on exactly the in-context examples (C chosen on 500 validation utterances).

Rows go to ``bench/results/teacher_accuracy.json`` after each measurement (a re-run replaces its rows).
Timings use one torch thread (``--threads``) on a shared 2-core CPU; the load average is in ``machine``.

    .venv/bin/python bench/teacher_accuracy.py --datasets banking77 hwu64
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections import Counter
from datetime import date

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from _common import (
    Row,
    command_line,
    datasets_root,
    load_jsonl,
    machine_info,
    matmul_peak_gflops,
    read_results,
    write_results,
)
from rationalign.data.types import Example, IntentDataset, LabelSpace
from rationalign.teachers.llm import LLMTeacher
from rationalign.teachers.prompt import select_examples

RESULTS_NAME = "teacher_accuracy"
MODEL = "smollm2-135m"
C_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)
PARTS = ("scale", "zero", "cache", "format", "label_text", "shots")


class Recorder:
    def __init__(self, dataset: str, args: argparse.Namespace):
        self.dataset = dataset
        self.command = command_line()
        self.today = date.today().isoformat()
        self.args = args

    def machine(self) -> str:
        load = os.getloadavg()[0]
        return f"{machine_info()}, load average {load:.1f}"

    def write(self, setting: str, method: str, metrics: dict[str, float]) -> None:
        machine = self.machine()
        rows = [
            Row(
                self.dataset,
                setting,
                method,
                metric,
                float(f"{value:.6g}"),
                0.0,
                1,
                self.command,
                self.today,
                machine,
            )
            for metric, value in metrics.items()
        ]
        write_results(self.args.results, rows)
        shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        print(f"[{self.dataset}] {setting} | {method}: {shown}", flush=True)


def _accuracy(probs: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    pred = probs.argmax(1)
    top5 = np.argsort(-probs, axis=1)[:, :5]
    return {
        "accuracy": 100.0 * float((pred == gold).mean()),
        "macro_f1": 100.0
        * float(f1_score(gold, pred, average="macro", labels=np.unique(gold), zero_division=0)),
        "top5_accuracy": 100.0 * float((top5 == gold[:, None]).any(1).mean()),
        "mean_gold_probability": float(probs[np.arange(len(gold)), gold].mean()),
    }


def _flops_per_token(teacher: LLMTeacher) -> tuple[float, float]:
    """(2 x non-embedding parameters, attention FLOPs per token per context position)."""
    cfg = teacher.model.config
    embed = teacher.model.get_input_embeddings().weight.numel()
    params = sum(p.numel() for p in teacher.model.parameters()) - embed
    # Q.K^T and A.V: 2 matmuls x 2 FLOPs x hidden size, per layer, per (query, key) pair.
    return 2.0 * params, 4.0 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim


def _cost_metrics(teacher: LLMTeacher, n: int, seconds: float, context: float) -> dict[str, float]:
    dense, attn = _flops_per_token(teacher)
    cost = teacher.cost
    flops = dense * cost.padded_tokens + attn * cost.padded_tokens * context
    # The 1-thread matmul rate right after the timed run, under the same machine load: the ceiling.
    peak = matmul_peak_gflops()
    return {
        "matmul_peak_gflop_per_s": peak,
        "fraction_of_peak": flops / seconds / 1e9 / peak,
        "texts_per_s": n / seconds,
        "seconds_per_text": seconds / n,
        "forward_passes_per_text": cost.forward_passes / n,
        "tokens_per_text": cost.tokens / n,
        "prefix_tokens": float(len(teacher.prefix_ids)),
        "est_gflop_per_s": flops / seconds / 1e9,
    }


def _run_llm(teacher: LLMTeacher, texts: list[str]) -> tuple[np.ndarray, float]:
    teacher.reset_cost()
    start = time.perf_counter()
    probs = teacher.predict_proba(texts)
    return probs, time.perf_counter() - start


def _lr_baselines(
    rec: Recorder,
    shots_ds: IntentDataset,
    valid: tuple[list[str], list[str]],
    texts: list[str],
    gold: np.ndarray,
    space: LabelSpace,
    setting: str,
) -> None:
    """TF-IDF + LR and frozen MiniLM + LR trained on the in-context examples only; C chosen on valid."""
    from transformers import AutoModel, AutoTokenizer

    from rationalign.models.resolver import resolve_model

    folder = resolve_model("minilm-l6")
    tok, encoder = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()

    def embed(batch: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(batch), 64):
            enc = tok(batch[i : i + 64], padding=True, truncation=True, max_length=256, return_tensors="pt")
            with torch.inference_mode():
                hidden = encoder(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy())
        return np.concatenate(out)

    tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(shots_ds.texts)
    y_train = np.array(space.ids(shots_ds.labels))
    y_valid = np.array(space.ids(valid[1]))
    for method, featurise in (("tfidf+lr", tfidf.transform), ("minilm-frozen+lr", embed)):
        x_train, x_valid, x_test = featurise(shots_ds.texts), featurise(valid[0]), featurise(texts)

        def valid_score(c: float, x_train=x_train, x_valid=x_valid) -> tuple[float, float]:
            return LogisticRegression(C=c, max_iter=5000).fit(x_train, y_train).score(x_valid, y_valid), -c

        best = max(C_GRID, key=valid_score)
        clf = LogisticRegression(C=best, max_iter=5000).fit(x_train, y_train)
        probs = np.zeros((len(texts), len(space)))
        probs[:, clf.classes_] = clf.predict_proba(x_test)
        metrics = _accuracy(probs, gold)
        metrics.pop("mean_gold_probability")
        rec.write(setting, method, {**metrics, "chosen_C": best})


def run_dataset(name: str, args: argparse.Namespace) -> None:
    root = datasets_root() / name
    test_texts, test_labels = load_jsonl(root / "test.jsonl")
    train_texts, train_labels = load_jsonl(root / "train.jsonl")
    valid_texts, valid_labels = load_jsonl(root / "valid.jsonl")
    space = LabelSpace.from_labels(train_labels)
    rng = np.random.default_rng(args.seed)
    idx = rng.choice(len(test_texts), size=min(args.n, len(test_texts)), replace=False)
    texts = [test_texts[i] for i in idx]
    gold = np.array(space.ids([test_labels[i] for i in idx]))
    rec = Recorder(name, args)
    subset = f"test subset n={len(texts)} seed={args.seed}"

    parts = set(args.parts)
    zero = LLMTeacher(MODEL, space, batch_size=args.batch_size)
    chat_cache: dict[int, np.ndarray] = {}

    def chat_probs(n: int) -> np.ndarray:
        """Zero-shot chat-format codes probabilities of the first n texts (reused across parts)."""
        have = max(chat_cache, default=0)
        if have < n:
            chat_cache[n] = zero.predict_proba(texts[:n])
            have = n
        return chat_cache[have][:n]

    # ---------------------------------------------------------------- scale
    if "scale" in parts:
        _scale(rec, subset, train_labels, space, gold)
    if "zero" in parts:
        probs_chat, secs = _run_llm(zero, texts)
        chat_cache[len(texts)] = probs_chat
        context = len(zero.prefix_ids) + np.mean([len(zero.suffix_ids(t)) for t in texts]) / 2
        rec.write(
            f"zero-shot, {subset}",
            "llm codes (chat)",
            {**_accuracy(probs_chat, gold), **_cost_metrics(zero, len(texts), secs, context)},
        )
    if "cache" in parts:
        _cache_speedup(rec, zero, space, texts[: args.nocache_n], args)
    if "format" in parts:
        _format_check(rec, space, texts, gold, chat_probs, args)
    if "label_text" in parts:
        _label_text(rec, space, texts, gold, chat_probs, args)
    if "shots" in parts and args.shots > 0:
        _shots(
            rec, space, texts, gold, subset, (train_texts, train_labels), (valid_texts, valid_labels), args
        )


def _scale(rec, subset, train_labels, space, gold) -> None:
    k = len(space)
    majority = Counter(train_labels).most_common(1)[0][0]
    rec.write(subset, "random guess", {"accuracy": 100.0 / k, "mean_gold_probability": 1.0 / k})
    rec.write(
        subset, "train majority class", {"accuracy": 100.0 * float((gold == space.id(majority)).mean())}
    )


def _cache_speedup(rec, zero: LLMTeacher, space, few: list[str], args) -> None:
    """The same utterances with the (warm) prefix cache and without any cache."""
    with torch.inference_mode():
        zero._ensure_prefix()  # steady state: the prefix is encoded once per teacher, timed separately
    zero.reset_cost()
    start = time.perf_counter()
    cached = zero.predict_proba(few)
    cached_s = time.perf_counter() - start
    cached_tokens = zero.cost.tokens
    plain = LLMTeacher(MODEL, space, batch_size=args.batch_size, use_prefix_cache=False)
    no_cache, nocache_s = _run_llm(plain, few)
    setting = f"zero-shot, first {len(few)} of the subset"
    rec.write(
        setting,
        "llm codes, prefix KV cache",
        {
            "seconds_per_text": cached_s / len(few),
            "tokens_per_text": cached_tokens / len(few),
            "prefix_seconds_once": float(zero_prefix_seconds(space, args)),
        },
    )
    rec.write(
        setting,
        "llm codes, no cache",
        {
            "seconds_per_text": nocache_s / len(few),
            "tokens_per_text": plain.cost.tokens / len(few),
            "max_abs_diff_vs_cache": float(np.abs(no_cache - cached).max()),
        },
    )
    rec.write(setting, "prefix KV cache speed-up", {"speedup_x": nocache_s / cached_s})


def _format_check(rec, space, texts, gold, chat_probs, args) -> None:
    m = min(args.format_n, len(texts))
    plain_fmt = LLMTeacher(MODEL, space, batch_size=args.batch_size, format="plain")
    probs_plain, _ = _run_llm(plain_fmt, texts[:m])
    fmt_setting = f"zero-shot, first {m} of the subset"
    rec.write(fmt_setting, "llm codes (plain)", _accuracy(probs_plain, gold[:m]))
    rec.write(fmt_setting, "llm codes (chat)", _accuracy(chat_probs(m), gold[:m]))


def _label_text(rec, space, texts, gold, chat_probs, args) -> None:
    n_lt = min(args.label_text_n, len(texts))
    lt = LLMTeacher(MODEL, space, mode="label_text", batch_size=args.batch_size)
    probs_lt, lt_s = _run_llm(lt, texts[:n_lt])
    lt_setting = f"zero-shot, first {n_lt} of the subset"
    rec.write(
        lt_setting,
        "llm label_text (chat)",
        {
            **_accuracy(probs_lt, gold[:n_lt]),
            "seconds_per_text": lt_s / n_lt,
            "forward_passes_per_text": lt.cost.forward_passes / n_lt,
            "tokens_per_text": lt.cost.tokens / n_lt,
        },
    )
    codes = chat_probs(n_lt)
    rec.write(lt_setting, "llm codes (chat)", _accuracy(codes, gold[:n_lt]))
    rec.write(
        lt_setting,
        "codes vs label_text",
        {"top1_agreement": 100.0 * float((probs_lt.argmax(1) == codes.argmax(1)).mean())},
    )


def _shots(rec, space, texts, gold, subset, train, valid, args) -> None:
    pool = IntentDataset([Example(t, y) for t, y in zip(*train, strict=True)])
    chosen = select_examples(pool, space, shots=args.shots, seed=args.seed)
    shot = LLMTeacher(MODEL, space, examples=chosen, batch_size=args.batch_size)
    probs_shot, shot_s = _run_llm(shot, texts)
    ctx = len(shot.prefix_ids) + np.mean([len(shot.suffix_ids(t)) for t in texts]) / 2
    rec.write(
        f"{args.shots}-shot in context, {subset}",
        "llm codes (chat)",
        {**_accuracy(probs_shot, gold), **_cost_metrics(shot, len(texts), shot_s, ctx)},
    )
    vi = np.random.default_rng(args.seed + 1).choice(
        len(valid[0]), size=min(500, len(valid[0])), replace=False
    )
    _lr_baselines(
        rec,
        IntentDataset(list(chosen)),
        ([valid[0][i] for i in vi], [valid[1][i] for i in vi]),
        texts,
        gold,
        space,
        f"trained on the same {args.shots}-shot examples, {subset}",
    )


_PREFIX_SECONDS: dict[str, float] = {}


def zero_prefix_seconds(space: LabelSpace, args: argparse.Namespace) -> float:
    """Seconds to encode the zero-shot prefix once (a fresh teacher, timed)."""
    key = ",".join(space.names)
    if key not in _PREFIX_SECONDS:
        teacher = LLMTeacher(MODEL, space, batch_size=args.batch_size)
        start = time.perf_counter()
        with torch.inference_mode():
            teacher._ensure_prefix()
        _PREFIX_SECONDS[key] = time.perf_counter() - start
    return _PREFIX_SECONDS[key]


def report(name: str = RESULTS_NAME) -> str:
    """The BENCHMARKS.md tables, rendered from the results file (no model runs)."""
    rows = read_results(name)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows if r["setting"] != "machine"))

    def cell(dataset: str, setting_prefix: str, method: str, metric: str, digits: int = 1) -> str:
        for r in rows:
            if (r["dataset"], r["method"], r["metric"]) == (dataset, method, metric) and r[
                "setting"
            ].startswith(setting_prefix):
                return f"{r['value']:.1e}" if digits < 0 else f"{r['value']:.{digits}f}"
        return "-"

    def table(title: str, lines: list[tuple[str, str, str, str, int]]) -> str:
        out = [
            f"**{title}**",
            "",
            "| setting | method | metric | " + " | ".join(datasets) + " |",
            "|---|---|---|" + "---:|" * len(datasets),
        ]
        for label, prefix, method, metric, digits in lines:
            out.append(
                f"| {label} | {method} | {metric} | "
                + " | ".join(cell(d, prefix, method, metric, digits) for d in datasets)
                + " |"
            )
        return "\n".join(out) + "\n"

    sub = "test subset n=200"
    acc = [
        ("n=200", sub, "random guess", "accuracy", 1),
        ("n=200", sub, "train majority class", "accuracy", 1),
        ("zero-shot, n=200", "zero-shot, " + sub, "llm codes (chat)", "accuracy", 1),
        ("zero-shot, n=200", "zero-shot, " + sub, "llm codes (chat)", "top5_accuracy", 1),
        ("zero-shot, n=200", "zero-shot, " + sub, "llm codes (chat)", "mean_gold_probability", 4),
        ("1-shot in context, n=200", "1-shot in context", "llm codes (chat)", "accuracy", 1),
        ("1-shot in context, n=200", "1-shot in context", "llm codes (chat)", "top5_accuracy", 1),
        ("same 1-shot examples, n=200", "trained on the same 1-shot", "tfidf+lr", "accuracy", 1),
        ("same 1-shot examples, n=200", "trained on the same 1-shot", "minilm-frozen+lr", "accuracy", 1),
        ("zero-shot, first 100", "zero-shot, first 100", "llm codes (chat)", "accuracy", 1),
        ("zero-shot, first 100", "zero-shot, first 100", "llm codes (plain)", "accuracy", 1),
        ("zero-shot, first 100", "zero-shot, first 100", "llm codes (chat)", "top5_accuracy", 1),
        ("zero-shot, first 100", "zero-shot, first 100", "llm codes (plain)", "top5_accuracy", 1),
    ]
    lt = [
        ("zero-shot, first 40/20", "zero-shot, first", "llm codes (chat)", "accuracy", 1),
        ("zero-shot, first 40/20", "zero-shot, first", "llm label_text (chat)", "accuracy", 1),
        ("zero-shot, first 40/20", "zero-shot, first", "llm label_text (chat)", "top5_accuracy", 1),
        ("zero-shot, first 40/20", "zero-shot, first", "codes vs label_text", "top1_agreement", 1),
        ("zero-shot, first 40/20", "zero-shot, first", "llm label_text (chat)", "seconds_per_text", 2),
        ("zero-shot, first 40/20", "zero-shot, first", "llm label_text (chat)", "forward_passes_per_text", 2),
        ("zero-shot, first 40/20", "zero-shot, first", "llm label_text (chat)", "tokens_per_text", 0),
    ]
    cost = [
        ("zero-shot, n=200", "zero-shot, " + sub, "llm codes (chat)", "prefix_tokens", 0),
        ("zero-shot, n=200", "zero-shot, " + sub, "llm codes (chat)", "texts_per_s", 2),
        ("zero-shot, n=200", "zero-shot, " + sub, "llm codes (chat)", "forward_passes_per_text", 3),
        ("zero-shot, n=200", "zero-shot, " + sub, "llm codes (chat)", "tokens_per_text", 1),
        ("zero-shot, n=200", "zero-shot, " + sub, "llm codes (chat)", "est_gflop_per_s", 1),
        ("zero-shot, n=200", "zero-shot, " + sub, "llm codes (chat)", "matmul_peak_gflop_per_s", 1),
        ("zero-shot, n=200", "zero-shot, " + sub, "llm codes (chat)", "fraction_of_peak", 2),
        ("1-shot in context, n=200", "1-shot in context", "llm codes (chat)", "prefix_tokens", 0),
        ("1-shot in context, n=200", "1-shot in context", "llm codes (chat)", "texts_per_s", 2),
        ("1-shot in context, n=200", "1-shot in context", "llm codes (chat)", "est_gflop_per_s", 1),
        ("1-shot in context, n=200", "1-shot in context", "llm codes (chat)", "matmul_peak_gflop_per_s", 1),
        ("1-shot in context, n=200", "1-shot in context", "llm codes (chat)", "fraction_of_peak", 2),
        ("zero-shot, first 16/8", "zero-shot, first", "llm codes, prefix KV cache", "seconds_per_text", 3),
        ("zero-shot, first 16/8", "zero-shot, first", "llm codes, prefix KV cache", "tokens_per_text", 1),
        ("zero-shot, first 16/8", "zero-shot, first", "llm codes, prefix KV cache", "prefix_seconds_once", 2),
        ("zero-shot, first 16/8", "zero-shot, first", "llm codes, no cache", "seconds_per_text", 3),
        ("zero-shot, first 16/8", "zero-shot, first", "llm codes, no cache", "tokens_per_text", 1),
        ("zero-shot, first 16/8", "zero-shot, first", "llm codes, no cache", "max_abs_diff_vs_cache", -1),
        ("zero-shot, first 16/8", "zero-shot, first", "prefix KV cache speed-up", "speedup_x", 1),
    ]
    return "\n".join(
        [
            table("Accuracy (%) and probability of the gold label", acc),
            table("codes vs label_text (same utterances)", lt),
            table("Cost (1 torch thread, shared 2-core CPU)", cost),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["banking77", "hwu64"])
    parser.add_argument("--n", type=int, default=200, help="test utterances per data set (seeded subset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shots", type=int, default=1, help="in-context examples per label (0: skip)")
    parser.add_argument("--format-n", type=int, default=100)
    parser.add_argument("--label-text-n", type=int, default=40)
    parser.add_argument("--nocache-n", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", default=RESULTS_NAME, help="results file name under bench/results/")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS, help="what to measure")
    parser.add_argument("--report", action="store_true", help="print the BENCHMARKS.md tables and exit")
    args = parser.parse_args(argv)
    if args.report:
        print(report(args.results))
        return 0
    torch.set_num_threads(args.threads)
    # 1-shot training sets have one example per class; sklearn warns that this looks like regression.
    warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
    peak = matmul_peak_gflops()
    print(f"fp32 matmul peak now: {peak:.1f} GFLOP/s ({machine_info()})", flush=True)
    for name in args.datasets:
        Recorder(name, args).write("machine", "fp32 matmul (2048^3)", {"matmul_peak_gflop_per_s": peak})
        run_dataset(name, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
