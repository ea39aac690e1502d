"""Which words carry a label, and which other label each label is most easily confused with.

**Label keywords from PMI.** On a labelled split, ``c(w, y)`` counts the utterances of label ``y`` that
contain word ``w`` (once per utterance), ``c(w)`` all utterances containing ``w``, ``n_y`` the utterances
of ``y`` and ``N`` all of them. With additive smoothing ``alpha`` spread over the ``L`` labels,

    p(y | w) = (c(w, y) + alpha) / (c(w) + alpha * L),     PMI(w, y) = log p(y | w) - log(n_y / N).

Smoothing pulls rare words towards "no association", so a word seen once in one label does not beat a
word seen twenty times there. Words come from the shared segmentation (``attribution.words``), lowercased;
only alphabetic words of 2+ letters that are not stopwords count, and a word needs ``c(w, y) >= min_count``
to be a keyword of ``y``. Per label, the ``top_k`` words by PMI (ties: more frequent first, then
alphabetical) are its keywords.

**Keywords from a prior.** Given word attributions (``WordAttribution`` for the gold label of each
utterance, e.g. a teacher's CAP prior), a word's score for a label is its mean attribution over the
utterances of that label it occurs in (needing ``min_count`` occurrences).

**Sharedness.** ``sharedness(w, y, c) = min(p(y|w), p(c|w)) / max(p(y|w), p(c|w))`` in [0, 1]: 1 when the
word is as typical of ``c`` as of ``y`` (it cannot tell them apart), near 0 when it belongs to one.

**Most confusable class.** With a model: soft confusion on validation, ``S[y, c]`` = mean predicted
probability of ``c`` over the utterances of gold ``y``, symmetrised (``S + S^T``); the confusable class of
``y`` is ``argmax_{c != y} S[y, c]``. Without a model: cosine similarity of the labels' positive-PMI
vectors over the vocabulary (labels whose typical words overlap), ties broken by shared label-name tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rationalign.attribution.words import split_words
from rationalign.data.types import IntentDataset, LabelSpace
from rationalign.errors import ConfigError, DataError

# A small English stopword list (function words, pronouns, auxiliaries, politeness fillers). Short on
# purpose: content words such as "card", "top", "check" must stay candidates.
STOPWORDS: frozenset[str] = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "aren't",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "can't",
        "cannot",
        "could",
        "couldn't",
        "did",
        "didn't",
        "do",
        "does",
        "doesn't",
        "doing",
        "don't",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "hadn't",
        "has",
        "hasn't",
        "have",
        "haven't",
        "having",
        "he",
        "he'd",
        "he'll",
        "he's",
        "her",
        "here",
        "here's",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "how's",
        "i",
        "i'd",
        "i'll",
        "i'm",
        "i've",
        "if",
        "in",
        "into",
        "is",
        "isn't",
        "it",
        "it's",
        "its",
        "itself",
        "let's",
        "me",
        "more",
        "most",
        "mustn't",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "ought",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "shan't",
        "she",
        "she'd",
        "she'll",
        "she's",
        "should",
        "shouldn't",
        "so",
        "some",
        "such",
        "than",
        "that",
        "that's",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "there's",
        "these",
        "they",
        "they'd",
        "they'll",
        "they're",
        "they've",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "wasn't",
        "we",
        "we'd",
        "we'll",
        "we're",
        "we've",
        "were",
        "weren't",
        "what",
        "what's",
        "when",
        "when's",
        "where",
        "where's",
        "which",
        "while",
        "who",
        "who's",
        "whom",
        "why",
        "why's",
        "will",
        "with",
        "won't",
        "would",
        "wouldn't",
        "you",
        "you'd",
        "you'll",
        "you're",
        "you've",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "please",
        "hi",
        "hello",
        "hey",
        "thanks",
        "thank",
        "okay",
        "ok",
        "just",
        "also",
        "get",
        "got",
        "im",
        "ive",
        "dont",
        "cant",
        "wont",
        "id",
        "would",
        "like",
        "want",
        "need",
        "know",
        "tell",
        "much",
        "many",
        "really",
    ]
)


def content_words(text: str, stopwords: frozenset[str] = STOPWORDS) -> list[str]:
    """Lowercased words of ``text`` that may carry a label: alphabetic, 2+ letters, not stopwords."""
    return [w for w in (t.lower() for t in split_words(text)) if is_content_word(w, stopwords)]


def is_content_word(word: str, stopwords: frozenset[str] = STOPWORDS) -> bool:
    lowered = word.lower()
    return len(lowered) >= 2 and lowered.replace("'", "").isalpha() and lowered not in stopwords


@dataclass(frozen=True)
class Keyword:
    word: str
    label: str
    score: float
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.word, "label": self.label, "score": self.score, "count": self.count}


@dataclass
class PMIStats:
    """Word-label co-occurrence counts of one split and the smoothed PMI matrix ``[V, L]``."""

    vocabulary: list[str]
    labels: list[str]
    counts: np.ndarray  # [V, L] utterances of label y containing w
    label_sizes: np.ndarray  # [L]
    alpha: float
    _word_ids: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._word_ids = {w: i for i, w in enumerate(self.vocabulary)}
        self._label_ids = {y: i for i, y in enumerate(self.labels)}
        word_totals = self.counts.sum(axis=1, keepdims=True)
        n_labels = len(self.labels)
        self.conditional = (self.counts + self.alpha) / (word_totals + self.alpha * n_labels)  # p(y|w)
        prior = self.label_sizes / self.label_sizes.sum()
        self.pmi = np.log(self.conditional) - np.log(prior)[None, :]

    def word_id(self, word: str) -> int | None:
        return self._word_ids.get(word.lower())

    def label_id(self, label: str) -> int:
        if label not in self._label_ids:
            raise DataError(f"label {label!r} does not occur in the keyword statistics' split")
        return self._label_ids[label]

    def score(self, word: str, label: str) -> float:
        """PMI(word, label); 0 for a word never seen (no evidence either way)."""
        i = self.word_id(word)
        return 0.0 if i is None else float(self.pmi[i, self.label_id(label)])

    def count(self, word: str, label: str) -> int:
        i = self.word_id(word)
        return 0 if i is None else int(self.counts[i, self.label_id(label)])

    def sharedness(self, word: str, label: str, other: str) -> float:
        """min/max of p(label|w) and p(other|w); 0 for an unseen word."""
        i = self.word_id(word)
        if i is None:
            return 0.0
        a = self.conditional[i, self.label_id(label)]
        b = self.conditional[i, self.label_id(other)]
        return float(min(a, b) / max(a, b))

    def label_vectors(self) -> np.ndarray:
        """Positive PMI, one row per label ``[L, V]``, with words below 2 occurrences zeroed."""
        ppmi = np.where(self.counts >= 2, np.clip(self.pmi, 0.0, None), 0.0)
        return ppmi.T


def pmi_stats(
    dataset: IntentDataset,
    *,
    alpha: float = 1.0,
    stopwords: frozenset[str] = STOPWORDS,
) -> PMIStats:
    """Count word-label co-occurrences (once per utterance) of ``dataset``."""
    if alpha <= 0:
        raise ConfigError(f"alpha must be > 0, got {alpha}; fix: use 1.0 (add-one smoothing)")
    if len(dataset) == 0:
        raise DataError(f"{dataset.name}: no examples to count keywords on; fix: pass the training split")
    labels = sorted(set(dataset.labels))
    label_ids = {y: i for i, y in enumerate(labels)}
    vocab: dict[str, int] = {}
    pairs: list[tuple[int, int]] = []
    for example in dataset:
        y = label_ids[example.label]
        for word in set(content_words(example.text, stopwords)):
            pairs.append((vocab.setdefault(word, len(vocab)), y))
    counts = np.zeros((len(vocab), len(labels)), dtype=np.float64)
    if pairs:
        rows, cols = zip(*pairs, strict=True)
        np.add.at(counts, (np.array(rows), np.array(cols)), 1.0)
    sizes = np.bincount([label_ids[y] for y in dataset.labels], minlength=len(labels)).astype(np.float64)
    return PMIStats(list(vocab), labels, counts, sizes, alpha)


@dataclass
class KeywordTable:
    """Per label, its keywords, best first. ``source`` is ``"pmi"`` or ``"prior"``."""

    by_label: dict[str, list[Keyword]]
    source: str
    stats: PMIStats | None = field(default=None, repr=False)

    def top(self, label: str, k: int | None = None) -> list[str]:
        return [kw.word for kw in self.by_label.get(label, [])[:k]]

    def score(self, word: str, label: str) -> float | None:
        """The keyword score of ``word`` for ``label``, None when it is not one of its keywords."""
        lowered = word.lower()
        for kw in self.by_label.get(label, []):
            if kw.word == lowered:
                return kw.score
        return None

    def rank(self, word: str, label: str) -> int | None:
        lowered = word.lower()
        for i, kw in enumerate(self.by_label.get(label, [])):
            if kw.word == lowered:
                return i
        return None

    def labels_of(self, word: str) -> list[str]:
        lowered = word.lower()
        return [y for y, kws in self.by_label.items() if any(kw.word == lowered for kw in kws)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "labels": {y: [k.to_dict() for k in kws] for y, kws in self.by_label.items()},
        }


def pmi_keywords(
    dataset: IntentDataset | PMIStats,
    *,
    top_k: int = 10,
    min_count: int = 2,
    alpha: float = 1.0,
    stopwords: frozenset[str] = STOPWORDS,
) -> KeywordTable:
    """The ``top_k`` words of each label by smoothed PMI (see module docstring)."""
    if top_k < 1 or min_count < 1:
        raise ConfigError(f"top_k and min_count must be >= 1, got {top_k} and {min_count}")
    stats = dataset if isinstance(dataset, PMIStats) else pmi_stats(dataset, alpha=alpha, stopwords=stopwords)
    by_label: dict[str, list[Keyword]] = {}
    for j, label in enumerate(stats.labels):
        rows = np.flatnonzero(stats.counts[:, j] >= min_count)
        ranked = sorted(rows, key=lambda i: (-stats.pmi[i, j], -stats.counts[i, j], stats.vocabulary[i]))
        by_label[label] = [
            Keyword(stats.vocabulary[i], label, float(stats.pmi[i, j]), int(stats.counts[i, j]))
            for i in ranked[:top_k]
            if stats.pmi[i, j] > 0
        ]
    return KeywordTable(by_label, "pmi", stats)


def prior_keywords(
    attributions: Sequence[Any],
    labels: Sequence[str],
    *,
    top_k: int = 10,
    min_count: int = 2,
    stopwords: frozenset[str] = STOPWORDS,
) -> KeywordTable:
    """Keywords from word attributions (one per utterance, explaining ``labels[i]``): a word's score for a
    label is its mean attribution where it occurs in that label's utterances."""
    if len(attributions) != len(labels):
        raise DataError(
            f"{len(attributions)} attributions but {len(labels)} labels; fix: one label per prior"
        )
    if not attributions:
        raise DataError("no attributions to take keywords from; fix: pass the priors of a split")
    sums: dict[tuple[str, str], float] = {}
    counts: dict[tuple[str, str], int] = {}
    for attribution, label in zip(attributions, labels, strict=True):
        scores = np.asarray(attribution.scores, dtype=np.float64)
        for word, score in zip(attribution.words, scores, strict=True):
            lowered = word.lower()
            if not is_content_word(lowered, stopwords):
                continue
            key = (label, lowered)
            sums[key] = sums.get(key, 0.0) + float(score)
            counts[key] = counts.get(key, 0) + 1
    by_label: dict[str, list[Keyword]] = {y: [] for y in dict.fromkeys(labels)}
    for (label, word), total in sums.items():
        if counts[(label, word)] >= min_count:
            by_label[label].append(Keyword(word, label, total / counts[(label, word)], counts[(label, word)]))
    for label, kws in by_label.items():
        kws.sort(key=lambda kw: (-kw.score, -kw.count, kw.word))
        by_label[label] = kws[:top_k]
    return KeywordTable(by_label, "prior")


def label_carrying_positions(
    words: Sequence[str],
    label: str,
    *,
    keywords: KeywordTable | None = None,
    prior: Any | None = None,
    top_k: int = 3,
    stopwords: frozenset[str] = STOPWORDS,
) -> list[int]:
    """Word positions of one utterance that carry ``label``, most important first.

    With ``prior`` (a ``WordAttribution`` of these words): the ``top_k`` content words by prior score
    (positive scores only). Otherwise the content words that are keywords of ``label`` in ``keywords``,
    ordered by their keyword rank.
    """
    if prior is not None:
        scores = np.asarray(prior.scores, dtype=np.float64)
        if list(prior.words) != list(words):
            raise DataError(
                f"prior words {list(prior.words)} differ from the utterance's {list(words)}; "
                "fix: compute priors on the same text with rationalign.attribution's segmentation"
            )
        order = np.argsort(-scores, kind="stable")
        picked = [int(i) for i in order if scores[i] > 0 and is_content_word(words[i], stopwords)]
        return picked[:top_k]
    if keywords is None:
        raise ConfigError("label_carrying_positions needs keywords or a prior")
    ranked = [
        (rank, i)
        for i, w in enumerate(words)
        if is_content_word(w, stopwords) and (rank := keywords.rank(w, label)) is not None
    ]
    ranked.sort()
    seen: set[str] = set()
    out = []
    for _, i in ranked:
        if words[i].lower() not in seen:
            seen.add(words[i].lower())
            out.append(i)
    return out[:top_k]


# ------------------------------------------------------------------------------- confusable classes
def _argmax_other(
    similarity: np.ndarray, labels: Sequence[str], tie_break: np.ndarray | None
) -> dict[str, str]:
    out = {}
    for i, label in enumerate(labels):
        row = similarity[i].astype(np.float64).copy()
        row[i] = -np.inf
        best = row.max()
        candidates = np.flatnonzero(row >= best - 1e-12)
        if tie_break is not None and len(candidates) > 1:
            candidates = candidates[np.argsort(-tie_break[i, candidates], kind="stable")]
        out[label] = labels[int(candidates[0])]
    return out


def _name_overlap(labels: Sequence[str]) -> np.ndarray:
    tokens = [set(split_words(y.lower().replace("_", " "))) for y in labels]
    return np.array([[len(a & b) for b in tokens] for a in tokens], dtype=np.float64)


def confusable_from_probs(probs: Any, gold: Sequence[int], label_space: LabelSpace) -> dict[str, str]:
    """Most confusable class per label from a model's validation probabilities (soft confusion)."""
    array = np.asarray(probs, dtype=np.float64)
    gold_ids = np.asarray(gold, dtype=np.int64)
    n_labels = len(label_space)
    if array.ndim != 2 or array.shape != (gold_ids.size, n_labels):
        raise DataError(
            f"probabilities of shape {array.shape} do not match {gold_ids.size} labels x {n_labels} classes; "
            "fix: pass predict_proba on the validation split and its gold label ids"
        )
    soft = np.zeros((n_labels, n_labels))
    np.add.at(soft, gold_ids, array)
    support = np.bincount(gold_ids, minlength=n_labels).astype(np.float64)
    soft = soft / np.maximum(support, 1.0)[:, None]
    return _argmax_other(soft + soft.T, list(label_space.names), _name_overlap(label_space.names))


def confusable_from_confusion(confusion: Any, label_space: LabelSpace) -> dict[str, str]:
    """Most confusable class per label from a confusion matrix (row gold, column predicted)."""
    matrix = np.asarray(confusion, dtype=np.float64)
    n = len(label_space)
    if matrix.shape != (n, n):
        raise DataError(
            f"confusion matrix of shape {matrix.shape} for {n} labels; fix: use the model's label space"
        )
    return _argmax_other(matrix + matrix.T, list(label_space.names), _name_overlap(label_space.names))


def confusable_from_keywords(stats: PMIStats) -> dict[str, str]:
    """Most confusable class per label without a model: cosine of positive-PMI label vectors."""
    vectors = stats.label_vectors()
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    return _argmax_other(unit @ unit.T, stats.labels, _name_overlap(stats.labels))


def most_confusable(
    *,
    stats: PMIStats | None = None,
    probs: Any | None = None,
    gold: Sequence[int] | None = None,
    label_space: LabelSpace | None = None,
    confusion: Any | None = None,
) -> dict[str, str]:
    """Dispatch: soft confusion from ``probs``+``gold``, a ``confusion`` matrix, else PMI ``stats``."""
    if probs is not None:
        if gold is None or label_space is None:
            raise ConfigError("probs need gold label ids and the label space")
        return confusable_from_probs(probs, gold, label_space)
    if confusion is not None:
        if label_space is None:
            raise ConfigError("a confusion matrix needs the label space")
        return confusable_from_confusion(confusion, label_space)
    if stats is None:
        raise ConfigError("most_confusable needs a model's probabilities, a confusion matrix or PMI stats")
    return confusable_from_keywords(stats)
