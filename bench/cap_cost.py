"""What a CAP prior costs per utterance with the LLM teacher, fast path vs naive, and how well they agree.

Three ways to get the LLM teacher's label distribution for every masked text CAP scores (SmolLM2-135M,
zero-shot, the full label space in the prompt):

- ``codes + prefix cache`` (our default): the instruction + label-list prefix is run once and its KV cache
  reused; each masked text costs one forward pass over its own ~15 tokens, and the distribution is the
  softmax over the labels' single-token codes.
- ``label text, cached`` (our check mode): each label's name is scored as a continuation, re-using the
  prefix cache and the text's own KV cache (one extra batched pass over the label names).
- ``naive label text``: what a straightforward implementation does: for every label, the whole sequence
  prompt + text + label name is run through the model from scratch, and the label's tokens' log-likelihood
  summed. Written here, not in the library, as the reference; it is so slow that it is measured on the first
  ``--naive-texts`` masked texts only and its per-utterance cost is that per-text cost times the texts
  per utterance (the per-text cost barely depends on the text: the prompt dominates). On those texts its
  distribution is also compared with ``label text, cached`` (they must agree: same maths, no cache).

Agreement: mean per-utterance Spearman between the CAP word scores of the fast path and of label-text
scoring (the naive scorer gives label-text's numbers, shown by the check above), and the same for the two
teachers' unmasked top-1 predictions.

    .venv/bin/python bench/cap_cost.py --dataset hwu64 --n 8 --n-masks 16 --naive-texts 2
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, command_line, datasets_root, load_jsonl, machine_info, write_results
from rationalign.attribution.cap import CAPPrior
from rationalign.attribution.words import join_words, split_words
from rationalign.data.types import LabelSpace
from rationalign.teachers.llm import LLMTeacher


@torch.inference_mode()
def naive_label_text_log_proba(teacher: LLMTeacher, text: str) -> tuple[np.ndarray, int, int]:
    """Label-text scoring with no caching at all: |Y| full sequences per text. Returns (log-probs over
    labels, forward passes, real tokens)."""
    context = teacher.prefix_ids + teacher.suffix_ids(text)
    answers = teacher._answer_ids
    totals = np.zeros(len(answers))
    passes = tokens = 0
    chunk = 8  # sequences per forward pass (memory)
    for lo in range(0, len(answers), chunk):
        group = answers[lo : lo + chunk]
        seqs = [context + a for a in group]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), teacher.tokenizer.pad_token_id or 0)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
        logp = torch.log_softmax(teacher.model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        passes += 1
        tokens += int(mask.sum())
        for i, a in enumerate(group):
            start = len(context)
            totals[lo + i] = sum(float(logp[i, start + t - 1, a[t]]) for t in range(len(a)))
    totals = totals - np.logaddexp.reduce(totals)
    return totals, passes, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="hwu64")
    parser.add_argument("--n", type=int, default=8, help="test utterances (seeded random subset)")
    parser.add_argument("--n-masks", type=int, default=16)
    parser.add_argument("--naive-texts", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, train_labels = load_jsonl(datasets_root() / args.dataset / "train.jsonl")
    space = LabelSpace.from_labels(train_labels)
    texts, labels = load_jsonl(datasets_root() / args.dataset / "test.jsonl")
    pick = random.Random(args.seed).sample(range(len(texts)), args.n)
    texts, targets = [texts[i] for i in pick], [space.id(labels[i]) for i in pick]

    arms = {
        "codes + prefix cache": LLMTeacher("smollm2-135m", space, mode="codes"),
        "label text, cached": LLMTeacher("smollm2-135m", space, mode="label_text"),
    }
    results, costs = {}, {}
    for name, teacher in arms.items():
        teacher.predict_proba(texts[:1])  # build the prefix cache outside the timed region (once per teacher)
        teacher.reset_cost()
        cap = CAPPrior(teacher, n_masks=args.n_masks, seed=args.seed)
        start = time.perf_counter()
        results[name] = cap.attribute(texts, targets)
        seconds = time.perf_counter() - start
        c = teacher.cost
        costs[name] = {
            "seconds": seconds / args.n,
            "forward_passes": c.forward_passes / args.n,
            "tokens": c.tokens / args.n,
            "texts": c.texts / args.n,
        }
        print(f"{name}: {costs[name]}", flush=True)

    # The naive reference on the first masked texts of the first utterance.
    checker = arms["label text, cached"]
    # Texts like the ones CAP scores: the first utterance, then with its i-th word masked out.
    words = split_words(texts[0])
    masked = [join_words(words[:i] + words[i + 1 :]) if i else texts[0] for i in range(args.naive_texts)]
    cached = checker.predict_log_proba(masked)
    naive_seconds, naive_passes, naive_tokens, diffs = 0.0, 0, 0, []
    for i, t in enumerate(masked):
        start = time.perf_counter()
        logp, passes, tokens = naive_label_text_log_proba(checker, t)
        naive_seconds += time.perf_counter() - start
        naive_passes += passes
        naive_tokens += tokens
        diffs.append(float(np.abs(np.exp(logp) - np.exp(cached[i])).max()))
    per_text = len(masked)
    texts_per_utt = costs["codes + prefix cache"]["texts"]
    costs["naive label text (estimated)"] = {
        "seconds": naive_seconds / per_text * texts_per_utt,
        "forward_passes": naive_passes / per_text * texts_per_utt,
        "tokens": naive_tokens / per_text * texts_per_utt,
        "texts": texts_per_utt,
    }
    print(f"naive: {costs['naive label text (estimated)']}; max |p naive - p cached| {max(diffs):.2e}")

    fast, slow = results["codes + prefix cache"], results["label text, cached"]
    rhos = [
        spearmanr(a.scores, b.scores).statistic for a, b in zip(fast, slow, strict=True) if len(a.scores) > 1
    ]
    rho = float(np.nanmean(rhos))
    top1 = float(
        np.mean(
            arms["codes + prefix cache"].predict_proba(texts).argmax(1)
            == arms["label text, cached"].predict_proba(texts).argmax(1)
        )
    )
    print(f"Spearman(CAP codes, CAP label text) = {rho:.3f}; unmasked top-1 agreement {top1:.2f}")

    machine, today, cmd = machine_info(), date.today().isoformat(), command_line()
    setting = (
        f"CAP, {args.n_masks} masks, {args.n} test utterances, SmolLM2-135M zero-shot, {args.threads} threads"
    )
    rows: list[Row] = []

    def add(method: str, metric: str, value: float) -> None:
        rows.append(Row(args.dataset, setting, method, metric, value, 0.0, 1, cmd, today, machine))

    for name, c in costs.items():
        for metric, value in c.items():
            add(name, f"{metric}_per_utterance", round(value, 4))
    fast_cost = costs["codes + prefix cache"]
    for name in ("label text, cached", "naive label text (estimated)"):
        ratio = round(costs[name]["seconds"] / fast_cost["seconds"], 2)
        add(f"{name} / codes + prefix cache", "seconds_ratio", ratio)
    add("codes vs label text", "cap_spearman_mean", round(rho, 4))
    add("codes vs label text", "unmasked_top1_agreement", round(top1, 4))
    add("naive vs label text, cached", "max_abs_prob_diff", float(f"{max(diffs):.3g}"))
    write_results("cap_cost", rows)


if __name__ == "__main__":
    main()
