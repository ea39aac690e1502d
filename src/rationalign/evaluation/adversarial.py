"""Adversarial keyword substitution: replace the words that carry the label, keep the gold intent.

Three generators, each deterministic under a seed (the random stream of utterance ``i`` is
``numpy.random.default_rng([seed, crc32(generator name), i])``, so results do not depend on the batch):

- :class:`SynonymSwap`: a label-carrying word (top PMI keyword of the gold label, or top prior word) is
  replaced by a WordNet synonym for its guessed part of speech, re-inflected like the original word
  (``charged`` -> ``billed``; irregular forms are skipped). Words inside compounds (``credit card``,
  ``top up``, ``top-up``) are left alone and synonyms that WordPiece splits (rare words such as
  ``requital``) are dropped. With ``swaps=2`` one candidate replaces two of the top three such words
  at once (a harder attack under the same threshold; the generator is then named ``synonym_x2``, so its
  set can be merged with a one-word set by :meth:`AttackSet.merge`). Candidates are scored by the
  cosine similarity of the MiniLM sentence embeddings of the original and the edited utterance
  (``validity``, threshold 0.85); the best ``n_per_example`` per utterance are kept.
- :class:`ConfusableKeywordSwap`: a label-carrying word is replaced by a keyword of the gold label's most
  confusable class. The intent must survive the swap, which is checked one of two ways:

  * with a reference model (a teacher; any ``predict_proba``): ``validity`` = the reference's probability
    of the gold label on the edited utterance (threshold 0.5);
  * without one, a heuristic: only words that do *not* separate the two classes may be swapped, and only
    for words that do not either: both the replaced and the inserted word must have
    ``sharedness >= min_sharedness`` (``keywords.PMIStats.sharedness``: as typical of the confusable
    class as of the gold one), the same surface inflection, not be one word in two forms
    (``verify``/``verification``) and, given WordNet, fit the old word's part of speech; given a sentence
    encoder, the two words must also be similar in isolation (cosine >= 0.5) and ``validity`` is the
    sentence similarity (threshold 0.85), else the smaller sharedness. This keeps the gold label's
    discriminative words in place, but it does not understand the sentence: the hand-checked samples
    (``examples/adversarial/NOTES.md``) measure how often it still produces a wrong or odd sentence.
- :class:`LLMRewrite`: asks a text generator (anything with ``generate(prompt) -> str``, e.g. an LLM
  teacher, or :class:`TransformersGenerator` over the shipped SmolLM2) to rewrite the utterance without
  the keyword. The reply must drop the keyword and change the text; ``validity`` = sentence similarity
  (or a reference model's gold probability, when given).

Every generator returns all candidates with their validity; :func:`generate_attack_set` keeps those at or
above each generator's threshold and records the counts. An :class:`AttackSet` is saved as JSON lines: a
header record (format, generators with their settings, seed, counts) then one record per example.
"""

from __future__ import annotations

import difflib
import json
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rationalign.attribution.words import split_words, word_spans
from rationalign.data.io import iter_json_objects
from rationalign.data.types import Example, IntentDataset, LabelSpace
from rationalign.errors import ConfigError, DataError, ModelError, located
from rationalign.evaluation.keywords import (
    STOPWORDS,
    KeywordTable,
    PMIStats,
    is_content_word,
    label_carrying_positions,
)
from rationalign.evaluation.wordnet import DETERMINERS, WordNet, load_wordnet
from rationalign.files import atomic_write_text

ATTACK_FORMAT = "rationalign.attack_set"
ATTACK_SCHEMA_VERSION = 1
Edit = tuple[int, str, str]


# ------------------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class AdversarialExample:
    """One edited utterance. ``edits``: ``(word position in split_words(original), old word, new text)``."""

    original: str
    text: str
    label: str
    edits: tuple[Edit, ...]
    generator: str
    validity: float
    seed: int
    source_index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["edits"] = [list(e) for e in self.edits]
        return record

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> AdversarialExample:
        edits = tuple((int(e[0]), str(e[1]), str(e[2])) for e in record["edits"])
        return cls(
            original=str(record["original"]),
            text=str(record["text"]),
            label=str(record["label"]),
            edits=edits,
            generator=str(record["generator"]),
            validity=float(record["validity"]),
            seed=int(record["seed"]),
            source_index=None if record.get("source_index") is None else int(record["source_index"]),
        )


def apply_edits(text: str, edits: Sequence[Edit]) -> str:
    """Replace words of ``text`` (positions of ``split_words(text)``) keeping the rest of the string."""
    spans = word_spans(text)
    out = text
    for position, old, new in sorted(edits, key=lambda e: -e[0]):
        if not 0 <= position < len(spans):
            raise DataError(f"edit position {position} outside the {len(spans)} words of {text!r}")
        start, end = spans[position]
        if text[start:end] != old:
            raise DataError(f"edit expects {old!r} at word {position} of {text!r}, found {text[start:end]!r}")
        out = out[:start] + new + out[end:]
    return out


def word_edits(original: str, rewritten: str) -> tuple[Edit, ...]:
    """Word-level edits turning ``original`` into ``rewritten`` (difflib on lowercased words).

    A replaced or deleted run becomes ``(first position, old words joined, new words joined)``; an
    insertion is attached to the word before it (or after it, at the start)."""
    a, b = split_words(original), split_words(rewritten)
    matcher = difflib.SequenceMatcher(a=[w.lower() for w in a], b=[w.lower() for w in b], autojunk=False)
    edits: list[Edit] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        if op == "insert":
            if i1 > 0:
                edits.append((i1 - 1, a[i1 - 1], " ".join([a[i1 - 1], *b[j1:j2]])))
            elif a:
                edits.append((0, a[0], " ".join([*b[j1:j2], a[0]])))
            continue
        edits.append((i1, " ".join(a[i1:i2]), " ".join(b[j1:j2])))
    return tuple(edits)


# ------------------------------------------------------------------------------------- inflection
_VOWELS = set("aeiou")


def _is_cvc(word: str) -> bool:
    """Short consonant-vowel-consonant words double their last letter (stop -> stopped)."""
    if len(word) < 3 or word[-1] in "wxy" or word[-1] in _VOWELS:
        return False
    groups = len(re.findall(r"[aeiou]+", word))
    return groups == 1 and word[-2] in _VOWELS and word[-3] not in _VOWELS


def plural_s(word: str) -> str:
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if len(word) > 1 and word.endswith("y") and word[-2] not in _VOWELS:
        return word[:-1] + "ies"
    return word + "s"


def past_ed(word: str) -> str:
    if word.endswith("e"):
        return word + "d"
    if len(word) > 1 and word.endswith("y") and word[-2] not in _VOWELS:
        return word[:-1] + "ied"
    if _is_cvc(word):
        return word + word[-1] + "ed"
    return word + "ed"


def gerund_ing(word: str) -> str:
    if word.endswith("ie"):
        return word[:-2] + "ying"
    if word.endswith("e") and not word.endswith(("ee", "ye", "oe")):
        return word[:-1] + "ing"
    if _is_cvc(word):
        return word + word[-1] + "ing"
    return word + "ing"


_INFLECTORS = {"s": plural_s, "ed": past_ed, "ing": gerund_ing}


def inflection_of(word: str, base: str) -> str | None:
    """Which regular inflection turns ``base`` into ``word``: ``""`` (none), ``s``, ``ed``, ``ing``;
    None when it is irregular or unrelated."""
    word, base = word.lower(), base.lower()
    if word == base:
        return ""
    for name, inflect in _INFLECTORS.items():
        if inflect(base) == word or (name != "s" and word in (base + name, base + "d")):
            return name
    return None


def inflect_like(
    word: str, base: str, replacement: str, pos: str, irregular: frozenset[str] = frozenset()
) -> str | None:
    """``replacement`` (a base form, maybe several words) inflected the way ``word`` inflects ``base``.

    Nouns inflect their last word, verbs their first (``call off`` -> ``called off``). Returns None when
    ``word``'s inflection is irregular, or when a verb replacement is irregular (``got``: not guessable)."""
    kind = inflection_of(word, base)
    if kind is None:
        return None
    if not kind:
        return replacement
    parts = replacement.split()
    head = len(parts) - 1 if pos == "n" else 0
    if kind in ("ed",) and parts[head] in irregular:
        return None
    parts[head] = _INFLECTORS[kind](parts[head])
    return " ".join(parts)


def match_case(template: str, word: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


# ------------------------------------------------------------------------------------ validators
class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings of a frozen encoder (default: shipped MiniLM).

    ``model``: a shipped name or a local HF folder. Embeddings are cached per text."""

    def __init__(self, model: str | Path = "minilm-l6", *, batch_size: int = 64, max_length: int = 64):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from rationalign.models.resolver import resolve_model

        folder = resolve_model(model)
        self.name = str(model)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self._torch = torch
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            batch = self.tokenizer(
                chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            with torch.inference_mode():
                hidden = self.model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            pooled = torch.nn.functional.normalize(pooled.float(), dim=-1).numpy()
            for text, vector in zip(chunk, pooled, strict=True):
                self._cache[text] = vector
        if not texts:
            return np.zeros((0, 0))
        return np.stack([self._cache[t] for t in texts])

    def vocabulary(self) -> frozenset[str]:
        """Whole-word tokens of the encoder's tokenizer: a cheap "common English word" list (a word that
        WordPiece keeps whole is frequent; ``requital`` or ``currentness`` are split into pieces)."""
        vocab = self.tokenizer.get_vocab()
        return frozenset(t for t in vocab if t.isalpha() and t.islower() and not t.startswith("##"))

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Row-wise cosine similarity of ``a[i]`` and ``b[i]``."""
        if len(a) != len(b):
            raise DataError(f"{len(a)} texts against {len(b)}; fix: pair every text")
        if not a:
            return np.zeros(0)
        return np.sum(self.encode(a) * self.encode(b), axis=1)


class Validator(Protocol):
    """Scores edited utterances: higher = more likely to keep the gold intent."""

    name: str

    def score(
        self, originals: Sequence[str], candidates: Sequence[str], labels: Sequence[str]
    ) -> np.ndarray: ...


class SimilarityValidator:
    """``validity`` = cosine similarity of the original's and the candidate's sentence embeddings."""

    name = "embedding_similarity"

    def __init__(self, encoder: SentenceEncoder | Any):
        self.encoder = encoder

    def score(self, originals: Sequence[str], candidates: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        return np.asarray(self.encoder.similarity(list(originals), list(candidates)), dtype=np.float64)


class ReferenceValidator:
    """``validity`` = a reference model's (teacher's) probability of the gold label on the candidate."""

    name = "reference_probability"

    def __init__(self, predict_proba: Callable[[list[str]], np.ndarray], label_space: LabelSpace):
        self.predict_proba = predict_proba
        self.label_space = label_space

    @classmethod
    def from_model(cls, model: Any) -> ReferenceValidator:
        if not hasattr(model, "predict_proba") or not hasattr(model, "label_space"):
            raise ModelError(
                f"{type(model).__name__} has no predict_proba/label_space; "
                "fix: pass an IntentClassifier or a teacher as the reference model"
            )
        return cls(model.predict_proba, model.label_space)

    def score(self, originals: Sequence[str], candidates: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        if not candidates:
            return np.zeros(0)
        unknown = sorted({y for y in labels if y not in self.label_space})
        if unknown:
            raise DataError(
                f"{len(unknown)} labels the reference model does not know (e.g. {unknown[0]!r}); "
                "fix: use a reference model trained on the same label space"
            )
        probs = np.asarray(self.predict_proba(list(candidates)))
        return probs[np.arange(len(candidates)), self.label_space.ids(labels)].astype(np.float64)


# ------------------------------------------------------------------------------------ generators
@runtime_checkable
class AdversarialGenerator(Protocol):
    """Produces scored candidates; :func:`generate_attack_set` applies ``min_validity``."""

    name: str
    min_validity: float

    def generate(
        self, examples: Sequence[Example], n_per_example: int, seed: int
    ) -> list[AdversarialExample]: ...

    def config(self) -> dict[str, Any]: ...


def example_rng(seed: int, generator: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(generator.encode("utf-8")), index])


@dataclass
class _Candidate:
    index: int
    edits: tuple[Edit, ...]
    text: str
    order: float  # random tie-break key
    validity: float = 0.0


def _choose_best(
    candidates: list[_Candidate], examples: Sequence[Example], n_per_example: int, name: str, seed: int
) -> list[AdversarialExample]:
    by_example: dict[int, list[_Candidate]] = {}
    for c in candidates:
        by_example.setdefault(c.index, []).append(c)
    out = []
    for index in sorted(by_example):
        ranked = sorted(by_example[index], key=lambda c: (-c.validity, c.order))
        for c in ranked[:n_per_example]:
            ex = examples[index]
            out.append(
                AdversarialExample(ex.text, c.text, ex.label, c.edits, name, float(c.validity), seed, index)
            )
    return out


def _check_common(examples: Sequence[Example], n_per_example: int) -> None:
    if n_per_example < 1:
        raise ConfigError(f"n_per_example must be >= 1, got {n_per_example}")
    if not examples:
        raise DataError("no examples to attack; fix: pass a non-empty split")


def _sample(options: list, limit: int, rng: np.random.Generator) -> list:
    if len(options) <= limit:
        return options
    picked = rng.choice(len(options), size=limit, replace=False)
    return [options[int(i)] for i in sorted(picked)]


class SynonymSwap:
    """Replace label-carrying words with WordNet synonyms; validity = sentence-embedding similarity.

    ``keywords`` (PMI) or ``priors`` (``{text: WordAttribution}`` of the gold label) choose the words;
    ``swaps`` words are replaced per candidate, among the ``top_words`` label-carrying ones (default: one
    more than ``swaps``, at least 2); at most
    ``max_candidates`` candidates per utterance are scored (a seeded sample when there are more)."""

    name = "synonym"

    def __init__(
        self,
        *,
        keywords: KeywordTable | None = None,
        priors: Mapping[str, Any] | None = None,
        validator: Validator | None = None,
        wordnet: WordNet | None = None,
        top_words: int | None = None,
        swaps: int = 1,
        max_senses: int | None = 4,
        max_candidates: int = 24,
        min_validity: float = 0.85,
        common_words: frozenset[str] | None = None,
        stopwords: frozenset[str] = STOPWORDS,
    ):
        if keywords is None and priors is None:
            raise ConfigError("SynonymSwap needs keywords (PMI) or priors to find the label-carrying words")
        if top_words is None:
            top_words = max(2, swaps + 1)
        if swaps < 1 or top_words < swaps:
            raise ConfigError(f"need 1 <= swaps <= top_words, got swaps={swaps}, top_words={top_words}")
        self.keywords = keywords
        self.priors = priors
        self.validator = validator
        self.wordnet = wordnet or load_wordnet()
        self.top_words = top_words
        self.swaps = swaps
        if swaps > 1:  # its own name, so a set of 2-word swaps can be scored beside (and merged with) 1-word
            self.name = f"synonym_x{swaps}"
        self.max_senses = max_senses
        self.max_candidates = max_candidates
        self.min_validity = min_validity
        self.stopwords = stopwords
        if common_words is None:
            encoder = getattr(validator, "encoder", None)
            common_words = encoder.vocabulary() if hasattr(encoder, "vocabulary") else None
        self.common_words = common_words
        self._irregular = frozenset(b for bases in self.wordnet.exceptions("v").values() for b in bases)

    def config(self) -> dict[str, Any]:
        return {
            "keywords": self.keywords.source if self.keywords is not None else "prior",
            "validator": self.validator.name if self.validator is not None else None,
            "top_words": self.top_words,
            "swaps": self.swaps,
            "max_senses": self.max_senses,
            "max_candidates": self.max_candidates,
            "common_words": self.common_words is not None,
        }

    def replacements(self, words: Sequence[str], position: int) -> list[str]:
        """Inflected, case-matched WordNet synonyms of ``words[position]`` for its guessed POS.

        None for a word inside a compound (``credit card``, ``top-up``); synonyms with a word outside
        ``common_words`` (rare words such as ``requital``) are dropped."""
        word = words[position]
        if self.wordnet.in_compound(words, position):
            return []
        present = {w.lower() for w in words}
        tags = self.wordnet.guess_pos(words, position)[:1]
        if tags == ["v"] and position > 0 and words[position - 1].lower() in DETERMINERS:
            return []  # "make a withdraw": a verb used as a noun; its verb synonyms would not fit
        out: list[str] = []
        for tag in tags:
            bases = self.wordnet.morphy(word, tag)
            for synonym in self.wordnet.synonyms(word, tag, self.max_senses):
                inflected = inflect_like(word, bases[0], synonym, tag, self._irregular)
                if inflected is None or inflected.lower() in present:
                    continue
                if self.common_words is not None and not all(
                    t in self.common_words for t in inflected.split()
                ):
                    continue
                out.append(match_case(word, inflected))
        return list(dict.fromkeys(out))

    def _positions(self, example: Example, words: list[str]) -> list[int]:
        prior = self.priors.get(example.text) if self.priors is not None else None
        if prior is None and self.keywords is None:
            return []
        return label_carrying_positions(
            words,
            example.label,
            keywords=self.keywords,
            prior=prior,
            top_k=self.top_words,
            stopwords=self.stopwords,
        )

    def candidates(self, examples: Sequence[Example], seed: int) -> list[_Candidate]:
        out: list[_Candidate] = []
        for index, example in enumerate(examples):
            rng = example_rng(seed, self.name, index)
            words = split_words(example.text)
            options = {p: self.replacements(words, p) for p in self._positions(example, words)}
            options = {p: r for p, r in options.items() if r}
            if len(options) < self.swaps:
                continue
            combos = _position_combos(sorted(options), self.swaps)
            edit_sets = [
                tuple(zip(combo, choice, strict=True))
                for combo in combos
                for choice in _product([options[p] for p in combo])
            ]
            for chosen in _sample(edit_sets, self.max_candidates, rng):
                edits = tuple((p, words[p], new) for p, new in chosen)
                out.append(_Candidate(index, edits, apply_edits(example.text, edits), float(rng.random())))
        return out

    def generate(
        self, examples: Sequence[Example], n_per_example: int = 1, seed: int = 0
    ) -> list[AdversarialExample]:
        _check_common(examples, n_per_example)
        candidates = self.candidates(examples, seed)
        _score(candidates, examples, self.validator, default=1.0)
        return _choose_best(candidates, examples, n_per_example, self.name, seed)


def _position_combos(positions: list[int], size: int) -> list[tuple[int, ...]]:
    from itertools import combinations

    return list(combinations(positions, size))


def _product(lists: list[list[str]]) -> list[tuple[str, ...]]:
    from itertools import product

    return list(product(*lists))


def _score(
    candidates: list[_Candidate], examples: Sequence[Example], validator: Validator | None, default: float
) -> None:
    if not candidates:
        return
    if validator is None:
        for c in candidates:
            c.validity = default
        return
    scores = validator.score(
        [examples[c.index].text for c in candidates],
        [c.text for c in candidates],
        [examples[c.index].label for c in candidates],
    )
    for c, s in zip(candidates, scores, strict=True):
        c.validity = float(s)


def surface_form(word: str) -> str:
    """A crude inflection class (``ing``, ``ed``, ``s`` or ``""``): a swap must keep it, so a past
    participle is not replaced by a bare noun (``charged`` -> ``fees``)."""
    w = word.lower()
    if w.endswith("ing") and len(w) > 4:
        return "ing"
    if w.endswith("ed") and len(w) > 3:
        return "ed"
    if w.endswith("s") and not w.endswith(("ss", "us", "is")) and len(w) > 3:
        return "s"
    return ""


class ConfusableKeywordSwap:
    """Replace a label-carrying word with a keyword of the most confusable class (see module docstring).

    ``reference``: a :class:`ReferenceValidator` (teacher) deciding validity (default threshold 0.5).
    Without it, a heuristic: the replaced and the inserted word must both be shared between the two
    classes (``sharedness >= min_sharedness``), have the same surface inflection, not be the same word in
    another form or a near-spelling, fit the old word's guessed part of speech (with ``wordnet``), and, when a
    ``similarity`` validator is given, be similar as isolated words (cosine >= ``min_word_similarity``);
    validity is then the sentence similarity (threshold 0.85), else the smaller sharedness."""

    name = "confusable"

    def __init__(
        self,
        *,
        stats: PMIStats,
        keywords: KeywordTable,
        confusable: Mapping[str, str],
        reference: ReferenceValidator | None = None,
        similarity: SimilarityValidator | None = None,
        priors: Mapping[str, Any] | None = None,
        top_words: int = 3,
        replacement_pool: int = 15,
        min_sharedness: float = 0.3,
        min_word_similarity: float = 0.5,
        max_candidates: int = 24,
        min_validity: float | None = None,
        wordnet: WordNet | None = None,
        stopwords: frozenset[str] = STOPWORDS,
    ):
        self.stats = stats
        self.keywords = keywords
        self.confusable = dict(confusable)
        self.reference = reference
        self.similarity = similarity
        self.priors = priors
        self.top_words = top_words
        self.replacement_pool = replacement_pool
        self.min_sharedness = min_sharedness
        self.min_word_similarity = min_word_similarity
        self.max_candidates = max_candidates
        if min_validity is None:
            min_validity = (
                0.5 if reference is not None else 0.85 if similarity is not None else min_sharedness
            )
        self.min_validity = min_validity
        self.wordnet = wordnet
        self.stopwords = stopwords

    def config(self) -> dict[str, Any]:
        return {
            "validity": "reference_probability"
            if self.reference is not None
            else ("sharedness_gate+sentence_similarity" if self.similarity is not None else "sharedness"),
            "top_words": self.top_words,
            "replacement_pool": self.replacement_pool,
            "min_sharedness": self.min_sharedness,
            "min_word_similarity": self.min_word_similarity if self.similarity is not None else None,
            "max_candidates": self.max_candidates,
        }

    def _related(self, a: str, b: str) -> bool:
        """The same word in another form (alarm / alarms, verify / verification) or a near-spelling
        (fee / free): not a keyword swap."""
        a, b = a.lower(), b.lower()
        if a == b or a.startswith(b) or b.startswith(a):
            return True
        prefix = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        if prefix >= max(4, min(len(a), len(b)) - 2):
            return True
        if difflib.SequenceMatcher(a=a, b=b).ratio() >= 0.8:
            return True
        return self.wordnet.is_inflection_of(a, b) if self.wordnet is not None else False

    def _pos_fits(self, words: Sequence[str], position: int, new: str) -> bool:
        """With WordNet: the new word can take the part of speech the old word has here (``how long`` ->
        not ``how wait``). Words WordNet does not know are let through."""
        if self.wordnet is None:
            return True
        guessed = self.wordnet.guess_pos(words, position)
        tags = [t for t in ("n", "v", "a", "r") if self.wordnet.morphy(new, t)]
        return not guessed or not tags or guessed[0] in tags

    def _options(self, examples: Sequence[Example]) -> list[tuple[int, int, str, float]]:
        """(example index, position, new word, smaller sharedness) for every allowed swap."""
        options: list[tuple[int, int, str, float]] = []
        for index, example in enumerate(examples):
            other = self.confusable.get(example.label)
            if other is None or other == example.label or other not in self.keywords.by_label:
                continue
            words = split_words(example.text)
            present = {w.lower() for w in words}
            prior = self.priors.get(example.text) if self.priors is not None else None
            positions = label_carrying_positions(
                words,
                example.label,
                keywords=self.keywords,
                prior=prior,
                top_k=self.top_words,
                stopwords=self.stopwords,
            )
            pool = [w for w in self.keywords.top(other, self.replacement_pool) if w not in present]
            for p in positions:
                old = words[p]
                old_shared = self.stats.sharedness(old, example.label, other)
                if self.reference is None and old_shared < self.min_sharedness:
                    continue
                for new in pool:
                    if self._related(old, new) or not is_content_word(new, self.stopwords):
                        continue
                    if self.reference is None and not self._pos_fits(words, p, new):
                        continue
                    new_shared = self.stats.sharedness(new, example.label, other)
                    if self.reference is None and (
                        new_shared < self.min_sharedness or surface_form(new) != surface_form(old)
                    ):
                        continue
                    options.append((index, p, new, min(old_shared, new_shared)))
        if self.reference is None and self.similarity is not None and options:
            olds = [split_words(examples[i].text)[p].lower() for i, p, _, _ in options]
            sims = self.similarity.score(olds, [new for _, _, new, _ in options], [])
            options = [o for o, sim in zip(options, sims, strict=True) if sim >= self.min_word_similarity]
        return options

    def candidates(self, examples: Sequence[Example], seed: int) -> list[tuple[_Candidate, float]]:
        by_example: dict[int, list[tuple[int, str, float]]] = {}
        for index, p, new, shared in self._options(examples):
            by_example.setdefault(index, []).append((p, new, shared))
        out: list[tuple[_Candidate, float]] = []
        for index in sorted(by_example):
            rng = example_rng(seed, self.name, index)
            text = examples[index].text
            words = split_words(text)
            for p, new, shared in _sample(by_example[index], self.max_candidates, rng):
                edits = ((p, words[p], match_case(words[p], new)),)
                out.append((_Candidate(index, edits, apply_edits(text, edits), float(rng.random())), shared))
        return out

    def generate(
        self, examples: Sequence[Example], n_per_example: int = 1, seed: int = 0
    ) -> list[AdversarialExample]:
        _check_common(examples, n_per_example)
        pairs = self.candidates(examples, seed)
        candidates = [c for c, _ in pairs]
        if self.reference is not None:
            _score(candidates, examples, self.reference, default=1.0)
        elif self.similarity is not None:
            _score(candidates, examples, self.similarity, default=1.0)
        else:
            for c, shared in pairs:
                c.validity = shared
        return _choose_best(candidates, examples, n_per_example, self.name, seed)


@runtime_checkable
class TextGenerator(Protocol):
    def generate(self, prompt: str) -> str: ...


REWRITE_TEMPLATE = (
    'Rewrite the user request below so that it does not use the word "{keyword}". Use a different word '
    "or phrase with the same meaning and keep everything else the same. The request's intent is "
    '"{intent}".\nRequest: {text}\nReply with the rewritten request only.'
)
_REPLY_PREFIX = re.compile(r"^(?:rewritten request|rewrite|request|answer|output)\s*:\s*", re.IGNORECASE)


def clean_reply(reply: str) -> str:
    """The first non-empty line of a generator's reply, without a label prefix or wrapping quotes."""
    for line in reply.strip().splitlines():
        line = _REPLY_PREFIX.sub("", line.strip()).strip()
        if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'`":
            line = line[1:-1].strip()
        if line:
            return line
    return ""


class LLMRewrite:
    """Ask a text generator to rewrite the utterance without one of its label-carrying words.

    One prompt per utterance and keyword (the top ``n_per_example`` keywords). A reply is kept as a
    candidate only when it is non-empty, differs from the original and no longer contains the keyword;
    ``validity`` = ``validator`` score (sentence similarity or a reference model), else 1.0."""

    name = "llm"

    def __init__(
        self,
        llm: TextGenerator,
        *,
        keywords: KeywordTable | None = None,
        priors: Mapping[str, Any] | None = None,
        validator: Validator | None = None,
        template: str = REWRITE_TEMPLATE,
        min_validity: float = 0.8,
        max_words_ratio: float = 2.5,
        stopwords: frozenset[str] = STOPWORDS,
    ):
        if not callable(getattr(llm, "generate", None)):
            raise ConfigError(
                f"{type(llm).__name__} has no generate(prompt) method; fix: configure an LLM teacher endpoint"
            )
        if keywords is None and priors is None:
            raise ConfigError("LLMRewrite needs keywords (PMI) or priors to pick the word to replace")
        self.llm = llm
        self.keywords = keywords
        self.priors = priors
        self.validator = validator
        self.template = template
        self.min_validity = min_validity
        self.max_words_ratio = max_words_ratio
        self.stopwords = stopwords
        self.n_calls = 0
        self.n_rejected_replies = 0

    def config(self) -> dict[str, Any]:
        return {
            "llm": getattr(self.llm, "name", type(self.llm).__name__),
            "validator": self.validator.name if self.validator is not None else None,
            "template": self.template,
        }

    def generate(
        self, examples: Sequence[Example], n_per_example: int = 1, seed: int = 0
    ) -> list[AdversarialExample]:
        _check_common(examples, n_per_example)
        candidates: list[_Candidate] = []
        for index, example in enumerate(examples):
            rng = example_rng(seed, self.name, index)
            words = split_words(example.text)
            prior = self.priors.get(example.text) if self.priors is not None else None
            if prior is None and self.keywords is None:
                continue
            positions = label_carrying_positions(
                words,
                example.label,
                keywords=self.keywords,
                prior=prior,
                top_k=n_per_example,
                stopwords=self.stopwords,
            )
            for p in positions:
                keyword = words[p]
                prompt = self.template.format(
                    keyword=keyword, intent=example.label.replace("_", " "), text=example.text
                )
                self.n_calls += 1
                reply = clean_reply(str(self.llm.generate(prompt)))
                new_words = [w.lower() for w in split_words(reply)]
                if (
                    not new_words
                    or reply.strip().lower() == example.text.strip().lower()
                    or keyword.lower() in new_words
                    or len(new_words) > self.max_words_ratio * max(len(words), 1) + 2
                ):
                    self.n_rejected_replies += 1
                    continue
                edits = word_edits(example.text, reply)
                candidates.append(_Candidate(index, edits, reply, float(rng.random())))
        _score(candidates, examples, self.validator, default=1.0)
        # Several keywords may give the same reply: keep one.
        unique: dict[tuple[int, str], _Candidate] = {}
        for c in candidates:
            unique.setdefault((c.index, c.text), c)
        return _choose_best(list(unique.values()), examples, n_per_example, self.name, seed)


class TransformersGenerator:
    """``generate(prompt) -> str`` over a local causal LM (default: the shipped SmolLM2-135M-Instruct),
    greedy decoding with its chat template. Small and weak: a plumbing-grade stand-in for an LLM teacher."""

    def __init__(self, model: str | Path = "smollm2-135m", *, max_new_tokens: int = 48):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rationalign.models.resolver import resolve_model

        folder = resolve_model(model)
        self.name = f"transformers:{model}"
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder).eval()
        self.max_new_tokens = int(max_new_tokens)
        self._torch = torch

    def generate(self, prompt: str) -> str:
        messages = [{"role": "user", "content": prompt}]
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        if not isinstance(ids, self._torch.Tensor):  # newer tokenizers return a BatchEncoding
            ids = ids["input_ids"]
        with self._torch.inference_mode():
            out = self.model.generate(
                ids,
                attention_mask=self._torch.ones_like(ids),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        return self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def wordnet_synonym_fn(
    wordnet: WordNet | None = None,
    *,
    common_words: frozenset[str] | None = None,
    stopwords: frozenset[str] = STOPWORDS,
    missing_ok: bool = False,
) -> Callable[[str], str | None] | None:
    """``synonym(word) -> str | None`` for the stability metric's synonym perturbation.

    A whitespace token (punctuation attached, e.g. ``card?``) gets the first other lemma of the first sense
    of its most used part of speech, re-inflected and case-matched, punctuation kept; None for stopwords,
    words WordNet lacks, irregular inflections and (when ``common_words`` is given) rare synonyms.
    ``missing_ok``: return None instead of raising when WordNet is not installed."""
    from rationalign.evaluation.wordnet import WordNetError

    try:
        wn = wordnet or load_wordnet()
    except WordNetError:
        if missing_ok:
            return None
        raise
    irregular = frozenset(b for bases in wn.exceptions("v").values() for b in bases)
    cache: dict[str, str | None] = {}

    def synonym(token: str) -> str | None:
        if token in cache:
            return cache[token]
        match = re.fullmatch(r"(\W*)([A-Za-z]+)(\W*)", token)
        result = None
        if match and is_content_word(match.group(2), stopwords):
            word = match.group(2)
            tags = [t for t in ("n", "v", "a", "r") if wn.morphy(word, t)]
            tags.sort(key=lambda t: -wn.tagged_count(word, t))
            for tag in tags[:1]:
                base = wn.morphy(word, tag)[0]
                for candidate in wn.synonyms(word, tag, max_senses=1):
                    if common_words is not None and not all(t in common_words for t in candidate.split()):
                        continue
                    inflected = inflect_like(word.lower(), base, candidate, tag, irregular)
                    if inflected:
                        result = match.group(1) + match_case(word, inflected) + match.group(3)
                        break
        cache[token] = result
        return result

    return synonym


# ------------------------------------------------------------------------------------ attack sets
@dataclass
class GeneratorStats:
    name: str
    min_validity: float
    n_source: int
    n_with_candidate: int
    n_candidates: int
    n_passed: int

    @property
    def pass_rate(self) -> float:
        """Share of generated candidates at or above the validity threshold."""
        return self.n_passed / self.n_candidates if self.n_candidates else 0.0

    @property
    def coverage(self) -> float:
        """Share of source utterances with at least one passing example."""
        return self.n_with_passing / self.n_source if self.n_source else 0.0

    n_with_passing: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pass_rate": self.pass_rate, "coverage": self.coverage}


@dataclass
class AttackSet:
    """Adversarial examples that passed their generator's validity threshold, with how they were made."""

    examples: list[AdversarialExample]
    dataset: str
    seed: int
    n_per_example: int
    generators: list[dict[str, Any]]
    stats: dict[str, GeneratorStats]
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    rejected: list[AdversarialExample] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def generator_names(self) -> list[str]:
        return [g["name"] for g in self.generators]

    def by_generator(self) -> dict[str, list[AdversarialExample]]:
        out: dict[str, list[AdversarialExample]] = {name: [] for name in self.generator_names}
        for ex in self.examples:
            out.setdefault(ex.generator, []).append(ex)
        return out

    def to_dataset(self, generator: str | None = None) -> IntentDataset:
        chosen = [e for e in self.examples if generator is None or e.generator == generator]
        return IntentDataset([Example(e.text, e.label) for e in chosen], name=f"{self.dataset}/adversarial")

    def header(self) -> dict[str, Any]:
        return {
            "type": "header",
            "format": ATTACK_FORMAT,
            "schema_version": ATTACK_SCHEMA_VERSION,
            "dataset": self.dataset,
            "seed": self.seed,
            "n_per_example": self.n_per_example,
            "generators": self.generators,
            "stats": {name: s.to_dict() for name, s in self.stats.items()},
            "created": self.created,
            "n_examples": len(self.examples),
        }

    def save(self, path: str | Path, include_rejected: bool = False) -> Path:
        """Write JSON lines atomically (a temporary file renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(self.header())]
        lines += [json.dumps({"type": "example", **e.to_dict()}) for e in self.examples]
        if include_rejected:
            lines += [json.dumps({"type": "rejected", **e.to_dict()}) for e in self.rejected]
        return atomic_write_text(path, "\n".join(lines) + "\n")

    @classmethod
    def merge(cls, sets: Sequence[AttackSet]) -> AttackSet:
        """One set from attack sets of the same dataset and seed built by differently named generators
        (e.g. ``synonym`` + ``confusable`` and ``synonym_x2``), so the worst case runs over all of them."""
        if not sets:
            raise ConfigError("AttackSet.merge needs at least one attack set")
        first = sets[0]
        names = [n for s in sets for n in s.generator_names]
        if len(set(names)) != len(names):
            raise ConfigError(
                f"attack sets share generator names {sorted({n for n in names if names.count(n) > 1})}; "
                "fix: merge sets built by different generators (e.g. --swaps 2 names its own)"
            )
        for other in sets[1:]:
            if (other.dataset, other.seed) != (first.dataset, first.seed):
                raise ConfigError(
                    f"cannot merge attack sets of {first.dataset!r} seed {first.seed} and "
                    f"{other.dataset!r} seed {other.seed}; fix: build them from the same split and seed"
                )
        return cls(
            examples=[e for s in sets for e in s.examples],
            dataset=first.dataset,
            seed=first.seed,
            n_per_example=max(s.n_per_example for s in sets),
            generators=[g for s in sets for g in s.generators],
            stats={name: stat for s in sets for name, stat in s.stats.items()},
            rejected=[e for s in sets for e in s.rejected],
        )

    @classmethod
    def load(cls, path: str | Path) -> AttackSet:
        path = Path(path)
        if not path.is_file():
            raise DataError(located(path, None, "no such attack set", "build one with `rationalign attack`"))
        header: dict[str, Any] | None = None
        examples: list[AdversarialExample] = []
        rejected: list[AdversarialExample] = []
        for number, record in iter_json_objects(path, fix="regenerate the attack set"):
            if header is None:
                if record.get("type") != "header" or record.get("format") != ATTACK_FORMAT:
                    raise DataError(
                        located(
                            path,
                            number,
                            "first line is not an attack-set header",
                            "pass a file written by `rationalign attack` / AttackSet.save",
                        )
                    )
                if record.get("schema_version") != ATTACK_SCHEMA_VERSION:
                    raise DataError(
                        located(
                            path,
                            number,
                            f"attack-set schema {record.get('schema_version')!r} is not "
                            f"{ATTACK_SCHEMA_VERSION}",
                            "regenerate it with this version",
                        )
                    )
                header = record
                continue
            try:
                example = AdversarialExample.from_dict(record)
            except (KeyError, TypeError, ValueError, IndexError) as err:
                raise DataError(
                    located(
                        path,
                        number,
                        f"malformed example ({type(err).__name__}: {err})",
                        "each example needs original, text, label, edits, generator, validity, seed",
                    )
                ) from None
            (rejected if record.get("type") == "rejected" else examples).append(example)
        if header is None:
            raise DataError(located(path, None, "empty attack set", "build one with `rationalign attack`"))
        stats = {
            name: GeneratorStats(**{k: v for k, v in s.items() if k not in ("pass_rate", "coverage")})
            for name, s in header.get("stats", {}).items()
        }
        return cls(
            examples=examples,
            dataset=str(header.get("dataset", "")),
            seed=int(header.get("seed", 0)),
            n_per_example=int(header.get("n_per_example", 1)),
            generators=list(header.get("generators", [])),
            stats=stats,
            created=str(header.get("created", "")),
            rejected=rejected,
        )


def generate_attack_set(
    dataset: IntentDataset | Sequence[Example],
    generators: Sequence[AdversarialGenerator],
    n_per_example: int = 1,
    seed: int = 0,
    *,
    min_validity: float | Mapping[str, float] | None = None,
    limit: int | None = None,
    name: str | None = None,
) -> AttackSet:
    """Run every generator on the (first ``limit``) examples and keep candidates whose validity reaches
    the generator's threshold (``min_validity`` overrides it: one number, or per generator name)."""
    if not generators:
        raise ConfigError("no generators; fix: choose at least one of synonym, confusable, llm")
    names = [g.name for g in generators]
    if len(set(names)) != len(names):
        raise ConfigError(f"generator names must be unique, got {names}")
    examples = list(dataset)[:limit] if limit is not None else list(dataset)
    _check_common(examples, n_per_example)
    passed: list[AdversarialExample] = []
    rejected: list[AdversarialExample] = []
    stats: dict[str, GeneratorStats] = {}
    described = []
    for generator in generators:
        if isinstance(min_validity, Mapping):
            threshold = float(min_validity.get(generator.name, generator.min_validity))
        else:
            threshold = float(generator.min_validity if min_validity is None else min_validity)
        produced = generator.generate(examples, n_per_example, seed)
        ok = [e for e in produced if e.validity >= threshold]
        passed += ok
        rejected += [e for e in produced if e.validity < threshold]
        stats[generator.name] = GeneratorStats(
            name=generator.name,
            min_validity=threshold,
            n_source=len(examples),
            n_with_candidate=len({e.source_index for e in produced}),
            n_candidates=len(produced),
            n_passed=len(ok),
            n_with_passing=len({e.source_index for e in ok}),
        )
        described.append({"name": generator.name, "min_validity": threshold, "config": generator.config()})
    dataset_name = name or (dataset.name if isinstance(dataset, IntentDataset) else "examples")
    return AttackSet(passed, dataset_name, seed, n_per_example, described, stats, rejected=rejected)
