"""Cross-entropy baselines of the student (and teachers) on Banking77, HWU64 and CLINC150.

Fine-tunes a backbone with `rationalign.training.run.train_run` on full data or k-shot splits and reports
test accuracy and macro-F1 (percent). Few-shot seeds follow bench/baselines.py: seed 0 trains on the
shipped ``train_<k>.jsonl``, seeds 1, 2, ... resample k per label from the full train split with
``sample_k_shot``; the seed also sets head initialisation, dropout and data order. Hyper-parameters are
fixed per setting (below), chosen on validation only; early stopping and the kept checkpoint use the
validation split. The test split is read once, at the end of each run.

    .venv/bin/python bench/student_ce.py --datasets banking77 --settings 10-shot --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    REPO_ROOT,
    Row,
    command_line,
    datasets_root,
    machine_info,
    markdown_table,
    read_results,
    write_results,
)
from rationalign.data.io import DataConfig
from rationalign.precision import PRECISIONS
from rationalign.training.config import TrainConfig
from rationalign.training.run import RunConfig, train_run

# Per setting: (epochs, batch size, backbone lr, head lr, patience). Learning rates and batch sizes were chosen
# on validation accuracy; the epoch budgets are what this 2-core CPU affords (about 35 training examples/s),
# and early stopping keeps the best validation epoch within them.
HYPER = {
    "full": (3, 32, 5e-5, 1e-3, 2),
    "10-shot": (5, 16, 1e-4, 3e-3, 4),
    "5-shot": (8, 16, 1e-4, 3e-3, 5),
}
# The 109M MPNet teacher: the backbone learning rate usual for base-size encoders (not swept here, for lack
# of CPU time), more epochs at 10-shot (validation was still rising at 5 in a trial), the same head lr.
# The Banking77 10-shot run doubles as the teacher of examples/distill/banking77_10shot.yaml.
MODEL_HYPER = {
    "mpnet-base": {
        "full": (3, 32, 3e-5, 1e-3, 2),
        "10-shot": (8, 16, 5e-5, 3e-3, 3),
        "5-shot": (10, 16, 5e-5, 3e-3, 4),
    },
}


def data_config(dataset: str, setting: str, seed: int) -> DataConfig:
    path = str(datasets_root() / dataset)
    if setting == "full":
        return DataConfig(path=path, seed=seed)
    k = int(setting.split("-")[0])
    if seed == 0:
        return DataConfig(path=path, train_split=f"train_{k}", seed=seed)
    return DataConfig(path=path, k_shot=k, seed=seed)


def summary_row(key: tuple[str, str, str], metric: str, values: list[float], cmd: str, machine: str) -> Row:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    mean = statistics.mean(values)
    return Row(
        *key, metric, round(mean, 2), round(std, 2), len(values), cmd, date.today().isoformat(), machine
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["banking77", "hwu64", "clinc150"])
    parser.add_argument("--settings", nargs="+", default=["10-shot", "5-shot", "full"], choices=list(HYPER))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--model", default="minilm-l6", help="minilm-l6, mpnet-base, smollm2-135m or a folder"
    )
    parser.add_argument("--method-name", default=None, help="row label (default: <model> CE)")
    parser.add_argument("--epochs", type=int, default=None, help="override the per-setting epochs")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument(
        "--precision",
        default="float32",
        choices=PRECISIONS,
        help="train.precision (bfloat16: autocast, 2.5-3x faster on CPUs with AVX512-BF16/AMX)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs-dir", default=str(REPO_ROOT / "runs" / "bench"))
    parser.add_argument("--markdown", action="store_true", help="print BENCHMARKS.md's tables and exit")
    args = parser.parse_args()
    if args.markdown:
        rows = read_results("student_ce")
        for metric in ("accuracy", "macro_f1", "train_seconds"):
            print(f"**{metric}**\n")
            print(markdown_table(rows, metric, row_fields=("setting", "method"), columns=args.datasets))
        return
    torch.set_num_threads(args.threads)
    method = args.method_name or f"{args.model} CE" + (
        "" if args.precision == "float32" else f" ({args.precision})"
    )
    machine = machine_info()
    for dataset in args.datasets:
        for setting in args.settings:
            epochs, batch, lr, head_lr, patience = MODEL_HYPER.get(args.model, HYPER)[setting]
            seeds = args.seeds if setting != "full" else args.seeds[:1]
            acc, f1, secs, eps = [], [], [], []
            for seed in seeds:
                tag = "" if args.precision == "float32" else f"-{args.precision}"
                name = f"{dataset}-{setting}-{args.model.replace('/', '_')}-ce{tag}-s{seed}"
                out = Path(args.runs_dir) / name
                train = TrainConfig(
                    model=args.model,
                    epochs=args.epochs or epochs,
                    batch_size=batch,
                    lr=lr,
                    head_lr=head_lr,
                    patience=patience,
                    seed=seed,
                    max_length=args.max_length,
                    checkpoint_every=200,
                    threads=args.threads,
                    precision=args.precision,
                )
                cfg = RunConfig(data=data_config(dataset, setting, seed), train=train, output_dir=str(out))
                t0 = time.perf_counter()
                result = train_run(cfg, resume=(out / "checkpoint").exists(), progress=sys.stderr.isatty())
                secs.append(time.perf_counter() - t0)
                assert result.test is not None
                acc.append(100 * result.test.accuracy)
                f1.append(100 * result.test.macro_f1)
                eps.append(result.train.train_examples_per_second)
                print(
                    f"{dataset} {setting} seed {seed}: acc {acc[-1]:.2f} f1 {f1[-1]:.2f} ({secs[-1]:.0f}s)",
                    flush=True,
                )
            cmd = command_line(
                [
                    *sys.argv[:1],
                    "--datasets",
                    dataset,
                    "--settings",
                    setting,
                    "--seeds",
                    *map(str, seeds),
                    "--model",
                    args.model,
                    *(["--epochs", str(args.epochs)] if args.epochs else []),
                    *(["--precision", args.precision] if args.precision != "float32" else []),
                ]
            )

            write_results(
                "student_ce",
                [
                    summary_row((dataset, setting, method), name, values, cmd, machine)
                    for name, values in [
                        ("accuracy", acc),
                        ("macro_f1", f1),
                        ("train_seconds", secs),
                        ("train_examples_per_second", eps),
                    ]
                ],
            )


if __name__ == "__main__":
    main()
