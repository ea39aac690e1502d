"""Fidelity to a teacher's rationale and the divergence queue, for the cross-entropy 10-shot students.

A cross-entropy student has no teacher of its own, so the reference here is the stronger model we have for
each data set: the full-data MiniLM-L6 CE student (`bench/student_ce.py --settings full`) as a classifier
teacher, its rationale = Integrated Gradients (16 steps) of the gold label. On the first ``--n`` test
utterances this reports the 10-shot student's (seed 0) fidelity to that rationale (its gradient x input of
the same class): Spearman, Kendall, top-20% IoU and AUPRC; and the same with the student's own IG-16 (so a method mismatch can be told from a model mismatch); and the
divergence queue between the two models
(label disagreement, or rationale Spearman < ``--min-fidelity``), written to
``runs/divergence/<dataset>-10shot-vs-full.jsonl`` for review.

    .venv/bin/python bench/fidelity_ce.py --datasets banking77 hwu64 clinc150
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, Row, command_line, machine_info, write_results
from rationalign.attribution import GradientXInput, IntegratedGradients
from rationalign.data import DataConfig, load_data
from rationalign.evaluation.divergence import divergence_queue, write_queue
from rationalign.evaluation.fidelity import evaluate_fidelity
from rationalign.models.classifier import IntentClassifier
from rationalign.teachers.classifier import ClassifierTeacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["banking77", "hwu64", "clinc150"])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--min-fidelity", type=float, default=0.3)
    parser.add_argument("--runs-dir", default=str(REPO_ROOT / "runs" / "bench"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine, today, cmd = machine_info(), date.today().isoformat(), command_line()
    for dataset in args.datasets:
        runs = Path(args.runs_dir)
        student = IntentClassifier.load(runs / f"{dataset}-10-shot-minilm-l6-ce-s0" / "model")
        teacher_clf = IntentClassifier.load(runs / f"{dataset}-full-minilm-l6-ce-s0" / "model")
        teacher = ClassifierTeacher(teacher_clf)
        test = load_data(DataConfig(path=dataset)).test
        assert test is not None
        subset = test.subset(range(min(args.n, len(test))))
        gold = subset.label_ids(teacher.label_space)
        rationales = IntegratedGradients(teacher_clf, n_steps=16).attribute(subset.texts, gold)
        setting = f"first {len(subset)} test utterances, reference = full-data student's IG-16 (gold class)"
        rows = []
        # The student's own rationale by the suite's method (gradient x input) and by the reference's
        # method (IG-16), to tell a method mismatch from a model mismatch.
        for label, attributor in (
            ("gradient x input", GradientXInput(student)),
            ("IG-16", IntegratedGradients(student, n_steps=16)),
        ):
            mine = attributor.attribute(subset.texts, gold)
            report = evaluate_fidelity(mine, rationales).summary
            values = {
                "fidelity_spearman": report.spearman.mean,
                "fidelity_kendall": report.kendall.mean,
                "fidelity_top_k_iou": report.top_k_iou.mean,
                "fidelity_auprc": report.auprc.mean,
            }
            method = f"minilm-l6 CE student (train_10), {label}"
            rows += [
                Row(dataset, setting, method, k, round(float(v), 4), 0.0, 1, cmd, today, machine)
                for k, v in values.items()
            ]
        queue = divergence_queue(student, teacher, subset, rationales, min_fidelity=args.min_fidelity)
        path = write_queue(REPO_ROOT / "runs" / "divergence" / f"{dataset}-10shot-vs-full.jsonl", queue)
        reasons = Counter(item.reason for item in queue)
        values = {
            "divergence_queue_size": len(queue),
            "divergence_label_only": reasons.get("label", 0),
            "divergence_rationale_only": reasons.get("rationale", 0),
            "divergence_label_and_rationale": reasons.get("label+rationale", 0),
        }
        method = "minilm-l6 CE student (train_10), gradient x input"
        rows += [
            Row(dataset, setting, method, k, round(float(v), 4), 0.0, 1, cmd, today, machine)
            for k, v in values.items()
        ]
        for r in rows:
            print(f"{dataset}: {r.method}: {r.metric} = {r.value}", flush=True)
        print(f"{dataset}: queue written to {path}", flush=True)
        write_results("fidelity_ce", rows)


if __name__ == "__main__":
    main()
