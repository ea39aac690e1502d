"""LIME and CAP priors: how long until the prior is accurate? Ours vs the ``lime`` package vs captum.

Question: at equal accuracy, how much faster is our batched, deduplicated, variance-reduced LIME than the
two libraries? Accuracy of a run = mean Spearman (over utterances) between its word scores and a reference
= ours with ``--reference-samples`` (5,000) masks. All three estimate the same quantity: same words, same
kernel (LIME's text default), the same sampling law (drop ``k ~ U{1..d-1}`` words) and Ridge(alpha=1).

Two passes, so the benchmark fits a shared 2-core CPU:
1. accuracy, on ``--n-utterances`` Banking77 test utterances, with the real model's outputs memoised by
   text (a pure function, so the scores are exactly the model's; the memo is kept in bench/.cache so a
   re-run only scores new texts). This pass also times each method's own work (sampling, text building,
   regression: the memo lookups cost ~1 us), reported as ``overhead_seconds_per_utterance``.
2. speed, real model and no memo, on ``--timing-utterances`` of those utterances chosen evenly by length:
   wall seconds per utterance of each method at each budget (libraries: up to the first budget that
   reaches ``--target``, as larger ones only cost more).

Run: .venv/bin/python bench/lime_speed.py  (``--model FOLDER`` for a trained student; default: minilm-l6
with a random head)
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

from _common import CACHE_DIR, Row, command_line, datasets_root, load_jsonl, machine_info, write_results
from rationalign.attribution.lime import LimePrior, captum_lime_attribute, lime_package_attribute
from rationalign.attribution.words import split_words

RESULT_NAME = "lime_speed"
METHODS = ("ours", "ours-iid", "lime-package", "captum-lime")
TIMING_ONLY = ("captum-lime-default-batching",)  # same samples as captum-lime, one forward per sample
LIBRARIES = ("lime-package", "captum-lime")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


class Memo:
    """The model's probabilities by text, persisted as .npz (no pickles)."""

    def __init__(self, predict, path: Path):
        self.predict = predict
        self.path = path
        self.table: dict[str, np.ndarray] = {}
        self.new = 0
        if path.is_file():
            with np.load(path, allow_pickle=False) as saved:
                for text, row in zip(saved["texts"].tolist(), saved["probs"], strict=True):
                    self.table[text] = row

    def __call__(self, texts: list[str]) -> np.ndarray:
        todo = list(dict.fromkeys(t for t in texts if t not in self.table))
        if todo:
            for text, row in zip(todo, self.predict(todo), strict=True):
                self.table[text] = row
            self.new += len(todo)
        return np.stack([self.table[t] for t in texts])

    def save(self) -> None:
        if not self.new:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        texts = list(self.table)
        tmp = self.path.with_name(self.path.stem + ".tmp.npz")
        np.savez(tmp, texts=np.array(texts, dtype=str), probs=np.stack([self.table[t] for t in texts]))
        tmp.replace(self.path)
        self.new = 0


class Counted:
    """Counts the texts a method asks the model for (its forward passes when run alone)."""

    def __init__(self, predict):
        self.predict = predict
        self.texts = 0

    def __call__(self, texts):
        self.texts += len(texts)
        return self.predict(texts)


def run_method(method: str, predict, texts, targets, budget: int, seed: int, fingerprint: str):
    """Word scores of every utterance and the texts scored, one method at one budget."""
    counted = Counted(predict)
    if method in ("ours", "ours-iid"):
        design = "balanced" if method == "ours" else "iid"
        prior = LimePrior(counted, n_samples=budget, seed=seed, design=design, fingerprint=fingerprint)
        return [a.scores for a in prior.attribute(texts, targets)], counted.texts
    scores = []
    for i, (text, target) in enumerate(zip(texts, targets, strict=True)):
        if method == "lime-package":
            attribution = lime_package_attribute(counted, text, target, budget, seed=seed + i)
        else:
            torch.manual_seed(seed + i)
            attribution = captum_lime_attribute(counted, text, target, budget, seed=seed + i)
        scores.append(attribution.scores)
    return scores, counted.texts


def load_model(spec: str):
    from rationalign.data.types import LabelSpace
    from rationalign.models.classifier import IntentClassifier

    folder = Path(spec)
    if folder.is_dir():
        clf = IntentClassifier.load(folder)
        desc = f"Banking77-trained {clf.meta.get('base_model', 'student')} ({folder})"
    else:
        labels = sorted(set(load_jsonl(datasets_root() / "banking77" / "train.jsonl")[1]))
        clf = IntentClassifier.from_base(spec, LabelSpace(labels), seed=0)
        desc = f"{spec} with a random head (seed 0)"
    return clf, desc


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="minilm-l6", help="classifier folder, or a shipped base (random head)"
    )
    parser.add_argument("--n-utterances", type=int, default=50)
    parser.add_argument("--reference-samples", type=int, default=5000)
    parser.add_argument(
        "--budgets", type=int, nargs="+", default=[100, 150, 200, 250, 300, 400, 500, 1000, 2000]
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--timing-utterances", type=int, default=10)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64, help="texts per forward pass")
    parser.add_argument("--no-write", action="store_true", help="print only (smoke runs)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    clf, model_desc = load_model(args.model)
    fingerprint = LimePrior(clf).fingerprint
    test_texts, test_labels = load_jsonl(datasets_root() / "banking77" / "test.jsonl")
    pick = np.random.default_rng(args.seed).choice(len(test_texts), args.n_utterances, replace=False)
    texts = [test_texts[i] for i in pick]
    targets = [clf.label_space.id(test_labels[i]) for i in pick]
    n_words = np.array([len(split_words(t)) for t in texts])
    print(f"model: {model_desc}; {len(texts)} utterances, {n_words.mean():.1f} words on average", flush=True)

    def model_predict(batch):
        return clf.predict_proba(batch, batch_size=args.batch_size)

    memo = Memo(model_predict, CACHE_DIR / RESULT_NAME / f"{fingerprint[:24]}.npz")
    started = time.perf_counter()
    reference, _ = run_method(
        "ours", memo, texts, targets, args.reference_samples, args.seed + 1000, fingerprint
    )
    memo.save()
    print(f"reference ({args.reference_samples} samples): {time.perf_counter() - started:.0f} s", flush=True)

    accuracy: dict[tuple[str, int], np.ndarray] = {}
    forwards: dict[tuple[str, int], float] = {}
    overhead: dict[tuple[str, int], float] = {}
    reached: dict[str, int | None] = dict.fromkeys(args.methods)
    for budget in args.budgets:
        for method in args.methods:
            if method in LIBRARIES and reached[method] is not None:
                continue  # a library already reached the target: larger budgets only cost more
            before = memo.new
            t0 = time.perf_counter()
            scores, n_texts = run_method(method, memo, texts, targets, budget, args.seed, fingerprint)
            elapsed = time.perf_counter() - t0
            # Time spent in the model on texts the memo lacked is not the method's own work.
            scored_now = memo.new - before
            if scored_now:  # run again on the now complete memo: what is left is the method's own work
                t0 = time.perf_counter()
                run_method(method, memo, texts, targets, budget, args.seed, fingerprint)
                own = time.perf_counter() - t0
                assert memo.new == scored_now + before, "a second run with the same seed asked for new texts"
            else:
                own = elapsed
            rho = np.array([spearman(s, r) for s, r in zip(scores, reference, strict=True)])
            accuracy[method, budget] = rho
            forwards[method, budget] = n_texts / len(texts)
            overhead[method, budget] = own / len(texts)
            if reached[method] is None and np.nanmean(rho) >= args.target:
                reached[method] = budget
            memo.save()
            print(
                f"{method:13s} n={budget:5d}: spearman {np.nanmean(rho):.3f}  texts/utt {n_texts / len(texts):7.1f}"
                f"  ({elapsed:.1f} s, {scored_now} new texts scored)",
                flush=True,
            )

    # Speed: real model, no memo, on utterances spread evenly over the length distribution.
    order = np.argsort(n_words, kind="stable")
    timing_idx = order[np.linspace(0, len(order) - 1, args.timing_utterances).round().astype(int)]
    timing_texts = [texts[i] for i in timing_idx]
    timing_targets = [targets[i] for i in timing_idx]
    model_predict(timing_texts)  # warm-up
    seconds: dict[tuple[str, int], float] = {}
    model_forwards = 0
    model_seconds = 0.0
    # Time the equal-accuracy region only: every budget up to the largest one a method needed.
    needed = [b for b in reached.values() if b is not None]
    time_up_to = max(needed) if len(needed) == len(reached) else max(args.budgets)
    for budget in args.budgets:
        for method in args.methods:
            if budget > time_up_to or (method in LIBRARIES and (method, budget) not in accuracy):
                continue
            counted = Counted(model_predict)
            t0 = time.perf_counter()
            run_method(method, counted, timing_texts, timing_targets, budget, args.seed, fingerprint)
            elapsed = time.perf_counter() - t0
            seconds[method, budget] = elapsed / len(timing_texts)
            print(f"timing {method:13s} n={budget:5d}: {seconds[method, budget]:.3f} s/utt", flush=True)
    # captum's default perturbations_per_eval=1 (one forward per sample), at the budget captum needed.
    if "captum-lime" in args.methods and reached["captum-lime"] is not None:
        budget = reached["captum-lime"]
        t0 = time.perf_counter()
        for i, (text, target) in enumerate(zip(timing_texts, timing_targets, strict=True)):
            captum_lime_attribute(
                model_predict, text, target, budget, seed=args.seed + i, perturbations_per_eval=1
            )
        seconds["captum-lime-default-batching", budget] = (time.perf_counter() - t0) / len(timing_texts)
        print(
            f"timing captum-lime, perturbations_per_eval=1, n={budget}: {seconds['captum-lime-default-batching', budget]:.3f} s/utt"
        )
    # Model throughput alone on the same kind of texts (for the GFLOP/s estimate).
    sample = [t for t in texts for _ in range(4)]
    t0 = time.perf_counter()
    model_predict(sample)
    model_seconds = time.perf_counter() - t0
    model_forwards = len(sample)

    rows = _rows(args, model_desc, accuracy, forwards, overhead, seconds, reached, n_words, timing_idx)
    throughput = model_forwards / model_seconds
    tokens = np.mean([len(clf.tokenizer(t)["input_ids"]) for t in texts])
    params = sum(p.numel() for n, p in clf.model.named_parameters() if "embeddings" not in n)
    gflops = 2 * params * tokens * throughput / 1e9
    print(
        f"model alone: {throughput:.0f} texts/s, ~{tokens:.0f} tokens/text, ~{gflops:.1f} GFLOP/s", flush=True
    )
    rows.append(_row(args, "model-only", "texts_per_second", throughput, 0.0, model_desc, "forward passes"))
    rows.append(
        _row(
            args,
            "model-only",
            "gflops_per_second",
            gflops,
            0.0,
            model_desc,
            "2 x non-embedding params x tokens",
        )
    )
    if not args.no_write:
        path = write_results(RESULT_NAME, rows)
        print(f"wrote {len(rows)} rows to {path}")
    print(markdown(rows))


def _row(args, method, metric, value, std, model_desc, note="") -> Row:
    setting = (
        f"{args.n_utterances} test utterances; {model_desc}; reference = ours @ {args.reference_samples}"
    )
    if note:
        setting += f"; {note}"
    return Row(
        dataset="banking77",
        setting=setting,
        method=method,
        metric=metric,
        value=float(value),
        std=float(std),
        n_seeds=1,
        command=command_line(),
        date=date.today().isoformat(),
        machine=machine_info(),
    )


def _rows(args, model_desc, accuracy, forwards, overhead, seconds, reached, n_words, timing_idx) -> list[Row]:
    rows = []
    timing_note = f"timed on {len(timing_idx)} of them, evenly spread by length"
    for (method, budget), rho in accuracy.items():
        rows.append(
            _row(args, method, f"spearman_vs_reference@{budget}", np.nanmean(rho), np.nanstd(rho), model_desc)
        )
        rows.append(
            _row(
                args,
                method,
                f"texts_scored_per_utterance@{budget}",
                forwards[method, budget],
                0.0,
                model_desc,
            )
        )
        rows.append(
            _row(
                args,
                method,
                f"overhead_seconds_per_utterance@{budget}",
                overhead[method, budget],
                0.0,
                model_desc,
            )
        )
    for (method, budget), sec in seconds.items():
        rows.append(_row(args, method, f"seconds_per_utterance@{budget}", sec, 0.0, model_desc, timing_note))
    ours_budget = reached.get("ours")
    reached = dict(reached)
    if "captum-lime" in reached:
        reached["captum-lime-default-batching"] = reached["captum-lime"]
    for method, budget in reached.items():
        rows.append(
            _row(
                args,
                method,
                f"smallest_budget_spearman>={args.target}",
                budget if budget else float("nan"),
                0.0,
                model_desc,
            )
        )
        if method != "ours" and budget and ours_budget and (method, budget) in seconds:
            ratio = seconds[method, budget] / seconds["ours", ours_budget]
            rows.append(
                _row(
                    args,
                    method,
                    f"time_ratio_vs_ours_at_spearman>={args.target}",
                    ratio,
                    0.0,
                    model_desc,
                    timing_note,
                )
            )
    return rows


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(rows: list[Row]) -> str:
    """Budget x method table: Spearman, texts scored and seconds per utterance."""
    table: dict[tuple[str, int], dict[str, float]] = {}
    for r in rows:
        if "@" not in r.metric:
            continue
        metric, budget = r.metric.split("@")
        if not budget.isdigit():
            continue
        table.setdefault((r.method, int(budget)), {})[metric] = r.value
    lines = [
        "| method | samples | Spearman vs reference | texts scored / utt | s / utt (model included) | own overhead s / utt |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    order = (*METHODS, *TIMING_ONLY)
    for (method, budget), cells in sorted(table.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
        sec = cells.get("seconds_per_utterance")
        ovh = cells.get("overhead_seconds_per_utterance")
        lines.append(
            f"| {method} | {budget} | {_fmt(cells.get('spearman_vs_reference'), 3)} "
            f"| {_fmt(cells.get('texts_scored_per_utterance'), 0)} "
            f"| {'-' if sec is None else f'{sec:.2f}'} | {'-' if ovh is None else f'{ovh:.4f}'} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
