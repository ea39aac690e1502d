"""The SHAP prior: exact on an additive model, consistent with IG, mapped onto our words."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from rationalign.attribution.integrated_gradients import IntegratedGradients
from rationalign.attribution.words import split_words

pytest.importorskip("shap")
from rationalign.attribution.shap_prior import ShapPrior


def test_exact_on_an_additive_model_with_deletion(bag_model):
    # logit_1 = sum over tokens of e(token) . W[1]: additive, so deleting a word removes exactly its term
    # and every Shapley value is that term.
    model, tokenizer = bag_model
    texts = ["I need a refund for my card", "where is my refund ?"]
    atts = ShapPrior(model, tokenizer, output="logit", mask_token="", max_evals=200, max_length=32).attribute(
        texts, [1, 1]
    )
    for text, att in zip(texts, atts, strict=True):
        assert att.words == split_words(text)
        with torch.no_grad():
            enc = tokenizer(att.words, add_special_tokens=False)["input_ids"]
            exact = [float((model.embed.weight[ids] @ model.head.weight[1]).sum()) for ids in enc]
        np.testing.assert_allclose(att.scores, exact, rtol=1e-4, atol=1e-5)
        assert att.top(1)[0][0] == "refund"


def test_agrees_with_integrated_gradients_on_the_known_answer_model(bag_model):
    model, tokenizer = bag_model
    texts = ["I need a refund for my card", "refund the money I sent to my friend"]
    shap_atts = ShapPrior(model, tokenizer, max_evals=300, max_length=32).attribute(texts, [1, 1])
    ig_atts = IntegratedGradients(model, tokenizer, n_steps=16, max_length=32).attribute(texts, [1, 1])
    for s, g in zip(shap_atts, ig_atts, strict=True):
        assert s.top(1)[0][0] == g.top(1)[0][0] == "refund"
        assert np.sign(s.scores[s.words.index("refund")]) == 1
        assert spearmanr(s.scores, g.scores).statistic > 0.5


def test_runs_on_a_tiny_transformer_and_is_deterministic(tiny_models, sample_texts):
    for arch in ("bert", "llama"):
        clf = tiny_models[arch]
        prior = ShapPrior(clf, max_evals=40)
        first = prior.attribute(sample_texts[:3], [0, 1, 2])
        again = prior.attribute(sample_texts[:3], [0, 1, 2])
        for text, a, b in zip(sample_texts[:3], first, again, strict=True):
            assert a.words == split_words(text)
            assert np.isfinite(a.scores).all() and np.abs(a.scores).sum() > 0
            np.testing.assert_array_equal(a.scores, b.scores)
            assert a.method == "shap" and a.meta["max_evals"] == 40


def test_single_word_gets_its_full_effect_with_a_bos_eos_tokenizer(tiny_models):
    # SmolLM2's tokenizer uses one token as BOS and EOS; shap alone would never mask the last word.
    clf = tiny_models["llama"]
    prior = ShapPrior(clf, max_evals=20)
    (att,) = prior.attribute(["hi"], [1])
    full, masked = prior.predict(["hi", prior.masker.mask_token])[:, 1]
    assert abs(full - masked) > 1e-4
    assert att.scores[0] == pytest.approx(full - masked, abs=1e-6)


def test_missing_shap_gives_an_install_hint(monkeypatch, bag_model):
    monkeypatch.setitem(sys.modules, "shap", None)
    with pytest.raises(ImportError, match="pip install"):
        ShapPrior(*bag_model)
