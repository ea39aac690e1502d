"""Stability of word attributions under meaning-preserving perturbations of the input text.

``attribute(texts, targets) -> list[(words, scores)]`` (or ``WordAttribution`` objects) is called twice in
total: once on all original texts and once on all perturbed texts (the same target class as the
original), so a batched attribution method stays batched.

Perturbations act on the raw text split on whitespace (rejoined with single spaces) and take a seeded
``numpy.random.Generator``; each returns ``None`` when it does not apply (the pair is then counted as
skipped, not as perfectly stable). The generator for text ``i`` and perturbation ``name`` is
``default_rng([seed, crc32(name), i])``, so results do not depend on which other perturbations run.

- ``typo``: swap two adjacent letters strictly inside a word of >= 4 characters (first and last letters
  stay; both swapped characters are letters and differ), word and position chosen uniformly.
- ``casing``: the whole text upper-cased, lower-cased or title-cased (first letter of each word upper,
  rest lower), chosen uniformly among the modes that change the text.
- ``punctuation``: remove a trailing ``? . , !`` if there is one, else append one of ``? . ,``.
- ``synonym``: replace one word (random order, first that has one) by ``synonym(word)``; the callable comes
  from the adversarial module, e.g. WordNet.

Alignment: when both attributions have the same number of words, word ``i`` is aligned with word ``i``;
otherwise words are matched on their lowercase form with ``difflib.SequenceMatcher`` (order-preserving,
unmatched words are left out). Similarity over aligned words: Spearman, and top-k IoU with
``k = ceil(k_percent / 100 * n_aligned)`` (at least 1).
"""

from __future__ import annotations

import difflib
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from rationalign.errors import ConfigError, DataError
from rationalign.evaluation.fidelity import (
    DEFAULT_TOP_K_PERCENT,
    NanMean,
    WordScores,
    as_word_scores,
    nan_summary,
    spearman,
    top_k_count,
    top_k_iou,
)

Perturbation = Callable[[str, np.random.Generator], str | None]
AttributeFn = Callable[[list[str], list[int]], Sequence[WordScores]]
SynonymFn = Callable[[str], str | None]

TRAILING_PUNCTUATION = "?.,!"
ADDED_PUNCTUATION = ("?", ".", ",")


def typo(text: str, rng: np.random.Generator) -> str | None:
    words = text.split()
    candidates: list[tuple[int, list[int]]] = []
    for index, word in enumerate(words):
        if len(word) < 4:
            continue
        # Positions p with 1 <= p and p + 1 <= len - 2: both swapped letters are inside the word.
        positions = [
            p
            for p in range(1, len(word) - 2)
            if word[p].isalpha() and word[p + 1].isalpha() and word[p] != word[p + 1]
        ]
        if positions:
            candidates.append((index, positions))
    if not candidates:
        return None
    index, positions = candidates[int(rng.integers(len(candidates)))]
    p = positions[int(rng.integers(len(positions)))]
    word = words[index]
    words[index] = word[:p] + word[p + 1] + word[p] + word[p + 2 :]
    return " ".join(words)


def _title(word: str) -> str:
    return word[:1].upper() + word[1:].lower()


def casing(text: str, rng: np.random.Generator) -> str | None:
    words = text.split()
    variants = [" ".join(words).upper(), " ".join(words).lower(), " ".join(_title(w) for w in words)]
    changed = [v for v in variants if v != " ".join(words)]
    # dict.fromkeys keeps the order and drops duplicates (e.g. a one-letter text), so choice is uniform.
    changed = list(dict.fromkeys(changed))
    if not changed:
        return None
    return changed[int(rng.integers(len(changed)))]


def punctuation(text: str, rng: np.random.Generator) -> str | None:
    joined = " ".join(text.split())
    if not joined:
        return None
    if joined[-1] in TRAILING_PUNCTUATION:
        stripped = joined[:-1].rstrip()
        return stripped or None
    return joined + ADDED_PUNCTUATION[int(rng.integers(len(ADDED_PUNCTUATION)))]


def make_synonym_perturbation(synonym: SynonymFn) -> Perturbation:
    """A perturbation replacing one word by ``synonym(word)`` (``None`` = no synonym for that word)."""

    def perturb(text: str, rng: np.random.Generator) -> str | None:
        words = text.split()
        for index in rng.permutation(len(words)):
            replacement = synonym(words[int(index)])
            if replacement and replacement.strip() and replacement.lower() != words[int(index)].lower():
                words[int(index)] = replacement.strip()
                return " ".join(words)
        return None

    return perturb


BUILTIN_PERTURBATIONS: Mapping[str, Perturbation] = {
    "typo": typo,
    "casing": casing,
    "punctuation": punctuation,
}


def align_words(original: Sequence[str], perturbed: Sequence[str]) -> tuple[list[tuple[int, int]], str]:
    """Index pairs ``(i_original, i_perturbed)`` and how they were found (``position``/``lowercase``)."""
    if len(original) == len(perturbed):
        return [(i, i) for i in range(len(original))], "position"
    matcher = difflib.SequenceMatcher(
        a=[w.lower() for w in original], b=[w.lower() for w in perturbed], autojunk=False
    )
    pairs = [(block.a + j, block.b + j) for block in matcher.get_matching_blocks() for j in range(block.size)]
    return pairs, "lowercase"


@dataclass(frozen=True)
class StabilityResult:
    perturbation: str
    index: int
    original_text: str
    perturbed_text: str
    alignment: Literal["position", "lowercase"]
    n_words_original: int
    n_words_perturbed: int
    n_aligned: int
    spearman: float
    top_k_iou: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StabilitySummary:
    perturbation: str
    n_applied: int
    n_skipped: int
    spearman: NanMean
    top_k_iou: NanMean

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StabilityReport:
    seed: int
    k_percent: float
    summaries: list[StabilitySummary]
    results: list[StabilityResult] = field(repr=False)

    def summary(self, perturbation: str) -> StabilitySummary:
        for item in self.summaries:
            if item.perturbation == perturbation:
                return item
        raise ConfigError(f"no perturbation {perturbation!r} in this report")

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "k_percent": self.k_percent,
            "summaries": [s.to_dict() for s in self.summaries],
            "results": [r.to_dict() for r in self.results],
        }


def _resolve_perturbations(
    perturbations: Sequence[str] | Mapping[str, Perturbation] | None, synonym: SynonymFn | None
) -> dict[str, Perturbation]:
    if isinstance(perturbations, Mapping):
        chosen = dict(perturbations)
    else:
        names = list(perturbations) if perturbations is not None else [*BUILTIN_PERTURBATIONS]
        if perturbations is None and synonym is not None:
            names.append("synonym")
        chosen = {}
        for name in names:
            if name == "synonym":
                if synonym is None:
                    raise ConfigError(
                        "perturbation 'synonym' needs a synonym callable; fix: pass synonym=..."
                    )
                chosen[name] = make_synonym_perturbation(synonym)
            elif name in BUILTIN_PERTURBATIONS:
                chosen[name] = BUILTIN_PERTURBATIONS[name]
            else:
                raise ConfigError(
                    f"unknown perturbation {name!r}; fix: use {sorted([*BUILTIN_PERTURBATIONS, 'synonym'])}"
                )
    if not chosen:
        raise ConfigError("no perturbations selected; fix: pick at least one of typo, casing, punctuation")
    return chosen


def _attribute(attribute: AttributeFn, texts: list[str], targets: list[int], what: str) -> list[Any]:
    output = list(attribute(texts, targets))
    if len(output) != len(texts):
        raise DataError(
            f"attribute returned {len(output)} attributions for {len(texts)} {what} texts; "
            "fix: return one (words, scores) per text"
        )
    return [as_word_scores(item, f"{what} text {i}") for i, item in enumerate(output)]


def evaluate_stability(
    attribute: AttributeFn,
    texts: Sequence[str],
    targets: Sequence[int],
    perturbations: Sequence[str] | Mapping[str, Perturbation] | None = None,
    synonym: SynonymFn | None = None,
    seed: int = 0,
    k_percent: float = DEFAULT_TOP_K_PERCENT,
) -> StabilityReport:
    """Attribution similarity between each text and its perturbed versions.

    ``perturbations``: names of built-ins (default: typo, casing, punctuation, plus synonym when
    ``synonym`` is given) or a mapping name -> ``Perturbation`` for custom ones.
    """
    if not texts:
        raise DataError("no texts to perturb; fix: pass at least one utterance")
    if isinstance(texts, str):
        raise DataError("texts must be a list of utterances, not one string")
    if len(targets) != len(texts):
        raise DataError(f"{len(texts)} texts but {len(targets)} targets; fix: one target per text")
    for i, target in enumerate(targets):
        if isinstance(target, bool) or not isinstance(target, int | np.integer) or target < 0:
            raise DataError(f"text {i}: target {target!r} is not a non-negative integer class id")
    top_k_count(1, k_percent)  # validates k_percent before any model work
    chosen = _resolve_perturbations(perturbations, synonym)
    text_list, target_list = list(texts), [int(t) for t in targets]

    jobs: list[tuple[str, int, str]] = []
    skipped = dict.fromkeys(chosen, 0)
    for name, perturb in chosen.items():
        stream = zlib.crc32(name.encode("utf-8"))
        for i, text in enumerate(text_list):
            perturbed = perturb(text, np.random.default_rng([seed, stream, i]))
            if perturbed is None or perturbed == text:
                skipped[name] += 1
            else:
                jobs.append((name, i, perturbed))

    originals = _attribute(attribute, text_list, target_list, "original")
    perturbed_attributions = (
        _attribute(attribute, [job[2] for job in jobs], [target_list[job[1]] for job in jobs], "perturbed")
        if jobs
        else []
    )

    results = []
    for (name, i, perturbed_text), (words_b, scores_b) in zip(jobs, perturbed_attributions, strict=True):
        words_a, scores_a = originals[i]
        pairs, how = align_words(words_a, words_b)
        if pairs:
            a = scores_a[[p[0] for p in pairs]]
            b = scores_b[[p[1] for p in pairs]]
            rho = spearman(a, b)
            iou = top_k_iou(a, b, top_k_count(len(pairs), k_percent))
        else:
            rho = iou = math.nan
        results.append(
            StabilityResult(
                perturbation=name,
                index=i,
                original_text=text_list[i],
                perturbed_text=perturbed_text,
                alignment=how,  # type: ignore[arg-type]
                n_words_original=len(words_a),
                n_words_perturbed=len(words_b),
                n_aligned=len(pairs),
                spearman=rho,
                top_k_iou=iou,
            )
        )
    summaries = [
        StabilitySummary(
            perturbation=name,
            n_applied=sum(1 for r in results if r.perturbation == name),
            n_skipped=skipped[name],
            spearman=nan_summary([r.spearman for r in results if r.perturbation == name]),
            top_k_iou=nan_summary([r.top_k_iou for r in results if r.perturbation == name]),
        )
        for name in chosen
    ]
    return StabilityReport(seed=seed, k_percent=k_percent, summaries=summaries, results=results)
