"""One word segmentation for every attribution method, the student and evaluation.

A *word* is a run of word characters with inner apostrophes (``don't``, ``card's``), or any single other
non-space character (``?``, ``,``, ``-``). Scores are given per word; subword tokens are mapped onto the
word whose character span contains them, for any fast tokenizer (WordPiece, byte-level BPE whose tokens
carry a leading space, SentencePiece ``▁`` tokens).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

# \w+ joined by inner apostrophes (ASCII ' and the typographic ’), else one non-space character.
WORD_PATTERN = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


def split_words(text: str) -> list[str]:
    """The words of ``text`` in order (see module docstring)."""
    return WORD_PATTERN.findall(text)


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of :func:`split_words` ``(text)``."""
    return [m.span() for m in WORD_PATTERN.finditer(text)]


def join_words(words: Sequence[str]) -> str:
    """The canonical text of a word list (``" ".join``): what a method feeds after deleting words."""
    return " ".join(words)


@dataclass
class WordAlignment:
    """The words of one text and, per token position of its encoded row, the word index (-1: none)."""

    words: list[str]
    token_to_word: list[int]

    @property
    def n_words(self) -> int:
        return len(self.words)


def align_offsets(
    text: str,
    offsets: Sequence[tuple[int, int]],
    special: Sequence[int],
    spans: list[tuple[int, int]] | None = None,
) -> list[int]:
    """Word index of each token given its char ``offsets`` and ``special`` flags (-1: special/pad/none).

    A token belongs to the word containing its first non-space character; a token spanning several
    words (BPE's "...") counts for the first.
    """
    spans = word_spans(text) if spans is None else spans
    # Map every word character to its word once, then look tokens up by their first non-space char.
    char_word = [-1] * len(text)
    for w, (s, e) in enumerate(spans):
        for c in range(s, e):
            char_word[c] = w
    out: list[int] = []
    for (s, e), is_special in zip(offsets, special, strict=True):
        if is_special or e <= s:
            out.append(-1)
            continue
        p = s
        # Byte-level BPE offsets include the leading space ("Ġcard" -> " card"); skip it.
        while p < e and text[p].isspace():
            p += 1
        if p < e:
            out.append(char_word[p])
            continue
        # A whitespace-only token (a lone SentencePiece "▁" or BPE "Ġ") belongs to the word it prefixes.
        while p < len(text) and text[p].isspace():
            p += 1
        out.append(char_word[p] if p < len(text) else -1)
    return out


def encode_with_words(
    tokenizer,
    texts: Sequence[str],
    max_length: int,
    device: str | torch.device | None = None,
) -> tuple[dict[str, torch.Tensor], list[WordAlignment]]:
    """Tokenise ``texts`` (padded to the longest, truncated at ``max_length``) and align tokens to words.

    Returns the model inputs (``input_ids``, ``attention_mask``) and one :class:`WordAlignment` per text
    whose ``token_to_word`` has one entry per column of the padded batch (so it follows
    ``tokenizer.padding_side``). Words cut off by truncation have no token and score 0 downstream.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("encode_with_words needs a fast tokenizer (offset mappings)")
    texts = list(texts)
    enc = tokenizer(
        texts,
        padding=True,
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_tensors="pt",
    )
    offsets = enc["offset_mapping"].tolist()
    special = enc["special_tokens_mask"].tolist()
    mask = enc["attention_mask"].tolist()
    alignments = []
    for i, text in enumerate(texts):
        spans = word_spans(text)
        # Padding positions are special too; the attention mask makes sure.
        row_special = [int(sp or not m) for sp, m in zip(special[i], mask[i], strict=True)]
        token_to_word = align_offsets(text, offsets[i], row_special, spans)
        alignments.append(WordAlignment([text[s:e] for s, e in spans], token_to_word))
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if device is not None:
        inputs = {k: v.to(device) for k, v in inputs.items()}
    return inputs, alignments


def token_word_index(
    alignments: Sequence[WordAlignment], seq_len: int, padding_side: str = "right"
) -> torch.Tensor:
    """``LongTensor[B, seq_len]`` of word indices per token position, -1 for special/pad positions.

    Alignments shorter than ``seq_len`` are padded with -1 on ``padding_side``; longer ones are an error.
    """
    index = torch.full((len(alignments), seq_len), -1, dtype=torch.long)
    for i, al in enumerate(alignments):
        n = len(al.token_to_word)
        if n > seq_len:
            raise ValueError(f"alignment {i} has {n} token positions, more than seq_len={seq_len}")
        row = torch.as_tensor(al.token_to_word, dtype=torch.long)
        if padding_side == "left":
            index[i, seq_len - n :] = row
        else:
            index[i, :n] = row
    return index


def pool_to_words(token_scores: torch.Tensor, index: torch.Tensor, n_words: int) -> torch.Tensor:
    """Sum token scores ``[B, T]`` into word scores ``[B, n_words]`` (differentiable, ``scatter_add``).

    Positions with index -1 (or >= ``n_words``) are dropped.
    """
    if token_scores.shape != index.shape:
        raise ValueError(f"token_scores {tuple(token_scores.shape)} and index {tuple(index.shape)} differ")
    index = index.to(token_scores.device)
    # Route dropped positions to an extra bin that is cut off afterwards.
    bins = torch.where((index < 0) | (index >= n_words), torch.full_like(index, n_words), index)
    out = token_scores.new_zeros(token_scores.shape[0], n_words + 1)
    out = out.scatter_add(1, bins, token_scores)
    return out[:, :n_words]
