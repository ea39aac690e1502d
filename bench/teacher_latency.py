"""Single-utterance latency of the teachers (model forward only, PyTorch, 1 thread), for the serving ratio.

The student's figure to compare with is the end-to-end HTTP p50 of `bench/serving_load.py` (which also pays
for tokenisation, HTTP and JSON); the teachers here pay for the model alone, so the ratio is conservative.

    .venv/bin/python bench/teacher_latency.py
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, command_line, datasets_root, load_jsonl, machine_info, write_results
from rationalign.data.types import LabelSpace
from rationalign.models.classifier import IntentClassifier


def main() -> None:
    torch.set_num_threads(1)
    texts, labels = load_jsonl(datasets_root() / "banking77" / "test.jsonl")
    space = LabelSpace.from_labels(labels)
    sample = texts[:60]
    rows = []
    for name, label in (
        ("smollm2-135m", "SmolLM2-135M LM classifier"),
        ("mpnet-base", "MPNet-base classifier"),
        ("minilm-l6", "MiniLM-L6 student (PyTorch)"),
    ):
        clf = IntentClassifier.from_base(name, space)
        for t in sample[:5]:
            clf.logits([t])  # warm-up
        times = []
        for t in sample:
            start = time.perf_counter()
            clf.logits([t])
            times.append(1000 * (time.perf_counter() - start))
        p50, p99 = statistics.median(times), float(np.percentile(times, 99))
        print(
            f"{label}: p50 {p50:.1f} ms  p99 {p99:.1f} ms  ({clf.num_parameters() / 1e6:.1f}M parameters)",
            flush=True,
        )
        for metric, value in (("single_p50_ms", p50), ("single_p99_ms", p99)):
            rows.append(
                Row(
                    "banking77",
                    "1 utterance, model only, 1 thread",
                    label,
                    metric,
                    round(value, 2),
                    0.0,
                    1,
                    command_line(),
                    date.today().isoformat(),
                    machine_info(),
                )
            )
    write_results("teacher_latency", rows)


if __name__ == "__main__":
    main()
