"""What the alignment term costs per training step, against cross-entropy (the issue's 1.5x budget).

The MiniLM-L6 student, Banking77 10-shot utterances (the shipped ``train_10``), batch 16, the trainer's own
optimizer (fused AdamW) and objective code (``DistillationObjective``), ``--steps`` timed steps after two
warm-up steps, the same batches for every variant. Priors and soft labels are random: the cost does not
depend on their values. Variants: CE; CE + KD; + gradient x input alignment on every row and on a fraction
of each batch's rows (``distill.align_fraction``); + IG-k alignment.

``--precisions float32 bfloat16`` repeats every variant under bfloat16 autocast (``train.precision``).

    .venv/bin/python bench/align_cost.py --precisions float32 bfloat16
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
from _common import Row, command_line, datasets_root, load_jsonl, machine_info, write_results
from rationalign.attribution.words import split_words
from rationalign.data.types import LabelSpace
from rationalign.models.classifier import IntentClassifier
from rationalign.precision import PRECISIONS
from rationalign.training.distill import DistillationObjective, DistillConfig
from rationalign.training.objectives import Batch

VARIANTS: dict[str, dict | None] = {
    "CE": None,
    "CE + KD": {"lam": 0.0},
    "+ gxi alignment (all rows)": {},
    "+ gxi alignment (align_fraction 0.5)": {"align_fraction": 0.5},
    "+ gxi alignment (align_fraction 0.25)": {"align_fraction": 0.25},
    "+ IG-4 alignment": {"attribution": "ig", "ig_steps": 4},
    "+ IG-8 alignment": {"attribution": "ig", "ig_steps": 8},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", nargs="+", default=["float32"], choices=PRECISIONS)
    args = parser.parse_args()
    machine, today, cmd = machine_info(), date.today().isoformat(), command_line()
    rows: list[Row] = []
    for precision in args.precisions:
        rows.extend(measure(args, precision, machine, today, cmd))
    write_results("align_cost", rows)


def measure(args: argparse.Namespace, precision: str, machine: str, today: str, cmd: str) -> list[Row]:
    torch.set_num_threads(args.threads)
    texts, names = load_jsonl(datasets_root() / "banking77" / "train_10.jsonl")
    space = LabelSpace.from_labels(names)
    labels = space.ids(names)
    rng = np.random.default_rng(0)
    soft = rng.dirichlet(np.ones(len(space)), size=len(texts))
    priors = [rng.random(len(split_words(t))) + 0.1 for t in texts]
    batches = [rng.choice(len(texts), 16, replace=False) for _ in range(args.steps + 2)]
    timings: dict[str, float] = {}
    # The first variant measured would also pay for warming up allocator and kernels: run CE once untimed.
    for name, overrides in [("warm-up", None), *VARIANTS.items()]:
        torch.manual_seed(0)
        clf = IntentClassifier.from_base("minilm-l6", space)
        clf.precision = precision
        clf.model.train()
        opt = torch.optim.AdamW(clf.model.parameters(), lr=1e-5, fused=True)
        objective = None
        if overrides is not None:
            objective = DistillationObjective(DistillConfig(**overrides), soft_labels=soft, priors=priors)
        per_step = []
        for step, idx in enumerate(batches):
            batch_texts = [texts[i] for i in idx]
            enc = clf.encode(batch_texts)
            batch = Batch(
                enc["input_ids"],
                enc["attention_mask"],
                torch.tensor([labels[i] for i in idx]),
                torch.as_tensor(idx),
                batch_texts,
            )
            start = time.perf_counter()
            with clf.autocast():  # as the trainer does
                if objective is None:
                    loss = torch.nn.functional.cross_entropy(
                        clf.model(**batch.model_inputs()).logits, batch.labels
                    )
                else:
                    loss = objective(clf, batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if step >= 2:
                per_step.append(time.perf_counter() - start)
        if name == "warm-up":
            continue
        timings[name] = statistics.median(per_step)
        print(
            f"{precision} {name}: {1000 * timings[name]:.0f} ms/step ({timings[name] / timings['CE']:.2f}x CE)",
            flush=True,
        )
    setting = f"banking77 train_10, batch 16, MiniLM-L6, {args.threads} threads, median of {args.steps} steps"
    if precision != "float32":
        setting += f", {precision}"
    rows = []
    for name, seconds in timings.items():
        rows.append(
            Row(
                "banking77",
                setting,
                name,
                "ms_per_step",
                round(1000 * seconds, 1),
                0.0,
                1,
                cmd,
                today,
                machine,
            )
        )
        rows.append(
            Row(
                "banking77",
                setting,
                name,
                "x_ce_step",
                round(seconds / timings["CE"], 3),
                0.0,
                1,
                cmd,
                today,
                machine,
            )
        )
    return rows


if __name__ == "__main__":
    main()
