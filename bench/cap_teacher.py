"""Which teacher gives CAP the better prior: the LLM zero-shot, the LLM with in-context examples, or a
fine-tuned classifier?

Every teacher runs the same CAP (same masks, margin target, same ridge solver) on ``--n`` test utterances
(a seeded sample). A prior is judged by things none of the teachers controls:

- ``keyword_precision_at_1``: its top word is one of the gold intent's top-10 PMI keywords, counted on the
  FULL training split (the words that carry the label, in the data's own statistics);
- ``top_word_sharedness`` (lower is more class-aware): how shared its top word is between the gold intent
  and the intent most confusable with it (``PMIStats.sharedness``, confusable pairs from PMI vectors);
  a prior that lights up "alarm" for ``alarm_query`` scores high, one that lights up "check" scores low;
- ``judge_drop_top1`` / ``judge_drop_random``: how much an independent judge's probability of the gold
  intent falls when the prior's top word is deleted, against deleting a random word (the mean over all
  words). The judge is a model that is none of the teachers (default: the full-data MiniLM-L6 student of
  ``bench/student_ce.py``).

Also the teacher's own accuracy on the unmasked utterances and CAP's cost (texts scored, seconds).

    .venv/bin/python bench/student_ce.py --datasets hwu64 --settings full --seeds 0 --precision bfloat16  # the judge
    .venv/bin/python bench/cap_teacher.py --dataset hwu64 --n 100
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
from _common import REPO_ROOT, Row, command_line, machine_info, write_results
from rationalign.attribution.cap import CAPPrior
from rationalign.attribution.words import join_words, split_words
from rationalign.data.io import DataConfig, load_data
from rationalign.evaluation import keywords as kw
from rationalign.models.classifier import IntentClassifier
from rationalign.teachers.spec import load_teacher

DEFAULT_TEACHERS = {
    "LLM SmolLM2-135M, zero-shot": "llm:smollm2-135m",
    "LLM SmolLM2-135M, 1 example per intent in context": "llm:smollm2-135m?shots=1&examples={dataset}/train_10",
    "fine-tuned MPNet-base, 10-shot": "model:runs/bench/{dataset}-10-shot-mpnet-base-ce-bfloat16-s0/model"
    "?precision=bfloat16",
}


def judge_drops(judge: IntentClassifier, texts, gold: np.ndarray, tops: list[int]) -> tuple[float, float]:
    """Mean fall of the judge's gold probability when the top word / a random word (all words averaged)
    is deleted; utterances of one word are skipped."""
    rows, owners, kinds = [], [], []
    for i, text in enumerate(texts):
        words = split_words(text)
        if len(words) < 2:
            continue
        rows.append(text)
        owners.append(i)
        kinds.append("full")
        for j in range(len(words)):
            rows.append(join_words(words[:j] + words[j + 1 :]))
            owners.append(i)
            kinds.append(j)
    probs = torch.softmax(judge.logits(rows, 128).float(), -1).numpy()
    full: dict[int, float] = {}
    per_word: dict[int, dict[int, float]] = {}
    for row, owner, kind in zip(probs, owners, kinds, strict=True):
        p = float(row[gold[owner]])
        if kind == "full":
            full[owner] = p
        else:
            per_word.setdefault(owner, {})[kind] = p
    top_drop = [full[i] - per_word[i][tops[i]] for i in full]
    random_drop = [full[i] - float(np.mean(list(per_word[i].values()))) for i in full]
    return float(np.mean(top_drop)), float(np.mean(random_drop))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="hwu64")
    parser.add_argument("--n", type=int, default=100, help="test utterances (a seeded sample)")
    parser.add_argument("--n-masks", type=int, default=32)
    parser.add_argument("--judge", default="runs/bench/{dataset}-full-minilm-l6-ce-bfloat16-s0/model")
    parser.add_argument("--teachers", nargs="*", help="name=spec pairs (default: the three above)")
    args = parser.parse_args()
    torch.manual_seed(0)
    bundle = load_data(DataConfig(path=args.dataset))
    # a seeded sample, not the first n: the test files are sorted by intent, and an LLM that always
    # answers with the first label of its list would look perfect on the first intent's utterances
    order = np.random.default_rng(0).permutation(len(bundle.test))[: args.n]
    test = bundle.test.subset(sorted(order.tolist()))
    space = bundle.label_space
    gold = np.asarray(test.label_ids(space))
    stats = kw.pmi_stats(bundle.train)  # the full training split
    table = kw.pmi_keywords(stats, top_k=10)
    confusable = kw.confusable_from_keywords(stats)
    judge = IntentClassifier.load(REPO_ROOT / args.judge.format(dataset=args.dataset))
    judge.precision = "bfloat16"
    teachers = dict(pair.split("=", 1) for pair in args.teachers) if args.teachers else DEFAULT_TEACHERS
    machine, command, today = machine_info(), command_line(), date.today().isoformat()
    setting = f"{len(test)} test utterances (seed 0), CAP {args.n_masks} masks, margin target"
    rows = []
    for name, spec in teachers.items():
        spec = spec.format(dataset=args.dataset)
        teacher = load_teacher(spec, space)
        cap = CAPPrior(teacher, n_masks=args.n_masks, target="margin", seed=0, batch_size=256)
        start = time.perf_counter()
        attributions, probs = cap.attribute_with_soft_labels(test.texts, gold.tolist())
        seconds = time.perf_counter() - start
        tops = [int(np.argmax(a.scores)) for a in attributions]
        top_words = [a.words[t] for a, t in zip(attributions, tops, strict=True)]
        hits = [w.lower() in table.top(y) for w, y in zip(top_words, test.labels, strict=True)]
        shared = [
            stats.sharedness(w, y, confusable[y])
            for w, y in zip(top_words, test.labels, strict=True)
            if confusable.get(y) not in (None, y)
        ]
        drop_top, drop_random = judge_drops(judge, test.texts, gold, tops)
        values = {
            "teacher_accuracy": 100 * float((np.asarray(probs).argmax(1) == gold).mean()),
            "keyword_precision_at_1": 100 * float(np.mean(hits)),
            "top_word_sharedness": float(np.mean(shared)),
            "judge_drop_top1": 100 * drop_top,
            "judge_drop_random": 100 * drop_random,
            "seconds_per_utterance": seconds / len(test),
            "texts_per_utterance": cap.cost.texts_scored / len(test),
        }
        print(name, {k: round(v, 3) for k, v in values.items()}, flush=True)
        for metric, value in values.items():
            rows.append(
                Row(args.dataset, setting, name, metric, round(value, 4), 0.0, 1, command, today, machine)
            )
        write_results("cap_teacher", rows)


if __name__ == "__main__":
    main()
