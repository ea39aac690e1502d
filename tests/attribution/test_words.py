"""Word segmentation, token <-> word alignment for three tokenizer families, pooling, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rationalign.attribution.base import Attributor, WordAttribution, normalise
from rationalign.attribution.integrated_gradients import IntegratedGradients
from rationalign.attribution.words import (
    WORD_PATTERN,
    WordAlignment,
    encode_with_words,
    join_words,
    pool_to_words,
    split_words,
    token_word_index,
    word_spans,
)

ARCHS = ("bert", "mpnet", "llama")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "Why isn't my card's top-up working?",
            ["Why", "isn't", "my", "card's", "top", "-", "up", "working", "?"],
        ),
        ("hi,  there!!", ["hi", ",", "there", "!", "!"]),
        ("I’m at the café", ["I’m", "at", "the", "café"]),
        ("rock 'n' roll", ["rock", "'", "n", "'", "roll"]),
        ("pay £20.50 now", ["pay", "£", "20", ".", "50", "now"]),
        ("", []),
        ("   ", []),
    ],
)
def test_split_words(text, words):
    assert split_words(text) == words
    assert [text[s:e] for s, e in word_spans(text)] == words
    assert WORD_PATTERN.findall(text) == words


def test_join_words_is_canonical_text_after_deletion():
    words = split_words("Why isn't my card's top-up working?")
    kept = [w for i, w in enumerate(words) if i not in (2, 5)]
    assert join_words(kept) == "Why isn't card's top up working ?"
    assert split_words(join_words(kept)) == kept


def _token_chars(text, offsets, mask):
    """Offsets of real tokens with leading whitespace removed (BPE/SentencePiece carry the space)."""
    out = []
    for (s, e), m in zip(offsets, mask, strict=True):
        while s < e and text[s].isspace():
            s += 1
        out.append((s, e) if m else None)
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_every_token_maps_to_the_word_that_contains_it(tiny_models, sample_texts, arch):
    tokenizer = tiny_models[arch].tokenizer
    texts = [*sample_texts, "hi  there,  you", "I’m here... ok"]
    inputs, alignments = encode_with_words(tokenizer, texts, max_length=64)
    enc = tokenizer(texts, padding=True, return_offsets_mapping=True, return_special_tokens_mask=True)
    assert inputs["input_ids"].tolist() == enc["input_ids"]
    for i, (text, al) in enumerate(zip(texts, alignments, strict=True)):
        assert al.words == split_words(text)
        assert len(al.token_to_word) == inputs["input_ids"].shape[1]
        spans = word_spans(text)
        chars = _token_chars(text, enc["offset_mapping"][i], enc["attention_mask"][i])
        for t, w in enumerate(al.token_to_word):
            special = enc["special_tokens_mask"][i][t] or not enc["attention_mask"][i][t]
            if special:
                assert w == -1
                continue
            s, e = chars[t]
            if s == e:  # a whitespace-only token belongs to the word it prefixes
                assert spans[w][0] >= s
                continue
            assert spans[w][0] <= s < spans[w][1], (arch, text, t, w)
        # every word of an untruncated text has a token, except when one token spans several words
        # (byte-level BPE's "..."): it counts for the first of them
        covered = set(al.token_to_word) - {-1}
        if arch == "llama" and "..." in text:
            dots = text.index("...")
            first_dot = next(w for w, (s, _) in enumerate(spans) if s == dots)
            assert first_dot in covered and first_dot + 1 not in covered and first_dot + 2 not in covered
            covered |= {first_dot + 1, first_dot + 2}
        assert covered == set(range(len(spans)))


def test_left_padding_is_respected(tiny_models):
    tokenizer = tiny_models["llama"].tokenizer
    assert tokenizer.padding_side == "left"
    inputs, alignments = encode_with_words(tokenizer, ["hi", "cancel my transfer now"], max_length=64)
    short = alignments[0].token_to_word
    assert short[-1] == 0 and all(w == -1 for w in short[:-1])
    assert inputs["attention_mask"][0, -1] == 1 and inputs["attention_mask"][0, 0] == 0
    index = token_word_index(alignments, inputs["input_ids"].shape[1], "left")
    assert index[0].tolist() == short


def test_truncation_keeps_partial_words_and_drops_the_rest(tiny_models):
    tokenizer = tiny_models["bert"].tokenizer
    text = "unbelievably long utterance"
    _, (al_full,) = encode_with_words(tokenizer, [text], max_length=64)
    n_first = al_full.token_to_word.count(0)
    assert n_first >= 2, "the first word should be split into subwords for this test to mean anything"
    # room for [CLS], all but the last subword of the first word, and [SEP]
    _, (al,) = encode_with_words(tokenizer, [text], max_length=n_first + 1)
    assert al.words == split_words(text)
    assert al.token_to_word == [-1] + [0] * (n_first - 1) + [-1]


def test_token_word_index_pads_and_rejects_overlong():
    als = [WordAlignment(["a", "b"], [-1, 0, 1, -1]), WordAlignment(["c"], [-1, 0])]
    right = token_word_index(als, 5)
    assert right.tolist() == [[-1, 0, 1, -1, -1], [-1, 0, -1, -1, -1]]
    left = token_word_index(als, 5, "left")
    assert left.tolist() == [[-1, -1, 0, 1, -1], [-1, -1, -1, -1, 0]]
    with pytest.raises(ValueError, match="seq_len"):
        token_word_index(als, 3)


def test_pool_to_words_sums_subwords_and_is_differentiable():
    scores = torch.tensor([[0.5, 1.0, 2.0, 4.0, 8.0]], requires_grad=True)
    index = torch.tensor([[-1, 0, 0, 2, 7]])  # 7 >= n_words: dropped like -1
    pooled = pool_to_words(scores, index, 3)
    assert pooled.tolist() == [[3.0, 0.0, 4.0]]
    weights = torch.tensor([[1.0, 10.0, 100.0]])
    (pooled * weights).sum().backward()
    assert scores.grad.tolist() == [[0.0, 1.0, 1.0, 100.0, 0.0]]
    with pytest.raises(ValueError):
        pool_to_words(scores, index[:, :3], 3)


# ------------------------------------------------------------------------------------------- base.py
def test_normalise_sum_clips_negatives_and_keeps_zero_rows():
    np.testing.assert_allclose(normalise([1.0, -2.0, 3.0]), [0.25, 0.0, 0.75])
    np.testing.assert_array_equal(normalise([0.0, -1.0]), [0.0, 0.0])
    np.testing.assert_allclose(normalise([[1.0, 1.0], [0.0, 2.0]]), [[0.5, 0.5], [0.0, 1.0]])
    assert normalise([]).shape == (0,)


def test_normalise_minmax_and_softmax():
    np.testing.assert_allclose(normalise([1.0, 3.0, 2.0], "minmax"), [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(normalise([2.0, 2.0], "minmax"), [0.0, 0.0])
    soft = normalise([0.0, np.log(3.0)], "softmax")
    np.testing.assert_allclose(soft, [0.25, 0.75])
    sharper = normalise([0.0, np.log(3.0)], "softmax", temperature=0.5)
    np.testing.assert_allclose(sharper, [0.1, 0.9])
    with pytest.raises(ValueError):
        normalise([1.0], "softmax", temperature=0)
    with pytest.raises(ValueError):
        normalise([1.0], "rank")


def test_word_attribution_checks_shape_and_methods_follow_the_protocol(bag_model):
    with pytest.raises(ValueError):
        WordAttribution(["a", "b"], np.zeros(3), "x", 0)
    att = WordAttribution(["a", "b", "c"], [0.1, 0.5, 0.2], "x", 1)
    assert att.top(2) == [("b", 0.5), ("c", 0.2)]
    model, tokenizer = bag_model
    assert isinstance(IntegratedGradients(model, tokenizer, max_length=32), Attributor)
