"""Our batched Integrated Gradients against captum, completeness, a known answer, invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rationalign.attribution.integrated_gradients import (
    IntegratedGradients,
    model_inputs,
    pad_baseline_ids,
    path_integrated_gradients,
    quadrature,
    resolve_model,
    words_from_tokens,
)
from rationalign.attribution.words import encode_with_words, split_words

captum_attr = pytest.importorskip("captum.attr")
ARCHS = ("bert", "mpnet", "llama")


def captum_word_scores(clf, text, target, n_steps, method, output):
    """captum's LayerIntegratedGradients on the input-embedding layer, one utterance, pooled to words."""
    handle = resolve_model(clf)
    inputs, alignments = encode_with_words(clf.tokenizer, [text], clf.max_length)
    baseline = pad_baseline_ids(inputs["input_ids"], inputs["attention_mask"], clf.tokenizer)

    def forward(input_ids, attention_mask):
        logits = clf.model(**model_inputs(handle, input_ids, attention_mask)).logits
        return {"logit": logits, "logprob": logits.log_softmax(-1), "prob": logits.softmax(-1)}[output]

    lig = captum_attr.LayerIntegratedGradients(forward, clf.model.get_input_embeddings())
    attributions = lig.attribute(
        inputs["input_ids"],
        baselines=baseline,
        target=target,
        additional_forward_args=(inputs["attention_mask"],),
        n_steps=n_steps,
        method=method,
        internal_batch_size=n_steps,
    )
    return words_from_tokens(attributions.sum(-1), alignments, clf.tokenizer.padding_side)[0]


def test_quadrature_matches_captum():
    from captum.attr._utils.approximation_methods import approximation_parameters

    for n in (1, 7, 32):
        step_sizes, alphas = approximation_parameters("gausslegendre")
        a, w = quadrature(n, "gausslegendre")
        np.testing.assert_allclose(a, alphas(n), rtol=1e-12)
        np.testing.assert_allclose(w, step_sizes(n), rtol=1e-12)
        assert w.sum() == pytest.approx(1.0)
    step_sizes, alphas = approximation_parameters("riemann_trapezoid")
    a, w = quadrature(9, "riemann_trapezoid")
    np.testing.assert_allclose(a, alphas(9), atol=1e-7)
    # captum's trapezoid steps are 1/n instead of 1/(n-1): ours is the true rule, weights summing to 1
    np.testing.assert_allclose(w * 8 / 9, step_sizes(9), rtol=1e-12)
    assert w.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("arch", ARCHS)
def test_agrees_with_captum_layer_integrated_gradients(tiny_models, sample_texts, arch):
    clf = tiny_models[arch]
    targets = [0, 1, 2, 1]
    # internal_batch=7 splits rows across utterances and steps: the accumulation must still be exact
    ours = IntegratedGradients(clf, n_steps=16, internal_batch=7, batch_size=3).attribute(
        sample_texts, targets
    )
    for text, target, att in zip(sample_texts, targets, ours, strict=True):
        assert att.words == split_words(text)
        ref = captum_word_scores(clf, text, target, 16, "gausslegendre", "logprob")
        scale = np.abs(ref).max()
        assert scale > 1e-6
        np.testing.assert_allclose(att.scores, ref, rtol=0, atol=1e-5 * scale + 1e-8)


@pytest.mark.parametrize("output", ["logit", "prob"])
def test_agrees_with_captum_for_every_output_and_trapezoid(tiny_models, sample_texts, output):
    clf = tiny_models["bert"]
    text, target, n = sample_texts[0], 2, 12
    ours = IntegratedGradients(clf, n_steps=n, output=output, method="riemann_trapezoid").attribute(
        [text], [target]
    )
    ref = captum_word_scores(clf, text, target, n, "riemann_trapezoid", output) * n / (n - 1)
    np.testing.assert_allclose(ours[0].scores, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_completeness_error_shrinks_with_steps(tiny_models, sample_texts):
    text, target = sample_texts[2], 0
    for arch in ("bert", "llama"):
        clf = tiny_models[arch]
        deltas = {}
        for n in (4, 16, 64):
            (att,) = IntegratedGradients(clf, n_steps=n, method="riemann_trapezoid").attribute(
                [text], [target]
            )
            deltas[n] = abs(att.meta["delta"])
        # the trapezoid rule's error falls about 16x per 4x steps on a smooth path; ask for 3x
        assert deltas[4] > 3 * deltas[16] > 9 * deltas[64], (arch, deltas)
    # Gauss-Legendre converges much faster: with enough steps the sum of attributions is F(x) - F(x').
    # The random tiny causal LM is far from linear along the path, so it needs many steps.
    for arch, n in (("bert", 16), ("llama", 256)):
        (att,) = IntegratedGradients(tiny_models[arch], n_steps=n).attribute([text], [target])
        gap = att.meta["f_input"] - att.meta["f_baseline"]
        assert abs(gap) > 1e-3
        assert abs(att.meta["delta"]) < 1e-3 * abs(gap), (arch, att.meta)


def test_meta_endpoints_are_the_models_own_outputs(tiny_models, sample_texts):
    for arch in ("bert", "llama"):
        clf = tiny_models[arch]
        atts = IntegratedGradients(clf, n_steps=8).attribute(sample_texts, [0, 1, 2, 0])
        for i, (text, att) in enumerate(zip(sample_texts, atts, strict=True)):
            # one utterance at a time, unpadded: the plain model, no hooks
            enc = clf.tokenizer([text], return_tensors="pt")
            with torch.no_grad():
                logprob = clf.model(**enc).logits.log_softmax(-1)[0, [0, 1, 2, 0][i]]
            assert att.meta["f_input"] == pytest.approx(float(logprob), abs=1e-5)
            assert att.meta["output"] == "logprob" and att.meta["n_steps"] == 8


def test_known_answer_model_ranks_the_keyword_first_with_exact_values(bag_model):
    model, tokenizer = bag_model
    texts = ["I need a refund for my card", "refund", "where is my refund ?"]
    for output in ("logit", "logprob", "prob"):
        atts = IntegratedGradients(model, tokenizer, n_steps=8, output=output, max_length=32).attribute(
            texts, [1, 1, 1]
        )
        for att in atts:
            assert att.top(1)[0][0] == "refund", (output, att.words, att.scores)
    # The model is linear and PAD's embedding is zero: the logit's IG is exactly e(token) . W[target].
    (att,) = IntegratedGradients(model, tokenizer, n_steps=2, output="logit", max_length=32).attribute(
        [texts[0]], [1]
    )
    with torch.no_grad():
        enc = tokenizer(split_words(texts[0]), add_special_tokens=False)["input_ids"]
        exact = [float((model.embed.weight[ids] @ model.head.weight[1]).sum()) for ids in enc]
    np.testing.assert_allclose(att.scores, exact, rtol=1e-5, atol=1e-7)
    assert att.scores[split_words(texts[0]).index("refund")] == pytest.approx(2 * 1.5 * 2.0, rel=1e-5)


def test_deterministic_and_independent_of_batch_and_order(tiny_models, sample_texts):
    for arch in ("bert", "llama"):
        clf = tiny_models[arch]
        ig = IntegratedGradients(clf, n_steps=8, internal_batch=16)
        first = ig.attribute(sample_texts, [2, 1, 0, 1])
        again = ig.attribute(sample_texts, [2, 1, 0, 1])
        for a, b in zip(first, again, strict=True):
            np.testing.assert_array_equal(a.scores, b.scores)
        # each utterance alone (no padding) must give what it got inside a padded, sorted batch
        for i in range(len(sample_texts)):
            (alone,) = ig.attribute([sample_texts[i]], [[2, 1, 0, 1][i]])
            np.testing.assert_allclose(alone.scores, first[i].scores, rtol=1e-4, atol=1e-6)
        reversed_ = ig.attribute(sample_texts[::-1], [1, 0, 1, 2])
        for a, b in zip(reversed_[::-1], first, strict=True):
            assert a.words == b.words
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-6)


def test_differentiable_path_matches_and_backpropagates(tiny_models, sample_texts):
    clf = tiny_models["bert"]
    handle = resolve_model(clf)
    inputs, _ = encode_with_words(clf.tokenizer, sample_texts[:2], clf.max_length)
    baseline = pad_baseline_ids(inputs["input_ids"], inputs["attention_mask"], clf.tokenizer)
    alphas, weights = quadrature(4, "gausslegendre")
    kwargs = dict(baseline_ids=baseline, alphas=alphas, weights=weights, internal_batch=5)
    plain = path_integrated_gradients(handle, inputs["input_ids"], inputs["attention_mask"], [0, 1], **kwargs)
    graph = path_integrated_gradients(
        handle, inputs["input_ids"], inputs["attention_mask"], [0, 1], create_graph=True, **kwargs
    )
    torch.testing.assert_close(graph.token_scores.detach(), plain.token_scores, rtol=1e-5, atol=1e-7)
    assert graph.token_scores.requires_grad
    clf.model.zero_grad()
    graph.token_scores.pow(2).sum().backward()
    head_grad = clf.model.classifier.weight.grad
    emb_grad = clf.model.get_input_embeddings().weight.grad
    assert head_grad is not None and head_grad.abs().sum() > 0
    assert emb_grad is not None and emb_grad.abs().sum() > 0
    clf.model.zero_grad()


def test_rejects_bad_targets_and_handles_empty(tiny_models):
    ig = IntegratedGradients(tiny_models["bert"], n_steps=4)
    assert ig.attribute([], []) == []
    with pytest.raises(ValueError, match="targets"):
        ig.attribute(["a", "b"], [0])
    with pytest.raises(ValueError, match="out of range"):
        ig.attribute(["a"], [3])
    with pytest.raises(ValueError, match="output"):
        IntegratedGradients(tiny_models["bert"], output="softmax")
    (att,) = ig.attribute(["?!"], [0])
    assert att.words == ["?", "!"] and np.isfinite(att.scores).all()


def test_bfloat16_autocast_stays_close_to_float32(tiny_models, sample_texts, bag_model):
    clf = tiny_models["mpnet"]
    fp32 = IntegratedGradients(clf, n_steps=8).attribute(sample_texts, [0, 1, 2, 0])
    bf16 = IntegratedGradients(clf, n_steps=8, precision="bfloat16").attribute(sample_texts, [0, 1, 2, 0])
    for a, b in zip(fp32, bf16, strict=True):
        assert b.meta["precision"] == "bfloat16" and b.scores.dtype == np.float64
        assert not np.array_equal(a.scores, b.scores)  # it really ran in lower precision
        if len(a.scores) > 1:
            assert np.corrcoef(a.scores, b.scores)[0, 1] > 0.9
    model, tokenizer = bag_model
    (att,) = IntegratedGradients(model, tokenizer, precision="bfloat16", max_length=32).attribute(
        ["I need a refund for my card"], [1]
    )
    assert att.top(1)[0][0] == "refund"
    with pytest.raises(ValueError, match="precision"):
        IntegratedGradients(clf, precision="float16")
