"""Training throughput, batched inference throughput and single-utterance latency: student and both teachers.

For each model (the MiniLM-L6 student, the MPNet-base encoder teacher, the SmolLM2-135M LM-classifier
teacher), on Banking77 utterances (the real length distribution), with ``--threads`` torch threads:

- training: AdamW steps (batch 16, dynamic padding, the classifier's own cross-entropy), examples/s over
  ``--train-steps`` steps after two warm-up steps;
- batched inference: ``IntentClassifier.logits`` (length-sorted batches of 64) over ``--infer-n`` texts;
- single utterance: ``logits([text])`` one at a time, p50 and p99 over ``--single-n`` texts after warm-up.

Each figure also gets an estimate of the model FLOPs it sustains (2 x non-embedding parameters x real tokens
for a forward pass, 3x that for a training step) against the fp32 matmul rate measured in the same run at
the same thread count, so the table says how close to the machine's peak each loop gets.

``--precisions float32 bfloat16`` measures each model both ways (bfloat16 = autocast, float32 weights, as
``train.precision`` / ``teacher.precision``); bfloat16 rows are also compared with the bfloat16 matmul rate.

    .venv/bin/python bench/throughput.py --precisions float32 bfloat16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    Row,
    command_line,
    datasets_root,
    load_jsonl,
    machine_info,
    matmul_peak_gflops,
    write_results,
)
from rationalign.data.types import LabelSpace
from rationalign.models.classifier import IntentClassifier
from rationalign.precision import PRECISIONS

MODELS = {
    "minilm-l6": "MiniLM-L6 student (22.7M)",
    "mpnet-base": "MPNet-base encoder teacher (109.5M)",
    "smollm2-135m": "SmolLM2-135M LM-classifier teacher",
}


def non_embedding_parameters(clf: IntentClassifier) -> int:
    """Parameters that cost FLOPs per token (embedding tables are lookups)."""
    embed = {id(p) for m in clf.model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in clf.model.parameters() if id(p) not in embed)


def real_tokens(clf: IntentClassifier, texts: list[str]) -> int:
    return int(clf.encode(texts)["attention_mask"].sum())


def bench_training(
    clf: IntentClassifier, texts: list[str], labels: list[int], steps: int, batch: int
) -> tuple[float, int]:
    """Examples/s over ``steps`` AdamW steps (after 2 warm-up steps) and the real tokens they saw."""
    model = clf.model
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)  # as the trainer
    rng = np.random.default_rng(0)
    seen_tokens, seen, elapsed = 0, 0, 0.0
    for step in range(steps + 2):
        idx = rng.choice(len(texts), size=batch, replace=False)
        enc = clf.encode([texts[i] for i in idx])
        y = torch.as_tensor([labels[i] for i in idx])
        start = time.perf_counter()
        with clf.autocast():
            loss = torch.nn.functional.cross_entropy(model(**enc).logits, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= 2:
            elapsed += time.perf_counter() - start
            seen += batch
            seen_tokens += int(enc["attention_mask"].sum())
    model.eval()
    return seen / elapsed, seen_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--infer-n", type=int, default=512)
    parser.add_argument("--single-n", type=int, default=100)
    parser.add_argument("--precisions", nargs="+", default=["float32"], choices=PRECISIONS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    texts, names = load_jsonl(datasets_root() / "banking77" / "train.jsonl")
    space = LabelSpace.from_labels(names)
    labels = [space.id(n) for n in names]
    order = np.random.default_rng(0).permutation(len(texts))
    texts, labels = [texts[i] for i in order], [labels[i] for i in order]
    test_texts, _ = load_jsonl(datasets_root() / "banking77" / "test.jsonl")
    peaks = {p: matmul_peak_gflops(dtype=p) for p in dict.fromkeys(["float32", *args.precisions])}
    for p, value in peaks.items():
        print(f"{p} matmul peak at {args.threads} threads: {value:.1f} GFLOP/s", flush=True)
    setting = f"banking77 utterances, {args.threads} threads"
    machine, today, cmd = machine_info(), date.today().isoformat(), command_line()
    rows: list[Row] = []

    def add(method: str, metric: str, value: float) -> None:
        rows.append(Row("banking77", setting, method, metric, round(value, 3), 0.0, 1, cmd, today, machine))

    for name, precision in [(n, p) for n in args.models for p in args.precisions]:
        label = MODELS.get(name, name) + ("" if precision == "float32" else f", {precision}")
        peak = peaks[precision]
        clf = IntentClassifier.from_base(name, space, seed=0)
        clf.precision = precision
        params = non_embedding_parameters(clf)

        train_eps, train_tokens = bench_training(clf, texts, labels, args.train_steps, 16)
        tokens_per_example = train_tokens / (args.train_steps * 16)
        train_gflops = 6 * params * tokens_per_example * train_eps / 1e9

        sample = test_texts[: args.infer_n]
        clf.logits(sample[:64])  # warm-up
        start = time.perf_counter()
        clf.logits(sample, batch_size=64)
        infer_eps = len(sample) / (time.perf_counter() - start)
        infer_gflops = 2 * params * real_tokens(clf, sample) / len(sample) * infer_eps / 1e9

        singles = test_texts[-args.single_n :]
        for t in singles[:5]:
            clf.logits([t])
        times = []
        for t in singles:
            start = time.perf_counter()
            clf.logits([t])
            times.append(1000 * (time.perf_counter() - start))
        p50, p99 = statistics.median(times), float(np.percentile(times, 99))
        print(
            f"{label}: train {train_eps:.1f} ex/s ({train_gflops:.1f} GFLOP/s, {train_gflops / peak:.0%} of peak), "
            f"batched inference {infer_eps:.1f} ex/s ({infer_gflops:.1f} GFLOP/s, {infer_gflops / peak:.0%}), "
            f"single p50 {p50:.1f} ms p99 {p99:.1f} ms",
            flush=True,
        )
        add(label, "train_examples_per_second", train_eps)
        add(label, "train_fraction_of_matmul_peak", train_gflops / peak)
        add(label, "inference_examples_per_second", infer_eps)
        add(label, "inference_fraction_of_matmul_peak", infer_gflops / peak)
        add(label, "single_p50_ms", p50)
        add(label, "single_p99_ms", p99)
        add(label, "non_embedding_parameters_millions", params / 1e6)
        if precision != "float32":  # the same FLOPs against the float32 peak too
            add(label, "train_fraction_of_fp32_matmul_peak", train_gflops / peaks["float32"])
            add(label, "inference_fraction_of_fp32_matmul_peak", infer_gflops / peaks["float32"])
        del clf
    for p, value in peaks.items():
        add("fp32 matmul (2048x2048)" if p == "float32" else f"{p} matmul (2048x2048)", "gflops", value)
    write_results("throughput", rows)


if __name__ == "__main__":
    main()
