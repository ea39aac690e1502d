"""Gradient x input against captum's InputXGradient on the embeddings, and on a known-answer model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rationalign.attribution.gradient import GradientXInput, gradient_x_input_tokens
from rationalign.attribution.integrated_gradients import model_inputs, resolve_model, words_from_tokens
from rationalign.attribution.words import encode_with_words, split_words

captum_attr = pytest.importorskip("captum.attr")


@pytest.mark.parametrize("arch", ["bert", "mpnet", "llama"])
def test_agrees_with_captum_input_x_gradient_on_the_embeddings(tiny_models, sample_texts, arch):
    clf = tiny_models[arch]
    handle = resolve_model(clf)
    targets = [2, 0, 1, 1]
    ours = GradientXInput(clf, batch_size=3).attribute(sample_texts, targets)
    embedding = clf.model.get_input_embeddings()
    for text, target, att in zip(sample_texts, targets, ours, strict=True):
        inputs, alignments = encode_with_words(clf.tokenizer, [text], clf.max_length)
        ids, mask = inputs["input_ids"], inputs["attention_mask"]

        # captum differentiates w.r.t. the embeddings the model receives as inputs_embeds
        def forward(embeds, ids=ids, mask=mask):
            kwargs = model_inputs(handle, ids, mask)
            del kwargs["input_ids"]
            return clf.model(inputs_embeds=embeds, **kwargs).logits.log_softmax(-1)

        embeds = embedding(ids).detach().requires_grad_(True)
        ref_tokens = captum_attr.InputXGradient(forward).attribute(embeds, target=target).sum(-1)
        ref = words_from_tokens(ref_tokens, alignments, clf.tokenizer.padding_side)[0]
        assert att.words == split_words(text)
        assert np.abs(ref).max() > 1e-6
        np.testing.assert_allclose(att.scores, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_known_answer_model_exact_values(bag_model):
    model, tokenizer = bag_model
    text = "I need a refund for my card"
    (att,) = GradientXInput(model, tokenizer, output="logit", max_length=32).attribute([text], [1])
    # linear model: d logit_1 / d e = W[1] for every token, so GxI = e . W[1]
    with torch.no_grad():
        enc = tokenizer(split_words(text), add_special_tokens=False)["input_ids"]
        exact = [float((model.embed.weight[ids] @ model.head.weight[1]).sum()) for ids in enc]
    np.testing.assert_allclose(att.scores, exact, rtol=1e-5, atol=1e-7)
    assert att.top(1)[0][0] == "refund"
    for output in ("logprob", "prob"):
        (att,) = GradientXInput(model, tokenizer, output=output, max_length=32).attribute([text], [1])
        assert att.top(1)[0][0] == "refund", output
    # the keyword speaks for class 1 only: for class 0 it must not be the top word
    (other,) = GradientXInput(model, tokenizer, output="logprob", max_length=32).attribute([text], [0])
    assert other.top(1)[0][0] != "refund"


def test_deterministic_and_batch_independent(tiny_models, sample_texts):
    clf = tiny_models["llama"]
    gxi = GradientXInput(clf)
    first = gxi.attribute(sample_texts, [0, 1, 2, 0])
    again = gxi.attribute(sample_texts, [0, 1, 2, 0])
    for i, (a, b) in enumerate(zip(first, again, strict=True)):
        np.testing.assert_array_equal(a.scores, b.scores)
        (alone,) = gxi.attribute([sample_texts[i]], [[0, 1, 2, 0][i]])
        np.testing.assert_allclose(alone.scores, a.scores, rtol=1e-4, atol=1e-6)


def test_differentiable_for_student_training(tiny_models, sample_texts):
    clf = tiny_models["bert"]
    handle = resolve_model(clf)
    inputs, _ = encode_with_words(clf.tokenizer, sample_texts[:3], clf.max_length)
    args = (handle, inputs["input_ids"], inputs["attention_mask"], torch.tensor([0, 1, 2]))
    plain = gradient_x_input_tokens(*args)
    graph = gradient_x_input_tokens(*args, create_graph=True)
    torch.testing.assert_close(graph.detach(), plain)
    clf.model.zero_grad()
    graph.abs().sum().backward()
    grad = clf.model.classifier.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    clf.model.zero_grad()
