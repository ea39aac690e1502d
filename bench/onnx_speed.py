"""ONNX Runtime fp32 / int8 vs PyTorch for the shipped student: latency, throughput, argmax agreement.

The student is ``IntentClassifier.from_base("minilm-l6", <77 Banking77 labels>)``. Its head is not trained
here: it is set to the scaled class centroids of frozen mean-pooled embeddings of the shipped 5-shot file
(``train_5.jsonl``), a no-training nearest-centroid classifier with real margins, so argmax agreement
means something (a random head's near-tied logits would flip on any noise). Speed does not depend on it.

All three engines run the same exported model (``rationalign.serving.export_onnx``: opset 17, dynamic axes,
int8 = ORT dynamic quantisation, per-channel QInt8 weights) with the same thread count, interleaved text by
text so load from other jobs on the shared machine hits all three alike.

    .venv/bin/python bench/onnx_speed.py            # full run (~3-6 min on 2 loaded cores)
    .venv/bin/python bench/onnx_speed.py --quick    # smoke run, results not written
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

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
from rationalign.serving.backends import OnnxBackend
from rationalign.serving.onnx_export import export_onnx

RESULTS = "serving"
DATASET = "banking77"


def centroid_head(clf: IntentClassifier, texts: list[str], labels: list[str], scale: float = 20.0) -> None:
    """Head weights = scale x L2-normalised class means of the L2-normalised mean-pooled embeddings."""
    ids = torch.tensor(clf.label_space.ids(labels))
    with torch.inference_mode():
        feats = []
        for start in range(0, len(texts), 64):
            batch = clf.encode(texts[start : start + 64])
            hidden = clf.model.backbone(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            feats.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
        feats = torch.cat(feats)
        centroids = torch.zeros(len(clf.label_space), feats.shape[1]).index_add_(0, ids, feats)
        clf.model.classifier.weight.copy_(torch.nn.functional.normalize(centroids, dim=-1) * scale)
        clf.model.classifier.bias.zero_()


def linear_flops_per_token(clf: IntentClassifier) -> float:
    """2 x the weights every token passes through (encoder linears); embeddings are look-ups."""
    body = clf.model.backbone.encoder
    return 2.0 * sum(m.weight.numel() for m in body.modules() if isinstance(m, torch.nn.Linear))


def attention_flops(batch: int, seq: int, hidden: int, layers: int) -> float:
    return 2.0 * 2.0 * batch * seq * seq * hidden * layers  # QK^T and AV


def percentiles(ms: list[float]) -> tuple[float, float, float]:
    a = np.asarray(ms)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--single", type=int, default=300, help="utterances timed one at a time")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=30, help="batches timed per engine")
    parser.add_argument("--agreement-n", type=int, default=0, help="test texts for agreement (0: all)")
    parser.add_argument("--quick", action="store_true", help="tiny run, nothing written")
    args = parser.parse_args(argv)
    if args.quick:
        args.single, args.batches, args.agreement_n = 20, 3, 100
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_at_start = os.getloadavg()[0]

    data = datasets_root() / DATASET
    train_texts, train_labels = load_jsonl(data / "train_5.jsonl")
    test_texts, test_labels = load_jsonl(data / "test.jsonl")
    space = LabelSpace.from_labels(test_labels)
    clf = IntentClassifier.from_base("minilm-l6", space, seed=0)
    clf.model.eval()
    centroid_head(clf, train_texts, train_labels)

    with tempfile.TemporaryDirectory(prefix="onnx-speed-") as tmp:
        model_dir = clf.save(Path(tmp) / "student")
        start = time.perf_counter()
        export = export_onnx(model_dir, Path(tmp) / "export", int8=True)
        export_s = time.perf_counter() - start
        engines = {
            "pytorch": lambda texts: clf.logits(texts, batch_size=len(texts)).numpy(),
            "onnxruntime-fp32": OnnxBackend(export.out_dir, threads=args.threads).logits,
            "onnxruntime-int8": OnnxBackend(export.out_dir, int8=True, threads=args.threads).logits,
        }
        sizes = {
            "pytorch": (model_dir / "model.safetensors").stat().st_size,
            "onnxruntime-fp32": export.onnx_path.stat().st_size,
            "onnxruntime-int8": export.int8_path.stat().st_size,
        }
        rng = np.random.default_rng(0)
        names = list(engines)
        for fn in engines.values():  # warm-up: first calls allocate and pick kernels
            for _ in range(3):
                fn(test_texts[:8])
                fn(test_texts[:1])

        # Single utterances, interleaved (rotating order) so background load hits every engine alike.
        single_ms: dict[str, list[float]] = {n: [] for n in names}
        picks = rng.choice(len(test_texts), size=args.single, replace=False)
        for j, i in enumerate(picks):
            for n in names[j % 3 :] + names[: j % 3]:
                t0 = time.perf_counter()
                engines[n]([test_texts[i]])
                single_ms[n].append((time.perf_counter() - t0) * 1000.0)

        # Batches of unsorted test texts (padding as real traffic would have it).
        batch_ms: dict[str, list[float]] = {n: [] for n in names}
        flops: dict[str, float] = {n: 0.0 for n in names}
        per_token = linear_flops_per_token(clf)
        cfg = clf.model.config
        for j in range(args.batches):
            idx = rng.choice(len(test_texts), size=args.batch_size, replace=False)
            texts = [test_texts[i] for i in idx]
            seq = clf.encode(texts)["input_ids"].shape[1]
            work = per_token * args.batch_size * seq + attention_flops(
                args.batch_size, seq, cfg.hidden_size, cfg.num_hidden_layers
            )
            for n in names[j % 3 :] + names[: j % 3]:
                t0 = time.perf_counter()
                engines[n](texts)
                batch_ms[n].append((time.perf_counter() - t0) * 1000.0)
                flops[n] += work

        # Argmax agreement with PyTorch (and accuracy against the gold labels) on the test split.
        n_agree = args.agreement_n or len(test_texts)
        texts = test_texts[:n_agree]
        gold = np.asarray(space.ids(test_labels[:n_agree]))
        predictions = {}
        for n in names:
            out = [engines[n](texts[s : s + 64]) for s in range(0, len(texts), 64)]
            predictions[n] = np.concatenate(out).argmax(1)
        peak = matmul_peak_gflops()

    today = dt.date.today().isoformat()
    machine = f"{machine_info()}, load avg {load_at_start:.1f} at start"
    command = command_line()
    rows: list[Row] = []

    def add(setting: str, method: str, metric: str, value: float) -> None:
        rows.append(Row(DATASET, setting, method, metric, float(value), 0.0, 1, command, today, machine))

    setting_single = f"onnx-speed: 1 utterance, {args.threads} thread(s), {args.single} test texts"
    setting_batch = f"onnx-speed: batch {args.batch_size}, {args.threads} thread(s), {args.batches} batches"
    setting_agree = f"onnx-speed: argmax vs pytorch, {n_agree} test texts"
    print(
        f"machine: {machine}\nexport (fp32 + int8, verified): {export_s:.1f} s; matmul peak {peak:.1f} GFLOP/s"
    )
    print(
        f"{'engine':<18}{'1-utt p50':>10}{'p99':>8}{'batch p50':>11}{'texts/s':>9}{'GFLOP/s':>9}{'agree':>8}"
        f"{'acc':>7}{'MB':>6}"
    )
    for n in names:
        p50, p99, _ = percentiles(single_ms[n])
        b50, b99, bmean = percentiles(batch_ms[n])
        throughput = args.batch_size / (bmean / 1000.0)
        gflops = flops[n] / (sum(batch_ms[n]) / 1000.0) / 1e9
        agree = float((predictions[n] == predictions["pytorch"]).mean())
        accuracy = float((predictions[n] == gold).mean())
        print(
            f"{n:<18}{p50:>10.2f}{p99:>8.2f}{b50:>11.1f}{throughput:>9.0f}{gflops:>9.1f}{agree:>8.3f}"
            f"{accuracy:>7.3f}{sizes[n] / 2**20:>6.0f}"
        )
        add(setting_single, n, "p50_ms", p50)
        add(setting_single, n, "p99_ms", p99)
        add(setting_batch, n, "batch_p50_ms", b50)
        add(setting_batch, n, "batch_p99_ms", b99)
        add(setting_batch, n, "texts_per_s", throughput)
        add(setting_batch, n, "gflops", gflops)
        add(setting_batch, n, "share_of_matmul_peak", gflops / peak)
        add(setting_agree, n, "argmax_agreement", agree)
        add(setting_agree, n, "accuracy_centroid_head", accuracy)
        add(setting_agree, n, "model_mb", sizes[n] / 2**20)
    add(setting_batch, "matmul", "peak_gflops", peak)
    for n in names[1:]:
        add(
            setting_single,
            f"{n} vs pytorch",
            "speedup_p50",
            percentiles(single_ms["pytorch"])[0] / percentiles(single_ms[n])[0],
        )
        add(
            setting_batch,
            f"{n} vs pytorch",
            "speedup_throughput",
            percentiles(batch_ms["pytorch"])[2] / percentiles(batch_ms[n])[2],
        )
    if args.quick:
        print("--quick: results not written")
        return
    print(f"wrote {write_results(RESULTS, rows)}")


if __name__ == "__main__":
    main()
