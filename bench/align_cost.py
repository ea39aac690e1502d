"""What the alignment term costs per training step, against cross-entropy (the issue's 1.5x budget).

The MiniLM-L6 student, Banking77 10-shot utterances (the shipped ``train_10``), batch 16, the trainer's own
optimizer (fused AdamW) and objective code (``DistillationObjective``), ``--steps`` timed steps after two
warm-up steps, the same batches for every variant, each step as the trainer takes it (tokenise, loss,
backward, clip, AdamW: ``train_steps``, shared with the other modes); the median step is reported.
Priors and soft labels are random: the cost does not depend on their values. Variants: CE; CE + KD; + gradient x input alignment on every row and on a fraction
of each batch's rows (``distill.align_fraction``) or on one step in k (``distill.align_every``, epoch mode
only); + IG-k alignment.

``--precisions float32 bfloat16`` repeats every variant under bfloat16 autocast (``train.precision``).

``--epochs R`` times whole epochs instead (the issue's budget is per epoch): every utterance of ``train_10``
once, in one shuffled order, each step as the trainer takes it (tokenise, loss, backward, clip, AdamW), a
fresh student per (round, variant), the variants' order rotated each round so drift on a shared machine
falls on all of them; mean and std over the R rounds. IG variants are left out of epoch mode (one IG-8
epoch is about 15 CE epochs). ``--profile`` then prints the operators that take a CE and an aligned epoch's
time (torch.profiler, one more epoch each, untimed).

    .venv/bin/python bench/align_cost.py --precisions float32 bfloat16
    .venv/bin/python bench/align_cost.py --precisions bfloat16 float32 --epochs 3 --profile

``--op-times`` instead clocks every operator of ``--steps`` trainer steps of CE and of aligned training
(all rows): calls, milliseconds and share per step, and the matrix products' throughput in GFLOP/s.

    .venv/bin/python bench/align_cost.py --precisions float32 bfloat16 --op-times --steps 12
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

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
    "+ gxi alignment (align_every 2)": {"align_every": 2},
    "+ gxi alignment (align_every 3)": {"align_every": 3},
    "+ IG-4 alignment": {"attribution": "ig", "ig_steps": 4},
    "+ IG-8 alignment": {"attribution": "ig", "ig_steps": 8},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", nargs="+", default=["float32"], choices=PRECISIONS)
    parser.add_argument("--epochs", type=int, default=0, help="time R rounds of whole epochs (0: steps)")
    parser.add_argument(
        "--profile", action="store_true", help="with --epochs: print where an epoch's time goes"
    )
    parser.add_argument(
        "--op-times",
        action="store_true",
        help="instead: time every operator of --steps trainer steps of CE and of aligned training",
    )
    args = parser.parse_args()
    machine, today, cmd = machine_info(), date.today().isoformat(), command_line()
    rows: list[Row] = []
    for precision in args.precisions:
        measured = measure_operators if args.op_times else measure_epochs if args.epochs else measure
        rows.extend(measured(args, precision, machine, today, cmd))
    write_results("align_cost", rows)


class Workload(NamedTuple):
    """Banking77 ``train_10`` with random soft labels and priors, and the generator that drew them."""

    texts: list[str]
    space: LabelSpace
    labels: torch.Tensor
    soft: np.ndarray
    priors: list[np.ndarray]
    rng: np.random.Generator


def workload() -> Workload:
    texts, names = load_jsonl(datasets_root() / "banking77" / "train_10.jsonl")
    space = LabelSpace.from_labels(names)
    rng = np.random.default_rng(0)
    soft = rng.dirichlet(np.ones(len(space)), size=len(texts))
    priors = [rng.random(len(split_words(t))) + 0.1 for t in texts]
    return Workload(texts, space, torch.tensor(space.ids(names)), soft, priors, rng)


def fresh_student(space: LabelSpace, precision: str) -> tuple[IntentClassifier, torch.optim.Optimizer]:
    """The same initial student for every variant, in train mode, with the trainer's optimizer."""
    torch.manual_seed(0)
    clf = IntentClassifier.from_base("minilm-l6", space)
    clf.precision = precision
    clf.model.train()
    return clf, torch.optim.AdamW(clf.model.parameters(), lr=1e-5, fused=True)


def make_batch(clf: IntentClassifier, work: Workload, idx: np.ndarray, step: int) -> Batch:
    batch_texts = [work.texts[i] for i in idx]
    enc = clf.encode(batch_texts)
    return Batch(
        enc["input_ids"], enc["attention_mask"], work.labels[idx], torch.as_tensor(idx), batch_texts, step
    )


def objective_for(work: Workload, overrides: dict | None) -> DistillationObjective:
    """The library's objective for a variant (CE: KD and alignment off)."""
    config = DistillConfig(**({"alpha": 0.0, "lam": 0.0} if overrides is None else overrides))
    return DistillationObjective(config, soft_labels=work.soft, priors=work.priors)


def train_steps(
    clf: IntentClassifier,
    opt: torch.optim.Optimizer,
    objective: DistillationObjective,
    work: Workload,
    batches: list[np.ndarray],
) -> list[float]:
    """One step per batch as the trainer takes it: tokenise, loss under autocast, backward, clip, AdamW.
    Returns each step's wall seconds (epoch mode sums them, step mode takes their median)."""
    seconds = []
    for step, idx in enumerate(batches):
        start = time.perf_counter()
        batch = make_batch(clf, work, idx, step)
        with clf.autocast():
            loss = objective(clf, batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clf.model.parameters(), 1.0)
        opt.step()
        seconds.append(time.perf_counter() - start)
    return seconds


def result_rows(
    setting: str,
    values: dict[str, list[float]],
    metrics: tuple[str, str],
    scale: float,
    digits: int,
    provenance: tuple[str, str, str],
) -> list[Row]:
    """Two rows per variant: the mean of ``values`` times ``scale`` (rounded to ``digits``), and its ratio
    to CE's mean (3 digits); the std over the values beside each, and their count as ``n_seeds``."""
    ce = statistics.mean(values["CE"])
    rows = []
    for name, measured in values.items():
        mean = statistics.mean(measured)
        std = statistics.stdev(measured) if len(measured) > 1 else 0.0
        for metric, value, spread in (
            (metrics[0], mean * scale, std * scale),
            (metrics[1], mean / ce, std / ce),
        ):
            rows.append(
                Row(
                    "banking77",
                    setting,
                    name,
                    metric,
                    round(value, digits if metric == metrics[0] else 3),
                    round(spread, 3),
                    len(measured),
                    *provenance,
                )
            )
    return rows


def measure(args: argparse.Namespace, precision: str, machine: str, today: str, cmd: str) -> list[Row]:
    torch.set_num_threads(args.threads)
    work = workload()
    batches = [work.rng.choice(len(work.texts), 16, replace=False) for _ in range(args.steps + 2)]
    timings: dict[str, float] = {}
    # The first variant measured would also pay for warming up allocator and kernels: run CE once untimed.
    # A median of single steps says nothing of a variant that aligns one step in k: epoch mode times those.
    variants = [(name, v) for name, v in VARIANTS.items() if v is None or "align_every" not in v]
    for name, overrides in [("warm-up", None), *variants]:
        clf, opt = fresh_student(work.space, precision)
        per_step = train_steps(clf, opt, objective_for(work, overrides), work, batches)[2:]
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
    medians = {name: [seconds] for name, seconds in timings.items()}
    return result_rows(setting, medians, ("ms_per_step", "x_ce_step"), 1000, 1, (cmd, today, machine))


def measure_epochs(args: argparse.Namespace, precision: str, machine: str, today: str, cmd: str) -> list[Row]:
    torch.set_num_threads(args.threads)
    work = workload()
    order = work.rng.permutation(len(work.texts))
    batches = [order[i : i + 16] for i in range(0, len(work.texts), 16)]
    variants = {name: v for name, v in VARIANTS.items() if v is None or v.get("attribution") != "ig"}

    def one_epoch(name: str, steps: list[np.ndarray]) -> float:
        """Seconds for ``steps`` trainer steps of a fresh student (model loading is not timed)."""
        clf, opt = fresh_student(work.space, precision)
        objective = objective_for(work, variants[name])
        start = time.perf_counter()
        train_steps(clf, opt, objective, work, steps)
        return time.perf_counter() - start

    names_in_order = list(variants)
    for name in names_in_order:  # warm-up: allocator, kernels and each variant's shapes, untimed
        one_epoch(name, batches[:4])
    seconds: dict[str, list[float]] = {name: [] for name in names_in_order}
    for round_ in range(args.epochs):
        shift = round_ % len(names_in_order)
        for name in names_in_order[shift:] + names_in_order[:shift]:
            seconds[name].append(one_epoch(name, batches))
            print(f"{precision} round {round_ + 1} {name}: {seconds[name][-1]:.1f} s/epoch", flush=True)
    if args.profile:  # where an epoch's time goes, after the timed rounds (the profiler slows what it sees)
        for name in ("CE", "+ gxi alignment (all rows)"):
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                one_epoch(name, batches)
            print(f"{precision} {name}, one epoch, by operator:")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    setting = (
        f"banking77 train_10, one epoch ({len(batches)} steps of 16), MiniLM-L6, {args.threads} threads, "
        f"{args.epochs} rounds"
    )
    if precision != "float32":
        setting += f", {precision}"
    ce = statistics.mean(seconds["CE"])
    for name, values in seconds.items():
        mean = statistics.mean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{precision} {name}: {mean:.1f} ± {std:.1f} s/epoch ({mean / ce:.2f}x CE)", flush=True)
    return result_rows(setting, seconds, ("s_per_epoch", "x_ce_epoch"), 1, 3, (cmd, today, machine))


MATMULS = ("mm", "addmm", "bmm")


def matmul_flops(name: str, args: tuple) -> float:
    """Floating-point operations of one matrix product (2 m k n, times the batch for bmm)."""
    a, b = (args[1], args[2]) if name == "addmm" else (args[0], args[1])
    batch = a.shape[0] if name == "bmm" else 1
    return 2.0 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1]


class OperatorClock(TorchDispatchMode):
    """Wall time and calls of every ATen operator run under it (forward and backward), and the matrix
    products' FLOPs. Each call is timed on its own, so small element-wise operators are not charged for
    the profiler's bookkeeping (torch.profiler's self times inflate them several-fold on this VM)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.matmul_flops = 0.0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        self.seconds[name] += time.perf_counter() - start
        self.calls[name] += 1
        if name in MATMULS:
            self.matmul_flops += matmul_flops(name, args)
        return out


def measure_operators(
    args: argparse.Namespace, precision: str, machine: str, today: str, cmd: str
) -> list[Row]:
    """Where a CE step's and an aligned step's time goes, operator by operator (``--op-times``)."""
    torch.set_num_threads(args.threads)
    work = workload()
    order = work.rng.permutation(len(work.texts))
    batches = [order[i : i + 16] for i in range(0, len(work.texts), 16)][: args.steps + 3]
    setting = (
        f"banking77 train_10, batch 16, MiniLM-L6, {args.threads} threads, operators of {args.steps} steps"
    )
    if precision != "float32":
        setting += f", {precision}"
    rows = []
    for name in ("CE", "+ gxi alignment (all rows)"):
        clf, opt = fresh_student(work.space, precision)
        objective = objective_for(work, VARIANTS[name])
        train_steps(clf, opt, objective, work, batches[:3])  # warm-up, not clocked
        clock = OperatorClock()
        with clock:
            train_steps(clf, opt, objective, work, batches[3:])
        total = sum(clock.seconds.values())
        matmul = sum(clock.seconds[m] for m in MATMULS)
        steps = len(batches) - 3
        print(f"{precision} {name}: {1000 * total / steps:.0f} ms of operators per step; by operator:")
        for op, seconds in clock.seconds.most_common(10):
            print(
                f"  {op:28s} {clock.calls[op] / steps:6.1f} calls/step {1000 * seconds / steps:7.1f} ms/step"
                f" {100 * seconds / total:5.1f}%"
            )
        measured = {
            "operator_ms_per_step": 1000 * total / steps,
            "matmul_calls_per_step": sum(clock.calls[m] for m in MATMULS) / steps,
            "matmul_share_percent": 100 * matmul / total,
            "matmul_gflops": clock.matmul_flops / matmul / 1e9,
        }
        print(
            f"  matrix products: {measured['matmul_share_percent']:.0f}% of operator time, "
            f"{measured['matmul_gflops']:.0f} GFLOP/s",
            flush=True,
        )
        rows += [
            Row("banking77", setting, name, metric, round(value, 1), 0.0, 1, cmd, today, machine)
            for metric, value in measured.items()
        ]
    return rows


if __name__ == "__main__":
    main()
