"""Our faithfulness metrics beside ferret's, on the same real model and the same inputs, and time per 100.

ferret (ferret-xai 0.4.2) would downgrade numpy, captum and shap in the main venv, so this script runs in
its own venv that holds both packages:

    python3 -m venv .venv-ferret && .venv-ferret/bin/pip install torch==2.13.0 \
        && .venv-ferret/bin/pip install ferret-xai==0.4.2 && .venv-ferret/bin/pip install -e .
    .venv-ferret/bin/python bench/ferret_compare.py --model runs/bench/banking77-full-minilm-l6-ce-s0/model

Same inputs: ferret's evaluators delete *subword tokens* from the tokenizer's ``input_ids``, while ours
delete *words* and re-tokenise. To compare like with like, the units here are the WordPiece tokens of each
utterance: our evaluator gets them as its "words", and our ``predict_proba`` maps a unit list straight back
to ids and decodes them to text (``tokenizer.decode``), as ferret does before it re-tokenises, so both
libraries feed the model exactly the same strings. The explanation is the same for both: token gradient x input towards the predicted class from our
attribution module (ties broken by position, so both rank the tokens identically). ks are ours (ceil of
1/5/10/20/50% of the tokens, deduplicated), passed to ferret as ``based_on="k"`` thresholds. ferret ranks
only positive scores by default (and its ``only_pos=False`` path fails on numpy arrays in 0.4.2), so the
scores are shifted to be positive; every metric compared here depends on the ranking only.

Reported: mean absolute and max difference of per-utterance AOPC comprehensiveness, AOPC sufficiency and
leave-one-out Kendall tau; both libraries' means; seconds per 100 utterances for the three metrics (ferret
runs one forward pass per perturbation; ours batches all perturbations), and ours with the soft variants.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import types
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, command_line, datasets_root, load_jsonl, machine_info, write_results
from rationalign.attribution import gradient_x_input_tokens
from rationalign.attribution.integrated_gradients import resolve_model
from rationalign.evaluation.faithfulness import FaithfulnessConfig, evaluate_faithfulness
from rationalign.models.classifier import IntentClassifier


def import_ferret():
    # ferret/__init__ imports its dataset helpers (datasets, spacy, thermostat); the evaluators need none.
    spec = importlib.util.find_spec("ferret")
    if spec is None or spec.submodule_search_locations is None:
        sys.exit("ferret-xai is not installed in this interpreter; see the set-up lines in this file's doc")
    package = types.ModuleType("ferret")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["ferret"] = package
    from ferret.evaluators.faithfulness_measures import (
        AOPC_Comprehensiveness_Evaluation,
        AOPC_Sufficiency_Evaluation,
        TauLOO_Evaluation,
    )
    from ferret.explainers.explanation import Explanation

    return AOPC_Comprehensiveness_Evaluation, AOPC_Sufficiency_Evaluation, TauLOO_Evaluation, Explanation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained rationalign model folder")
    parser.add_argument("--dataset", default="banking77")
    parser.add_argument("--n", type=int, default=100, help="test utterances (the first n)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    comp_cls, suff_cls, tau_cls, explanation_cls = import_ferret()

    clf = IntentClassifier.load(args.model)
    model, tokenizer = clf.model.eval(), clf.tokenizer
    texts, _ = load_jsonl(datasets_root() / args.dataset / "test.jsonl")
    # Canonical texts: ferret tokenises the explanation's text, we hand our evaluator its units; keep the
    # utterances whose decoded text tokenises back to the same units (a few with [UNK] or odd characters
    # do not), so both libraries start from the same ids.
    canonical = []
    for text in texts:
        decoded = tokenizer.decode(tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text)))
        if tokenizer.tokenize(decoded) == tokenizer.tokenize(text):
            canonical.append(decoded)
        if len(canonical) == args.n:
            break
    texts = canonical

    @torch.no_grad()
    def predict_units(unit_texts: list[str]) -> np.ndarray:
        # ferret turns the kept ids back into text (tokenizer.decode) and runs the model on that text; do
        # exactly the same, so both libraries score identical strings.
        decoded = [tokenizer.decode(tokenizer.convert_tokens_to_ids(t.split())) for t in unit_texts]
        enc = tokenizer(decoded, padding=True, truncation=True, return_tensors="pt")
        return (
            model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            .logits.softmax(-1)
            .double()
            .numpy()
        )

    # The explanation both libraries evaluate: token gradient x input towards the predicted class.
    handle = resolve_model(clf)
    attributions, targets = [], []
    for text in texts:
        enc = tokenizer(text, return_tensors="pt")
        target = int(predict_units([" ".join(tokenizer.tokenize(text))]).argmax())
        scores = gradient_x_input_tokens(
            handle, enc["input_ids"], enc["attention_mask"], torch.tensor([target])
        )
        scores = scores[0, 1:-1].detach().double().numpy()
        scores = scores - 1e-9 * np.arange(len(scores))  # a fixed tie-break both libraries then agree on
        scores = scores - scores.min() + 1.0  # positive, same ranking (see the module doc)
        attributions.append((tokenizer.tokenize(text), scores))
        targets.append(target)

    hard = FaithfulnessConfig(deduplicate_k=True, soft=False, leave_one_out=True)
    start = time.perf_counter()
    ours = evaluate_faithfulness(predict_units, attributions, targets, hard)
    ours_seconds = time.perf_counter() - start
    start = time.perf_counter()
    evaluate_faithfulness(predict_units, attributions, targets, FaithfulnessConfig(deduplicate_k=True))
    ours_soft_seconds = time.perf_counter() - start

    comprehensiveness, sufficiency, tau = (
        comp_cls(model, tokenizer),
        suff_cls(model, tokenizer),
        tau_cls(model, tokenizer),
    )
    theirs: dict[str, list[float]] = {"comp": [], "suff": [], "tau": []}
    start = time.perf_counter()
    for text, (units, scores), target, result in zip(
        texts, attributions, targets, ours.examples, strict=True
    ):
        # ferret's explanation covers [CLS] and [SEP] too; remove_first_last drops them again.
        explanation = explanation_cls(
            text, ["[CLS]", *units, "[SEP]"], np.concatenate([[0.0], scores, [0.0]]), "gxi", target
        )
        removal = {"remove_tokens": True, "based_on": "k", "thresholds": result.ks}
        theirs["comp"].append(
            comprehensiveness.compute_evaluation(
                explanation, target, remove_first_last=True, removal_args=removal
            ).score
        )
        theirs["suff"].append(
            sufficiency.compute_evaluation(
                explanation, target, remove_first_last=True, removal_args=removal
            ).score
        )
        theirs["tau"].append(tau.compute_evaluation(explanation, target, remove_first_last=True).score)
    ferret_seconds = time.perf_counter() - start

    per100 = 100 / len(texts)
    ours_values = {
        "comp": [r.aopc_comprehensiveness for r in ours.examples],
        "suff": [r.aopc_sufficiency for r in ours.examples],
        "tau": [r.loo_kendall_tau for r in ours.examples],
    }
    machine, today, cmd = machine_info(), date.today().isoformat(), command_line()
    setting = f"{len(texts)} test utterances, WordPiece units, {args.threads} threads"
    rows: list[Row] = []

    def add(method: str, metric: str, value: float) -> None:
        rows.append(
            Row(args.dataset, setting, method, metric, round(float(value), 6), 0.0, 1, cmd, today, machine)
        )

    names = {"comp": "aopc_comprehensiveness", "suff": "aopc_sufficiency", "tau": "loo_kendall_tau"}
    for key, metric in names.items():
        a, b = np.array(ours_values[key], dtype=float), np.array(theirs[key], dtype=float)
        ok = ~(np.isnan(a) | np.isnan(b))
        add("rationalign", metric, np.nanmean(a))
        add("ferret", metric, np.nanmean(b))
        add("|rationalign - ferret|", f"{metric}_mean_abs_diff", np.abs(a[ok] - b[ok]).mean())
        add("|rationalign - ferret|", f"{metric}_max_abs_diff", np.abs(a[ok] - b[ok]).max())
        print(
            f"{metric}: ours {np.nanmean(a):.4f} ferret {np.nanmean(b):.4f} "
            f"max |diff| {np.abs(a[ok] - b[ok]).max():.2e} ({ok.sum()} compared)",
            flush=True,
        )
    add("rationalign", "seconds_per_100", ours_seconds * per100)
    add("rationalign (with soft variants)", "seconds_per_100", ours_soft_seconds * per100)
    add("ferret", "seconds_per_100", ferret_seconds * per100)
    add("ferret / rationalign", "time_ratio", ferret_seconds / ours_seconds)
    print(
        f"seconds per 100: ours {ours_seconds * per100:.2f} (with soft {ours_soft_seconds * per100:.2f}), "
        f"ferret {ferret_seconds * per100:.2f}; ratio {ferret_seconds / ours_seconds:.1f}x",
        flush=True,
    )
    write_results("ferret_compare", rows)


if __name__ == "__main__":
    main()
