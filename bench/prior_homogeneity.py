"""How homogeneous are the priors? Mean pairwise Spearman between IG, LIME and CAP (the paper's finding).

Reads the priors a distillation config computed (the prior store; nothing is recomputed when present) for
the training utterances, and reports the mean per-utterance Spearman between every pair of methods, over
all utterances and over the utterances of confusable intents (label pairs the teacher confuses most on
the validation split). Also the share of utterances whose top word is the same for every method.

    .venv/bin/python bench/prior_homogeneity.py --config examples/distill/banking77_10shot.yaml
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
    args = parser.parse_args()
    cfg = build(
        DistillRunConfig,
        apply_overrides(load_yaml(args.config), ["priors.methods=[ig,lime,cap]"]),
        args.config,
    )
    bundle = load_data(cfg.data)
    run_dir = Path(cfg.output_dir)
    teacher = _teacher(cfg, bundle, run_dir)
    per_method, _ = compute_method_priors(cfg, teacher, bundle, run_dir)
    labels = bundle.label_space
    valid_pred = teacher.predict_proba(bundle.valid.texts).argmax(1)
    pairs = most_confused_pairs(
        confusion_matrix(bundle.valid.label_ids(labels), valid_pred, len(labels)),
        labels.names,
        args.top_pairs,
    )
    confusable = {p.true_label for p in pairs} | {p.predicted_label for p in pairs}
    everything = list(range(len(bundle.train)))
    confused_rows = [i for i, e in enumerate(bundle.train) if e.label in confusable]
    dataset = str(cfg.data.path)
    setting = f"{cfg.data.train_split.split('_')[-1]}-shot" if cfg.data.train_split != "train" else "full"
    machine, cmd, today = machine_info(), command_line(), date.today().isoformat()
    rows = []
    for subset, idx in (("all train utterances", everything), ("confusable intents", confused_rows)):
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
                "ig = lime = cap",
                "top_word_agreement",
                round(100 * float(np.mean(top_same)), 1),
                0.0,
                1,
                cmd,
                today,
                machine,
            )
        )
        print(subset, len(idx), {r.method: r.value for r in rows[-4:]}, flush=True)
    write_results("prior_homogeneity", rows)


if __name__ == "__main__":
    main()
