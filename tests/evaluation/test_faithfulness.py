"""ERASER faithfulness against hand-computed values on a tiny additive model, and against ferret.

The additive model: p(class 1 | text) = 0.1 + 0.4 [card] + 0.3 [lost] + 0.1 [my], p(class 0) = 1 - that,
so every perturbed probability can be read off by hand.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rationalign.errors import ConfigError, DataError
from rationalign.evaluation.faithfulness import (
    FaithfulnessConfig,
    evaluate_faithfulness,
    faithfulness_of_words,
    only_words,
    predict_in_chunks,
    without_words,
)

WEIGHTS = {"card": 0.4, "lost": 0.3, "my": 0.1}


class AdditiveModel:
    """Records every call so tests can check the batching."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        p1 = np.array([0.1 + sum(WEIGHTS.get(w, 0.0) for w in set(t.split())) for t in texts])
        return np.stack([1 - p1, p1], axis=1)


WORDS = ["i", "lost", "my", "card"]
SCORES = np.array([0.1, 0.2, 0.5, 0.9])  # ranking: card, my, lost, i
# p1(x) = 0.1 + 0.3 + 0.1 + 0.4 = 0.9.  d = 4 -> k = ceil(p/100 * 4) for 1, 5, 10, 20, 50 % = 1, 1, 1, 1, 2
# k=1: without card "i lost my" p = 0.5 -> comp 0.4;   only "card" p = 0.5 -> suff 0.4
# k=2: without card,my "i lost" p = 0.4 -> comp 0.5;   only "my card" p = 0.6 -> suff 0.3
# AOPC comp = (4 * 0.4 + 0.5) / 5 = 0.42, AOPC suff = (4 * 0.4 + 0.3) / 5 = 0.38
# deduplicated k (1, 2): comp (0.4 + 0.5) / 2 = 0.45, suff (0.4 + 0.3) / 2 = 0.35
# leave-one-out drops: i 0, lost 0.3, my 0.1, card 0.4; ranks of scores 1 2 3 4 vs drops 1 3 2 4:
# one discordant pair (lost, my) out of 6 -> tau = (5 - 1) / 6 = 2/3


def test_word_removal_joins_with_single_spaces():
    assert without_words(WORDS, [3, 2]) == "i lost"
    assert only_words(WORDS, [3, 1]) == "lost card"  # original order, not score order
    assert without_words(["a"], [0]) == ""


def test_hard_metrics_by_hand():
    result = faithfulness_of_words(AdditiveModel(), WORDS, SCORES, target=1)
    assert result.ks == [1, 1, 1, 1, 2]
    assert result.base_probability == pytest.approx(0.9)
    assert result.comprehensiveness == pytest.approx([0.4, 0.4, 0.4, 0.4, 0.5])
    assert result.sufficiency == pytest.approx([0.4, 0.4, 0.4, 0.4, 0.3])
    assert result.aopc_comprehensiveness == pytest.approx(0.42)
    assert result.aopc_sufficiency == pytest.approx(0.38)
    assert result.loo_kendall_tau == pytest.approx(2 / 3)


def test_deduplicated_k_averages_distinct_rationales():
    config = FaithfulnessConfig(deduplicate_k=True, soft=False)
    result = faithfulness_of_words(AdditiveModel(), WORDS, SCORES, target=1, config=config)
    assert result.aopc_comprehensiveness == pytest.approx(0.45)
    assert result.aopc_sufficiency == pytest.approx(0.35)
    assert math.isnan(result.soft_comprehensiveness)


def test_target_zero_flips_signs():
    # p0 = 1 - p1, so every difference changes sign.
    result = faithfulness_of_words(AdditiveModel(), WORDS, SCORES, target=0)
    assert result.aopc_comprehensiveness == pytest.approx(-0.42)
    assert result.aopc_sufficiency == pytest.approx(-0.38)


def test_ceil_percentages_on_a_longer_utterance():
    # d = 30: k = ceil(0.3), ceil(1.5), ceil(3.0), ceil(6.0), ceil(15.0) = 1, 2, 3, 6, 15 (3.0 must not become 4)
    words = [f"w{i}" for i in range(30)]
    result = faithfulness_of_words(AdditiveModel(), words, np.arange(30.0), target=1)
    assert result.ks == [1, 2, 3, 6, 15]


def test_soft_metrics_match_their_expectation():
    # Min-max normalised scores q = (0, 0.125, 0.5, 1) for i, lost, my, card.
    # Soft sufficiency keeps word j with prob q_j: E[p1] = 0.1 + 0.4*1 + 0.3*0.125 + 0.1*0.5 = 0.5875
    #   -> soft suff = 0.9 - 0.5875 = 0.3125
    # Soft comprehensiveness keeps with prob 1 - q_j: E[p1] = 0.1 + 0 + 0.3*0.875 + 0.1*0.5 = 0.4125
    #   -> soft comp = 0.9 - 0.4125 = 0.4875
    # 4000 samples: standard error ~0.002, so 0.01 is 5 SE.
    config = FaithfulnessConfig(n_soft_samples=4000, leave_one_out=False, seed=3)
    result = faithfulness_of_words(AdditiveModel(), WORDS, SCORES, target=1, config=config)
    assert result.soft_sufficiency == pytest.approx(0.3125, abs=0.01)
    assert result.soft_comprehensiveness == pytest.approx(0.4875, abs=0.01)
    again = faithfulness_of_words(AdditiveModel(), WORDS, SCORES, target=1, config=config)
    assert again.soft_sufficiency == result.soft_sufficiency  # seeded


def test_model_is_called_in_chunks_not_per_utterance():
    model = AdditiveModel()
    attributions = [(WORDS, SCORES), (["my", "card"], np.array([0.3, 0.1])), (["lost"], np.array([1.0]))] * 4
    report = evaluate_faithfulness(model, attributions, [1] * 12, FaithfulnessConfig(n_soft_samples=5))
    assert len(model.calls) == 1  # every utterance in one call (deduplicated texts, < 512)
    assert len(model.calls[0]) == report.n_model_texts == len(set(model.calls[0]))
    small = AdditiveModel()
    evaluate_faithfulness(small, attributions, [1] * 12, FaithfulnessConfig(n_soft_samples=5, batch_size=4))
    assert [len(c) for c in small.calls[:-1]] == [4] * (len(small.calls) - 1)
    assert sum(len(c) for c in small.calls) == report.n_model_texts
    # Summary = mean of the per-example values; the one-word utterance has an undefined tau.
    assert report.summary.aopc_comprehensiveness == pytest.approx(
        np.mean([e.aopc_comprehensiveness for e in report.examples])
    )
    assert report.summary.loo_kendall_tau.n_nan == 4
    assert report.to_dict()["summary"]["loo_kendall_tau"]["n_valid"] == 8


def test_bad_inputs_raise():
    model = AdditiveModel()
    with pytest.raises(DataError, match="4 words but scores has shape"):
        evaluate_faithfulness(model, [(WORDS, [0.1, 0.2])], [1])
    with pytest.raises(DataError, match=r"target 2 outside 0\.\.1"):
        evaluate_faithfulness(model, [(WORDS, SCORES)], [2])
    with pytest.raises(DataError, match="1 attributions but 2 targets"):
        evaluate_faithfulness(model, [(WORDS, SCORES)], [1, 1])
    with pytest.raises(DataError, match="no attributions"):
        evaluate_faithfulness(model, [], [])
    with pytest.raises(DataError, match="no words"):
        evaluate_faithfulness(model, [([], [])], [1])
    with pytest.raises(DataError, match="NaN"):
        evaluate_faithfulness(model, [(WORDS, [0.1, np.nan, 0.2, 0.3])], [1])
    with pytest.raises(DataError, match="not 1"):
        predict_in_chunks(lambda texts: np.ones((len(texts), 2)), ["a"])
    with pytest.raises(DataError, match="rows for 2 texts"):
        predict_in_chunks(lambda texts: np.array([[0.5, 0.5]]), ["a", "b"])
    with pytest.raises(ConfigError):
        FaithfulnessConfig(percentages=(0.0, 10.0))
    with pytest.raises(ConfigError):
        FaithfulnessConfig(n_soft_samples=0)


# --- agreement with ferret (optional: runs where ferret-xai is importable) ---------------------------


class WordTokenizer:
    """Whitespace tokenizer with the parts of the HF tokenizer API that ferret's evaluators use."""

    cls_token = None
    mask_token_id = 1

    def __init__(self, vocabulary: list[str]) -> None:
        self.ids = {w: i + 2 for i, w in enumerate(vocabulary)}  # 0 = pad, 1 = mask
        self.words = {i: w for w, i in self.ids.items()}

    def __call__(self, text, return_tensors="pt", truncation=True, padding=False, **_):
        texts = [text] if isinstance(text, str) else list(text)
        rows = [[self.ids[w] for w in t.split()] for t in texts]
        width = max(len(r) for r in rows)
        input_ids = torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": (input_ids > 0).long()}

    def decode(self, ids) -> str:
        return " ".join(self.words[int(i)] for i in ids)


class BagOfWords(torch.nn.Module):
    def __init__(self, vocabulary_size: int, num_classes: int, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(
            0.3 * torch.randn(vocabulary_size + 2, num_classes, generator=generator)
        )
        self.bias = torch.nn.Parameter(torch.randn(num_classes, generator=generator))

    @property
    def device(self) -> torch.device:
        return self.weight.device

    def forward(self, input_ids, attention_mask, output_hidden_states=False, **_):
        summed = (self.weight[input_ids] * attention_mask.unsqueeze(-1)).sum(dim=1)
        return SimpleNamespace(logits=summed + self.bias)


def _import_ferret_evaluators():
    spec = importlib.util.find_spec("ferret")
    if spec is None or spec.submodule_search_locations is None:
        pytest.skip("ferret-xai is not installed (it would downgrade numpy/captum/shap in this venv)")
    # ferret/__init__ imports its benchmark datasets (datasets, thermostat, spacy); the evaluators need
    # none of that, so import the subpackage under a bare package module.
    if "ferret" not in sys.modules or not hasattr(sys.modules["ferret"], "__path__"):
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


def test_agrees_with_ferret():
    comprehensiveness_cls, sufficiency_cls, tau_cls, explanation_cls = _import_ferret_evaluators()
    vocabulary = [
        "please",
        "block",
        "my",
        "lost",
        "credit",
        "card",
        "now",
        "it",
        "was",
        "stolen",
        "yesterday",
    ]
    tokenizer = WordTokenizer(vocabulary)
    model = BagOfWords(len(vocabulary), num_classes=3, seed=0).eval()

    def predict_proba(texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            return model(**tokenizer(texts)).logits.softmax(-1).double().numpy()

    rng = np.random.default_rng(0)
    utterances = [vocabulary[:7], vocabulary[3:11], vocabulary[1:4], vocabulary]
    attributions = [(words, rng.permutation(len(words)) + 1.0) for words in utterances]  # distinct, > 0
    # Explain the predicted class (the usual use), so the probabilities at stake are not tiny.
    targets = predict_proba([" ".join(words) for words, _ in attributions]).argmax(axis=1).tolist()
    config = FaithfulnessConfig(deduplicate_k=True, soft=False)
    ours = evaluate_faithfulness(predict_proba, attributions, targets, config)

    comprehensiveness = comprehensiveness_cls(model, tokenizer)
    sufficiency = sufficiency_cls(model, tokenizer)
    tau = tau_cls(model, tokenizer)
    for (words, scores), target, result in zip(attributions, targets, ours.examples, strict=True):
        explanation = explanation_cls(" ".join(words), words, scores, "test", target)
        # ferret takes top-k counts directly ("k"); ours come from ceil(percent * d). Positive scores, so
        # ferret's only_pos filter keeps the same words.
        args = {
            "remove_first_last": False,
            "removal_args": {"remove_tokens": True, "based_on": "k", "thresholds": result.ks},
        }
        theirs_comp = comprehensiveness.compute_evaluation(explanation, target, **args).score
        theirs_suff = sufficiency.compute_evaluation(explanation, target, **args).score
        theirs_tau = tau.compute_evaluation(explanation, target, remove_first_last=False).score
        assert result.aopc_comprehensiveness == pytest.approx(theirs_comp, abs=1e-6)
        assert result.aopc_sufficiency == pytest.approx(theirs_suff, abs=1e-6)
        assert result.loo_kendall_tau == pytest.approx(theirs_tau, abs=1e-9)
