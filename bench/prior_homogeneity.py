"""How homogeneous are the priors? Mean pairwise Spearman between IG, LIME, CAP and SHAP (the paper's finding).

Reads the priors a distillation config computed (the prior store; nothing is recomputed when present) for
the training utterances (or the first ``--n`` of the test split), and reports the mean per-utterance
Spearman between every pair of methods, over all utterances and over the utterances of confusable intents
(label pairs the teacher confuses most on the validation split). Also the share of utterances whose top
word is the same for every method. ``--set`` overrides config fields, e.g. the teacher.

    .venv/bin/python bench/prior_homogeneity.py --config examples/distill/banking77_10shot.yaml
    .venv/bin/python bench/prior_homogeneity.py --config examples/distill/hwu64_10shot.yaml --split test \
        --n 200 --methods ig lime cap shap --set teacher.spec=model:runs/bench/hwu64-10-shot-minilm-l6-ce-s0/model
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from datetime import date
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, command_line, machine_info, write_results
from rationalign.config import apply_overrides, build, load_yaml
from rationalign.data.io import load_data
from rationalign.evaluation.metrics import confusion_matrix, most_confused_pairs
from rationalign.pipeline import DistillRunConfig, _teacher, compute_method_priors


def pairwise(per_method: dict[str, list], rows: list[int]) -> dict[str, float]:
    out = {}
    for a, b in itertools.combinations(per_method, 2):
        values = []
        for i in rows:
            x, y = per_method[a][i].scores, per_method[b][i].scores
            if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
                values.append(spearmanr(x, y).statistic)
        out[f"{a} vs {b}"] = statistics.mean(values) if values else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--top-pairs", type=int, default=10, help="confusable label pairs to keep")
    parser.add_argument("--methods", nargs="+", default=["ig", "lime", "cap"])
    parser.add_argument("--split", choices=["train", "test"], default="train")
    parser.add_argument("--n", type=int, default=None, help="only the first n utterances of the split")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides, a.b=value")
    args = parser.parse_args()
    overrides = [f"priors.methods=[{','.join(args.methods)}]", *args.set]
    cfg = build(DistillRunConfig, apply_overrides(load_yaml(args.config), overrides), args.config)
    bundle = load_data(cfg.data)
    run_dir = Path(cfg.output_dir)
    teacher = _teacher(cfg, bundle, run_dir)
    split = bundle.train if args.split == "train" else bundle.test
    assert split is not None
    if args.n is not None:
        split = split.subset(range(min(args.n, len(split))))
    per_method, _ = compute_method_priors(cfg, teacher, bundle, run_dir, dataset=split)
    labels = bundle.label_space
    valid_pred = teacher.predict_proba(bundle.valid.texts).argmax(1)
    pairs = most_confused_pairs(
        confusion_matrix(bundle.valid.label_ids(labels), valid_pred, len(labels)),
        labels.names,
        args.top_pairs,
    )
    confusable = {p.true_label for p in pairs} | {p.predicted_label for p in pairs}
    everything = list(range(len(split)))
    confused_rows = [i for i, e in enumerate(split) if e.label in confusable]
    dataset = str(cfg.data.path)
    setting = f"{cfg.data.train_split.split('_')[-1]}-shot" if cfg.data.train_split != "train" else "full"
    setting += " teacher" if args.split == "test" else ""
    scope = "train utterances" if args.split == "train" else f"first {len(split)} test utterances"
    machine, cmd, today = machine_info(), command_line(), date.today().isoformat()
    rows = []
    for subset, idx in ((f"all {scope}", everything), (f"{scope}, confusable intents", confused_rows)):
        for pair, value in pairwise(per_method, idx).items():
            rows.append(
                Row(
                    dataset,
                    f"{setting}, {subset}",
                    pair,
                    "mean_spearman",
                    round(value, 3),
                    0.0,
                    1,
                    cmd,
                    today,
                    machine,
                )
            )
        top_same = [len({int(np.argmax(per_method[m][i].scores)) for m in per_method}) == 1 for i in idx]
        rows.append(
            Row(
                dataset,
                f"{setting}, {subset}",
                " = ".join(per_method),
                "top_word_agreement",
                round(100 * float(np.mean(top_same)), 1),
                0.0,
                1,
                cmd,
                today,
                machine,
            )
        )
        n_pairs = len(per_method) * (len(per_method) - 1) // 2
        print(subset, len(idx), {r.method: r.value for r in rows[-(n_pairs + 1) :]}, flush=True)
    write_results("prior_homogeneity", rows)


if __name__ == "__main__":
    main()
