"""Which `teacher.self_train.min_confidence`? Chosen on validation, from one round-1 teacher per threshold.

Self-training keeps the transfer texts the base teacher is at least `min_confidence` sure of, and trains a
new teacher on them and the labelled rows. A lower threshold keeps more texts and more wrong labels; a
higher one keeps fewer, cleaner ones. A user without gold labels for the transfer texts picks the
threshold whose round-1 teacher has the best **validation** accuracy (ties go to the higher threshold,
which keeps fewer texts and trains faster). The test accuracy of every teacher is reported for reading and
never chooses anything. Each threshold's round-1 folder is the one `rationalign distill` would use with that
threshold, so the pick is reused as it is by the distillation (and a threshold already run is not
retrained). Pass the same config and `--set` overrides as the `bench/distill_grid.py` run:

    .venv/bin/python bench/self_train_threshold.py --config examples/distill/hwu64_5shot.yaml \
        --thresholds 0.8 0.9 0.95 --set transfer.split=train \
        transfer.store=runs/priors/hwu64-5shot.sqlite teacher.self_train.epochs=2
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, command_line, machine_info, write_results
from distill_grid import dataset_and_setting
from rationalign.config import apply_overrides, build, load_yaml
from rationalign.data.io import load_data
from rationalign.data.transfer import load_transfer_set
from rationalign.errors import ConfigError
from rationalign.pipeline import DistillRunConfig, run_self_training
from rationalign.training.run import MANIFEST


def pick_threshold(valid_by_threshold: dict[float, float]) -> float:
    """The threshold with the best validation accuracy; a tie goes to the higher threshold."""
    return max(valid_by_threshold, key=lambda t: (valid_by_threshold[t], t))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", nargs="*", default=[], help="config overrides, a.b=value")
    parser.add_argument("--thresholds", nargs="+", type=float, default=[0.8, 0.9, 0.95])
    args = parser.parse_args()
    base = apply_overrides(load_yaml(args.config), args.set)
    dataset, setting = dataset_and_setting(base)
    machine, cmd, today = machine_info(), command_line(), date.today().isoformat()
    rows: list[Row] = []
    valid: dict[float, float] = {}

    def add(method: str, metric: str, value: float) -> None:
        rows.append(
            Row(dataset, setting, method, metric, round(float(value), 2), 0.0, 1, cmd, today, machine)
        )
        print(f"{method:32s} {metric:34s} {value:10.2f}", flush=True)

    def config(threshold: float) -> DistillRunConfig:
        overrides = [f"teacher.self_train.min_confidence={threshold}", "teacher.self_train.rounds=1"]
        return build(DistillRunConfig, apply_overrides(base, overrides), args.config)

    # the data and the transfer set are the same for every threshold: read them once
    first_cfg = config(args.thresholds[0])
    if first_cfg.transfer is None or first_cfg.teacher.self_train is None:
        raise ConfigError(
            "self_train_threshold: the config needs a transfer set and teacher.self_train; fix: --set "
            "transfer.split=train teacher.self_train.epochs=2"
        )
    bundle = load_data(first_cfg.data)
    transfer = load_transfer_set(first_cfg.transfer, bundle, first_cfg.data.path)
    for threshold in args.thresholds:
        cfg = config(threshold)
        rounds = run_self_training(cfg, bundle, transfer, Path(cfg.output_dir)).rounds
        first = rounds[0]
        manifest = json.loads((Path(first["dir"]) / MANIFEST).read_text(encoding="utf-8"))
        method = f"round-1 teacher, min_confidence {threshold}"
        valid[threshold] = 100 * first["best_valid_accuracy"]
        add(method, "kept", first["kept"])
        add(method, "kept %", 100 * first["kept"] / first["of"])
        add(method, "valid accuracy", valid[threshold])
        add(method, "test accuracy", 100 * first["test_accuracy"])
        add(method, "train s", manifest["wall_seconds"])
    chosen = pick_threshold(valid)
    add("validation pick", "min_confidence", chosen)
    write_results("self_train_threshold", rows)


if __name__ == "__main__":
    main()
