"""Integrated Gradients: time to an accurate prior, ours (batched) vs captum's LayerIntegratedGradients.

Model: the shipped student backbone ``minilm-l6`` with a Banking77 head (a logistic regression fitted on the
frozen mean-pooled train-split features, fixed C, copied into the classifier; cached in ``bench/.cache``),
so attributions explain a real classifier. Inputs: ``--n-utterances`` Banking77 test utterances (seeded
sample), target = gold label, explained output = log-probability, baseline = PAD with special tokens kept.

Reference: our IG with ``--reference-steps`` (256) Gauss-Legendre steps in fp32 (our IG equals captum's to
~1e-5 relative; tests/attribution/test_integrated_gradients.py). For each n_steps we time
- ``rationalign-ig fp32`` / ``rationalign-ig bf16``: ``IntegratedGradients(...).attribute(all texts)``
  (length-sorted buckets, utterances x steps in each forward; bf16 = matmuls under bfloat16 autocast);
- ``captum-lig per-utterance``: one ``lig.attribute`` call per utterance with
  ``internal_batch_size=n_steps``, as captum's tutorials do;
- ``captum-lig batched16``: 16 padded utterances per call (data order), ``internal_batch_size=16*n_steps``;
and score each utterance's word attributions by Spearman against the reference. Timings use one thread;
we report CPU seconds (process time: what the work costs, robust to other jobs on the machine) and wall
seconds per utterance.

    .venv/bin/python bench/ig_speed.py                      # 100 utterances, n_steps 8 16 32 64
    .venv/bin/python bench/ig_speed.py --n-utterances 20 --steps 8 16 --no-captum   # quick look
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import date

import numpy as np
import torch
from scipy.stats import spearmanr

from _common import (
    CACHE_DIR,
    Row,
    command_line,
    datasets_root,
    load_jsonl,
    machine_info,
    matmul_peak_gflops,
    write_results,
)
from rationalign.attribution.integrated_gradients import (
    IntegratedGradients,
    model_inputs,
    pad_baseline_ids,
    resolve_model,
    words_from_tokens,
)
from rationalign.attribution.words import encode_with_words
from rationalign.data.types import LabelSpace
from rationalign.models.classifier import IntentClassifier

RESULTS_NAME = "ig_speed"
DATASET = "banking77"
TARGET_SPEARMAN = 0.95
HEAD_C = 10.0  # fixed, not tuned: the head only has to make the explained classifier a real one


# ------------------------------------------------------------------------------------------------ model
def banking_classifier(
    train_texts: list[str], train_labels: list[str], space: LabelSpace
) -> IntentClassifier:
    """MiniLM-L6 with a logistic-regression head on its frozen mean-pooled features (cached)."""
    from sklearn.linear_model import LogisticRegression

    clf = IntentClassifier.from_base("minilm-l6", space, seed=0)
    clf.model.eval()
    cache = CACHE_DIR / f"ig_speed_head_{clf.weights_fingerprint()[:16]}_{len(train_texts)}.npz"
    if cache.is_file():
        saved = np.load(cache)
        weight, bias = saved["weight"], saved["bias"]
    else:
        features = []
        with torch.inference_mode():
            for start in range(0, len(train_texts), 64):
                enc = clf.encode(train_texts[start : start + 64])
                hidden = clf.model.backbone(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).float()
                features.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
        lr = LogisticRegression(C=HEAD_C, max_iter=2000)
        lr.fit(np.concatenate(features), space.ids(train_labels))
        weight, bias = lr.coef_.astype(np.float32), lr.intercept_.astype(np.float32)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        np.savez(cache, weight=weight, bias=bias)
    with torch.no_grad():
        clf.model.classifier.weight.copy_(torch.from_numpy(weight))
        clf.model.classifier.bias.copy_(torch.from_numpy(bias))
    return clf


# ---------------------------------------------------------------------------------------------- methods
def run_ours(clf, texts, targets, n_steps, precision):
    ig = IntegratedGradients(clf, n_steps=n_steps, precision=precision, completeness=False)
    return [a.scores for a in ig.attribute(texts, targets)]


def _captum_lig(clf):
    from captum.attr import LayerIntegratedGradients

    handle = resolve_model(clf)

    def forward(input_ids, attention_mask):
        return clf.model(**model_inputs(handle, input_ids, attention_mask)).logits.log_softmax(-1)

    return LayerIntegratedGradients(forward, clf.model.get_input_embeddings())


def run_captum_per_utterance(clf, texts, targets, n_steps):
    lig = _captum_lig(clf)
    out = []
    for text, target in zip(texts, targets, strict=True):
        inputs, alignments = encode_with_words(clf.tokenizer, [text], clf.max_length)
        baseline = pad_baseline_ids(inputs["input_ids"], inputs["attention_mask"], clf.tokenizer)
        attributions = lig.attribute(
            inputs["input_ids"],
            baselines=baseline,
            target=target,
            additional_forward_args=(inputs["attention_mask"],),
            n_steps=n_steps,
            internal_batch_size=n_steps,
        )
        out.append(words_from_tokens(attributions.sum(-1), alignments, clf.tokenizer.padding_side)[0])
    return out


def run_captum_batched(clf, texts, targets, n_steps, batch=16):
    lig = _captum_lig(clf)
    out = []
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        inputs, alignments = encode_with_words(clf.tokenizer, chunk, clf.max_length)
        baseline = pad_baseline_ids(inputs["input_ids"], inputs["attention_mask"], clf.tokenizer)
        attributions = lig.attribute(
            inputs["input_ids"],
            baselines=baseline,
            target=list(targets[start : start + batch]),
            additional_forward_args=(inputs["attention_mask"],),
            n_steps=n_steps,
            internal_batch_size=len(chunk) * n_steps,
        )
        out.extend(words_from_tokens(attributions.sum(-1), alignments, clf.tokenizer.padding_side))
    return out


def timed(fn, *args):
    fn(*[a[:2] if isinstance(a, list) else a for a in args])  # warm-up: allocator, kernel selection
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn(*args)
    return result, time.process_time() - cpu, time.perf_counter() - wall


def spearman_scores(scores, reference) -> list[float]:
    values = []
    for s, r in zip(scores, reference, strict=True):
        if len(s) < 2 or np.ptp(r) == 0:
            continue
        values.append(float(spearmanr(s, r).statistic))
    return values


def matmul_peak_cpu_gflops(size: int = 2048, repeats: int = 4, dtype=torch.float32) -> float:
    """Matmul rate per CPU second (process time), comparable with our CPU-time rates under load."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        a @ b
    start = time.process_time()
    for _ in range(repeats):
        a @ b
    return 2.0 * size**3 * repeats / (time.process_time() - start) / 1e9


def count_flops(clf, texts, targets, n_steps) -> float:
    """FLOPs of our batched forward + input-gradient backward (torch.utils.flop_counter), all texts."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run_ours(clf, texts, targets, n_steps, "float32")
    return float(counter.get_total_flops())


# ------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-utterances", type=int, default=100)
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--reference-steps", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-captum", action="store_true", help="time only our implementation")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    root = datasets_root() / DATASET
    train_texts, train_labels = load_jsonl(root / "train.jsonl")
    test_texts, test_labels = load_jsonl(root / "test.jsonl")
    space = LabelSpace.from_labels(train_labels)
    picked = random.Random(args.seed).sample(range(len(test_texts)), args.n_utterances)
    texts = [test_texts[i] for i in picked]
    targets = [space.id(test_labels[i]) for i in picked]
    clf = banking_classifier(train_texts, train_labels, space)
    accuracy = float(np.mean(clf.predict_proba(texts).argmax(1) == np.array(targets)))
    print(f"classifier accuracy on the {len(texts)} utterances: {accuracy:.3f}", file=sys.stderr)

    command, today, machine = command_line(), date.today().isoformat(), machine_info()
    load_before = os.getloadavg()[0]
    rows: list[Row] = []

    def row(setting, method, metric, value, std=0.0, n=1):
        rows.append(
            Row(DATASET, setting, method, metric, float(value), float(std), n, command, today, machine)
        )

    reference, ref_cpu, ref_wall = timed(run_ours, clf, texts, targets, args.reference_steps, "float32")
    row(
        f"n_steps={args.reference_steps}",
        "rationalign-ig fp32 (reference)",
        "cpu_s_per_utt",
        ref_cpu / len(texts),
    )
    row(
        f"n_steps={args.reference_steps}",
        "rationalign-ig fp32 (reference)",
        "wall_s_per_utt",
        ref_wall / len(texts),
    )

    methods = {
        "rationalign-ig fp32": lambda t, y, n: run_ours(clf, t, y, n, "float32"),
        "rationalign-ig bf16": lambda t, y, n: run_ours(clf, t, y, n, "bfloat16"),
    }
    if not args.no_captum:
        methods["captum-lig per-utterance"] = lambda t, y, n: run_captum_per_utterance(clf, t, y, n)
        methods["captum-lig batched16"] = lambda t, y, n: run_captum_batched(clf, t, y, n)

    table: dict[tuple[str, int], dict[str, float]] = {}
    for n_steps in args.steps:
        for method, fn in methods.items():
            scores, cpu, wall = timed(fn, texts, targets, n_steps)
            rho = spearman_scores(scores, reference)
            cell = {
                "cpu": cpu / len(texts),
                "wall": wall / len(texts),
                "rho": statistics.fmean(rho),
                "rho_std": statistics.stdev(rho) if len(rho) > 1 else 0.0,
            }
            table[(method, n_steps)] = cell
            setting = f"n_steps={n_steps}"
            row(setting, method, "cpu_s_per_utt", cell["cpu"])
            row(setting, method, "wall_s_per_utt", cell["wall"])
            row(setting, method, "spearman_vs_ref", cell["rho"], cell["rho_std"], len(rho))
            print(
                f"{method:28s} n={n_steps:3d} cpu {cell['cpu']:.3f}s wall {cell['wall']:.3f}s "
                f"rho {cell['rho']:.4f}",
                file=sys.stderr,
            )

    # smallest n_steps reaching the target accuracy, and the time ratio there
    best: dict[str, int] = {}
    for method in methods:
        ok = [n for n in args.steps if table[(method, n)]["rho"] >= TARGET_SPEARMAN]
        if ok:
            best[method] = min(ok)
            row("summary", method, "min_n_steps_spearman_0.95", best[method])
    ours = [m for m in methods if m.startswith("rationalign") and m in best]
    peers = [m for m in methods if m.startswith("captum") and m in best]
    for mine in ours:
        for peer in peers:
            for kind in ("cpu", "wall"):
                ratio = table[(peer, best[peer])][kind] / table[(mine, best[mine])][kind]
                row("summary", f"{peer} / {mine}", f"time_ratio_{kind}_at_spearman_0.95", ratio)

    # achieved FLOP rate of our batched forward+backward at the accurate setting (same FLOPs in bf16)
    n_flops = best.get("rationalign-ig fp32", args.steps[-1])
    flops = count_flops(clf, texts, targets, n_flops)
    setting = f"n_steps={n_flops}"
    row(setting, "rationalign-ig", "gflop_per_utt", flops / len(texts) / 1e9)
    rates = {}
    for method in ("rationalign-ig fp32", "rationalign-ig bf16"):
        rates[method] = flops / (table[(method, n_flops)]["cpu"] * len(texts)) / 1e9
        row(setting, method, "gflops_per_cpu_s", rates[method])
    peak_cpu = matmul_peak_cpu_gflops()
    peak_cpu_bf16 = matmul_peak_cpu_gflops(dtype=torch.bfloat16)
    peak_wall = matmul_peak_gflops()
    row("summary", "fp32 matmul 2048^3, 1 thread", "gflops_per_cpu_s", peak_cpu)
    row("summary", "bf16 matmul 2048^3, 1 thread", "gflops_per_cpu_s", peak_cpu_bf16)
    row("summary", "fp32 matmul 2048^3, 1 thread", "gflops_per_wall_s", peak_wall)
    row("summary", "classifier", "accuracy_on_sample", accuracy)
    load_after = os.getloadavg()[0]
    row("summary", "machine", "load_average_1min_start", load_before)
    row("summary", "machine", "load_average_1min_end", load_after)

    path = write_results(RESULTS_NAME, rows)
    print(f"wrote {len(rows)} rows to {path}", file=sys.stderr)
    print(
        f"reference ({args.reference_steps} steps): {ref_cpu / len(texts):.3f} cpu s/utt; "
        f"our GFLOP/s fp32 {rates['rationalign-ig fp32']:.1f} (matmul {peak_cpu:.1f}), "
        f"bf16 {rates['rationalign-ig bf16']:.1f} (matmul {peak_cpu_bf16:.1f}); load {load_before:.1f} -> {load_after:.1f}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
