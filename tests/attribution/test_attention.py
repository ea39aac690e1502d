"""The attention prior equals the attention row computed by hand from the last layer's weights."""

from __future__ import annotations

import math

import numpy as np
import torch

from rationalign.attribution.attention import AttentionPrior
from rationalign.attribution.integrated_gradients import words_from_tokens
from rationalign.attribution.words import encode_with_words, split_words


def _softmax_row(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Head-averaged attention ``[T, T]`` from per-head queries/keys ``[heads, T, d]``."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias
    return scores.softmax(-1).mean(0)


def test_bert_cls_row_equals_manual_attention(tiny_models, sample_texts):
    clf = tiny_models["bert"]
    prior = AttentionPrior(clf)
    assert prior.query == "first"
    atts = prior.attribute(sample_texts, [0, 1, 2, 0])
    inputs, alignments = encode_with_words(clf.tokenizer, sample_texts, clf.max_length)
    with torch.no_grad():
        hidden = clf.model(**inputs, output_hidden_states=True).hidden_states[-2]  # input of the last layer
    attn = clf.model.backbone.encoder.layer[-1].attention.self
    heads = clf.model.config.num_attention_heads
    for i, att in enumerate(atts):
        real = inputs["attention_mask"][i].bool()
        h = hidden[i]
        with torch.no_grad():
            q = attn.query(h).view(h.shape[0], heads, -1).transpose(0, 1)
            k = attn.key(h).view(h.shape[0], heads, -1).transpose(0, 1)
        bias = torch.where(real, 0.0, torch.finfo(torch.float32).min)
        row = _softmax_row(q, k, bias)[0] * real
        expected = words_from_tokens(row[None], [alignments[i]], "right")[0]
        assert att.words == split_words(sample_texts[i])
        np.testing.assert_allclose(att.scores, expected, rtol=1e-5, atol=1e-7)
        # the word scores are the attention mass on words: below 1, the rest sits on [CLS]/[SEP]
        assert 0 < att.scores.sum() < 1


def test_llama_last_token_row_equals_manual_attention_and_kernel_is_restored(tiny_models, sample_texts):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    clf = tiny_models["llama"]
    model = clf.model
    assert model.config._attn_implementation == "sdpa"  # returns no weights: the prior must switch
    prior = AttentionPrior(clf)
    assert prior.query == "last"
    batch = prior.attribute(sample_texts, [0, 1, 2, 0])
    assert model.config._attn_implementation == "sdpa"
    layer = model.model.layers[-1]
    cfg = model.config
    heads, head_dim = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    for text, att in zip(sample_texts, batch, strict=True):
        inputs, (alignment,) = encode_with_words(clf.tokenizer, [text], clf.max_length)  # unpadded
        n = inputs["input_ids"].shape[1]
        with torch.no_grad():
            hidden = model(**inputs, output_hidden_states=True).hidden_states[-2]
            h = layer.input_layernorm(hidden)
            q = layer.self_attn.q_proj(h).view(1, n, heads, head_dim).transpose(1, 2)
            k = layer.self_attn.k_proj(h).view(1, n, heads, head_dim).transpose(1, 2)
            cos, sin = model.model.rotary_emb(h, torch.arange(n)[None])
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
        causal = torch.triu(torch.full((n, n), torch.finfo(torch.float32).min), diagonal=1)
        row = _softmax_row(q[0], k[0], causal)[-1]
        expected = words_from_tokens(row[None], [alignment], "left")[0]
        # the left-padded batch (position ids from the first real token) gives the unpadded answer
        np.testing.assert_allclose(att.scores, expected, rtol=1e-4, atol=1e-6)


def test_deterministic_and_query_choice_matters(tiny_models, sample_texts):
    clf = tiny_models["mpnet"]
    first = AttentionPrior(clf).attribute(sample_texts, [0, 0, 0, 0])
    again = AttentionPrior(clf).attribute(sample_texts, [1, 1, 1, 1])  # attention ignores the target
    last = AttentionPrior(clf, query="last").attribute(sample_texts, [0, 0, 0, 0])
    for a, b, c in zip(first, again, last, strict=True):
        np.testing.assert_array_equal(a.scores, b.scores)
        assert a.meta["query"] == "first" and c.meta["query"] == "last"
    assert any(not np.allclose(a.scores, c.scores) for a, c in zip(first, last, strict=True))
