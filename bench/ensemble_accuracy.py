"""Accuracy of the ensemble teacher on the test sets, beside its members.

The members are the fine-tuned MiniLM-L6 cross-entropy classifiers that `bench/student_ce.py` trained on
10-shot data (seeds 0 and 1: the shipped ``train_10`` and a resample; ``ClassifierTeacher``), mixed with
equal weights; the adjudicator is the SmolLM2-135M LLM teacher (zero-shot, label codes), asked only where
the mixture's top-1 minus top-2 margin is below ``--margin`` and mixed in with weight ``--adjudicator-weight``.
Rows: accuracy of each member, of the mixture, of the mixture + adjudicator, how many test utterances were
adjudicated, and accuracy on those before and after adjudication: what the LLM adds where the classifiers
are unsure. Nothing is tuned here: margin 0.2 and weight 0.5 are the library defaults.

    .venv/bin/python bench/student_ce.py --datasets banking77 --settings 10-shot --seeds 0 1 2   # members
    .venv/bin/python bench/ensemble_accuracy.py --datasets banking77 hwu64 clinc150
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, Row, command_line, datasets_root, load_jsonl, machine_info, write_results
from rationalign.teachers.cache import CachedTeacher
from rationalign.teachers.classifier import ClassifierTeacher
from rationalign.teachers.ensemble import EnsembleTeacher, margins
from rationalign.teachers.llm import LLMTeacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["banking77", "hwu64", "clinc150"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--margin", type=float, default=0.2)
    parser.add_argument("--adjudicator-weight", type=float, default=0.5)
    parser.add_argument("--runs-dir", default=str(REPO_ROOT / "runs" / "bench"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine, today, cmd = machine_info(), date.today().isoformat(), command_line()
    for dataset in args.datasets:
        folders = [Path(args.runs_dir) / f"{dataset}-10-shot-minilm-l6-ce-s{s}" / "model" for s in args.seeds]
        missing = [str(f) for f in folders if not f.is_dir()]
        if missing:
            print(
                f"{dataset}: missing members {missing}; train them with bench/student_ce.py", file=sys.stderr
            )
            continue
        members = [ClassifierTeacher(f) for f in folders]
        space = members[0].label_space
        texts, names = load_jsonl(datasets_root() / dataset / "test.jsonl")
        gold = np.array(space.ids(names))
        setting = f"test split ({len(texts)}), members 10-shot seeds {args.seeds}"
        rows: list[Row] = []

        def add(
            method: str,
            metric: str,
            value: float,
            rows: list[Row] = rows,
            dataset: str = dataset,
            setting: str = setting,
        ) -> None:
            rows.append(
                Row(dataset, setting, method, metric, round(float(value), 4), 0.0, 1, cmd, today, machine)
            )

        member_probs = [m.predict_proba(texts) for m in members]
        for seed, probs in zip(args.seeds, member_probs, strict=True):
            add(
                f"MiniLM-L6 CE 10-shot seed {seed} (member)",
                "accuracy",
                100 * (probs.argmax(1) == gold).mean(),
            )
        mixture = np.mean(member_probs, axis=0)
        add("mixture of the members", "accuracy", 100 * (mixture.argmax(1) == gold).mean())

        # Memoised: the "SmolLM2 alone" row below re-reads the answers the ensemble already paid for.
        adjudicator = CachedTeacher(LLMTeacher("smollm2-135m", space))
        ensemble = EnsembleTeacher(
            members,
            adjudicator=adjudicator,
            margin_threshold=args.margin,
            adjudicator_weight=args.adjudicator_weight,
        )
        start = time.perf_counter()
        probs = ensemble.predict_proba(texts)
        seconds = time.perf_counter() - start
        asked = margins(mixture) < args.margin
        method = f"mixture + SmolLM2 adjudicator (margin < {args.margin}, weight {args.adjudicator_weight})"
        add(method, "accuracy", 100 * (probs.argmax(1) == gold).mean())
        add(method, "adjudicated_share", 100 * asked.mean())
        if asked.any():
            add(
                method,
                "accuracy_on_adjudicated_before",
                100 * (mixture[asked].argmax(1) == gold[asked]).mean(),
            )
            add(method, "accuracy_on_adjudicated_after", 100 * (probs[asked].argmax(1) == gold[asked]).mean())
            llm_alone = adjudicator.predict_proba([texts[i] for i in np.flatnonzero(asked)])
            add(
                "SmolLM2 alone, on the adjudicated utterances",
                "accuracy",
                100 * (llm_alone.argmax(1) == gold[asked]).mean(),
            )
        add(method, "seconds", seconds)
        for r in rows:
            print(f"{dataset}: {r.method}: {r.metric} = {r.value}", flush=True)
        write_results("ensemble_accuracy", rows)


if __name__ == "__main__":
    main()
