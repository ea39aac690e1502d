"""An offline WordNet 3.0 reader over the plain database files (Debian's ``wordnet-base``).

Why our own reader: nltk's ``WordNetCorpusReader`` cannot open Debian's ``/usr/share/wordnet`` as it is
(it needs a ``lexnames`` file the package does not ship, and nltk >= 3.9 refuses folders outside its
``nltk.data.path`` sandbox). The database format is simple and documented (``wndb(5WN)``): ``index.<pos>``
maps a lemma to its synset offsets, most frequent sense first; ``data.<pos>`` holds one synset per line at
that byte offset; ``<pos>.exc`` lists irregular inflections. ``tests/evaluation/test_wordnet.py`` checks
synsets and lemmatisation against nltk's reader on the same files.

Synonyms are the other lemmas of a word's synsets (underscores -> spaces), in sense order, without the
word itself and without its inflections (``cards`` is not a synonym of ``card``). The part of speech is
either given or guessed from the neighbouring words (:func:`guess_pos`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from rationalign.errors import ConfigError

Pos = Literal["n", "v", "a", "r"]
POS_TAGS: tuple[Pos, ...] = ("n", "v", "a", "r")
POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
DEFAULT_ROOT = Path("/usr/share/wordnet")
WORDNET_ENV = "RATIONALIGN_WORDNET"
INSTALL_FIX = (
    "install WordNet: `apt-get install -y wordnet-base` (puts it under /usr/share/wordnet), "
    f"or set ${WORDNET_ENV} to a folder holding index.noun / data.noun / noun.exc ..."
)

# WordNet's morphological detachment rules (morph.c): suffix -> replacement, per part of speech.
DETACHMENT: dict[str, tuple[tuple[str, str], ...]] = {
    "n": (
        ("s", ""),
        ("ses", "s"),
        ("xes", "x"),
        ("zes", "z"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("men", "man"),
        ("ies", "y"),
    ),
    "v": (
        ("s", ""),
        ("ies", "y"),
        ("es", "e"),
        ("es", ""),
        ("ed", "e"),
        ("ed", ""),
        ("ing", "e"),
        ("ing", ""),
    ),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")

# Words after which the next word is most likely a verb / a noun (a cheap, predictable POS guess).
VERB_CUES = frozenset(
    [
        "to",
        "can",
        "could",
        "will",
        "would",
        "should",
        "must",
        "may",
        "might",
        "shall",
        "do",
        "does",
        "did",
        "don't",
        "doesn't",
        "didn't",
        "please",
        "cannot",
        "can't",
        "won't",
        "i",
        "we",
        "you",
        "they",
        "lets",
        "let's",
        "not",
    ]
)
# "top up", "freeze out": a verb followed by one of these is a phrasal verb, not a single word.
PARTICLES = frozenset(["up", "off", "out", "down", "away", "back", "over"])
DETERMINERS = frozenset(
    ["a", "an", "the", "my", "your", "our", "their", "his", "her", "its", "this", "that", "these", "those"]
)
MODIFIER_CUES = frozenset(["how", "very", "too", "so", "more", "most", "less", "least", "quite", "rather"])
NOUN_CUES = frozenset(
    [
        "a",
        "an",
        "the",
        "my",
        "your",
        "our",
        "their",
        "his",
        "her",
        "its",
        "this",
        "that",
        "these",
        "those",
        "some",
        "any",
        "no",
        "every",
        "each",
        "another",
        "of",
        "for",
        "with",
        "about",
        "new",
    ]
)


class WordNetError(ConfigError):
    """WordNet's database files are missing or unreadable."""


@dataclass(frozen=True)
class Synset:
    """One WordNet synset: its byte offset in ``data.<pos>``, POS (``s`` = adjective satellite), lemmas."""

    offset: int
    pos: str
    lemmas: tuple[str, ...]
    gloss: str

    @property
    def id(self) -> str:
        return f"{self.offset:08d}-{self.pos}"


@dataclass(frozen=True)
class IndexEntry:
    lemma: str
    pos: str
    offsets: tuple[int, ...]
    tagged_senses: int  # senses seen in the SemCor sense-tagged corpus: a usage-frequency signal


def resolve_root(root: str | Path | None = None) -> Path:
    """The WordNet folder: ``root``, else ``$RATIONALIGN_WORDNET``, else ``/usr/share/wordnet``."""
    folder = Path(root or os.environ.get(WORDNET_ENV) or DEFAULT_ROOT).expanduser()
    missing = [f"{kind}.{POS_FILES[p]}" for p in POS_TAGS for kind in ("index", "data")]
    missing = [name for name in missing if not (folder / name).is_file()]
    if not folder.is_dir() or missing:
        what = "no such folder" if not folder.is_dir() else f"missing {', '.join(missing)}"
        raise WordNetError(f"{folder}: WordNet database not found ({what}); fix: {INSTALL_FIX}")
    return folder


class WordNet:
    """Read-only access to a WordNet database folder. Index files load lazily per POS (~0.3 s for nouns);
    synsets are read by seeking to their offset and cached."""

    def __init__(self, root: str | Path | None = None):
        self.root = resolve_root(root)
        self._index: dict[str, dict[str, str]] = {}
        self._entries: dict[tuple[str, str], IndexEntry] = {}
        self._exceptions: dict[str, dict[str, tuple[str, ...]]] = {}
        self._synsets: dict[tuple[str, int], Synset] = {}

    # ------------------------------------------------------------------ raw files
    def index(self, pos: str) -> dict[str, str]:
        """Lemma -> the rest of its ``index.<pos>`` line (parsed on demand by :meth:`entry`)."""
        pos = _check_pos(pos)
        if pos not in self._index:
            self._index[pos] = _read_index(self.root / f"index.{POS_FILES[pos]}")
        return self._index[pos]

    def entry(self, lemma: str, pos: str) -> IndexEntry | None:
        pos = _check_pos(pos)
        key = (pos, lemma)
        if key not in self._entries:
            raw = self.index(pos).get(lemma)
            if raw is None:
                return None
            self._entries[key] = _parse_index_rest(lemma, pos, raw)
        return self._entries[key]

    def exceptions(self, pos: str) -> dict[str, tuple[str, ...]]:
        pos = _check_pos(pos)
        if pos not in self._exceptions:
            table: dict[str, tuple[str, ...]] = {}
            path = self.root / f"{POS_FILES[pos]}.exc"
            if path.is_file():
                for line in path.read_text(encoding="latin-1").splitlines():
                    parts = line.split()
                    if len(parts) >= 2:
                        table[parts[0]] = tuple(parts[1:])
            self._exceptions[pos] = table
        return self._exceptions[pos]

    def synset_at(self, pos: str, offset: int) -> Synset:
        pos = _check_pos(pos)
        key = (pos, offset)
        if key not in self._synsets:
            path = self.root / f"data.{POS_FILES[pos]}"
            with path.open("rb") as handle:
                handle.seek(offset)
                line = handle.readline().decode("latin-1")
            self._synsets[key] = _parse_data_line(line, path, offset)
        return self._synsets[key]

    # ------------------------------------------------------------------ queries
    def morphy(self, word: str, pos: str) -> list[str]:
        """Base forms of ``word`` for ``pos`` that exist in WordNet (the word itself first when it does)."""
        pos = _check_pos(pos)
        form = word.strip().lower().replace(" ", "_")
        index = self.index(pos)
        found: list[str] = []
        if form in index:
            found.append(form)
        for base in self.exceptions(pos).get(form, ()):
            if base in index and base not in found:
                found.append(base)
        for suffix, replacement in DETACHMENT[pos]:
            if form.endswith(suffix) and len(form) > len(suffix):
                base = form[: len(form) - len(suffix)] + replacement
                if base in index and base not in found:
                    found.append(base)
        return found

    def synsets(self, word: str, pos: str | None = None) -> list[Synset]:
        """Synsets of every base form of ``word`` (one POS, or all four), most frequent sense first."""
        tags = POS_TAGS if pos is None else (_check_pos(pos),)
        out: list[Synset] = []
        seen: set[tuple[str, int]] = set()
        for tag in tags:
            for base in self.morphy(word, tag):
                for offset in self.entry(base, tag).offsets:  # type: ignore[union-attr]
                    if (tag, offset) not in seen:
                        seen.add((tag, offset))
                        out.append(self.synset_at(tag, offset))
        return out

    def tagged_count(self, word: str, pos: str) -> int:
        """How often the base form was sense-tagged with this POS in SemCor (0 when absent)."""
        bases = self.morphy(word, pos)
        return self.entry(bases[0], pos).tagged_senses if bases else 0  # type: ignore[union-attr]

    def is_inflection_of(self, candidate: str, word: str) -> bool:
        """True when ``candidate`` and ``word`` share a base form in any POS (``cards``/``card``)."""
        a, b = candidate.lower().replace(" ", "_"), word.lower().replace(" ", "_")
        if a == b:
            return True
        for tag in POS_TAGS:
            bases_a = {a, *self.morphy(a, tag)}
            if bases_a & {b, *self.morphy(b, tag)}:
                return True
        return False

    def synonyms(self, word: str, pos: str | None = None, max_senses: int | None = 3) -> list[str]:
        """Lemmas sharing a synset with ``word`` (first ``max_senses`` senses per POS), spaces for
        underscores, in sense order; without the word, its inflections, multi-word lemmas containing it
        and proper names."""
        tags = POS_TAGS if pos is None else (_check_pos(pos),)
        out: list[str] = []
        for tag in tags:
            bases = self.morphy(word, tag)
            if not bases:
                continue
            offsets = self.entry(bases[0], tag).offsets  # type: ignore[union-attr]
            for offset in offsets[: max_senses or None]:
                for lemma in self.synset_at(tag, offset).lemmas:
                    text = lemma.replace("_", " ")
                    if text != text.lower() or text in out:  # proper names ("Visa") are not synonyms
                        continue
                    # "swallow up" for "swallowed", "bank check" for "check": the word itself plus filler.
                    if any(self.is_inflection_of(token, word) for token in [lemma, *lemma.split("_")]):
                        continue
                    out.append(text)
        return out

    def guess_pos(self, words: Sequence[str], position: int) -> list[Pos]:
        """Parts of speech ``words[position]`` can have in WordNet, most likely first.

        Heuristic: a word after a verb cue (``to``, ``can``, ``please``, ``i`` ...) or opening the utterance
        is read as a verb; after a determiner or preposition as a noun (or adjective); a word ending in
        ``-ing`` / ``-ed`` prefers verb; otherwise the POS with the most sense-tagged uses in SemCor wins.
        """
        word = words[position]
        possible: list[Pos] = [tag for tag in POS_TAGS if self.morphy(word, tag)]
        if len(possible) <= 1:
            return possible
        previous = words[position - 1].lower() if position > 0 else ""
        following = words[position + 1] if position + 1 < len(words) else ""
        preferred: list[Pos]
        if previous in MODIFIER_CUES:
            preferred = ["a", "r", "n", "v"]
        elif previous in VERB_CUES or position == 0:
            preferred = ["v", "n", "a", "r"]
        elif previous in NOUN_CUES:
            # "the wrong amount", "my virtual card": a modifier when a noun follows.
            before_noun = "a" in possible and following.isalpha() and bool(self.morphy(following, "n"))
            preferred = ["a", "n", "v", "r"] if before_noun else ["n", "a", "v", "r"]
        elif word.lower().endswith(("ing", "ed")):
            preferred = ["v", "a", "n", "r"]
        else:
            counts = {tag: self.tagged_count(word, tag) for tag in possible}
            preferred = sorted(possible, key=lambda tag: (-counts[tag], POS_TAGS.index(tag)))
        return [tag for tag in preferred if tag in possible]

    def in_compound(self, words: Sequence[str], position: int) -> bool:
        """True when ``words[position]`` is part of a WordNet multi-word lemma with a neighbour (``credit
        card``), a phrasal verb (``top up``) or a hyphenated word (``top-up``): swapping it alone would
        break it."""
        word = words[position].lower()
        neighbours = []
        if position > 0:
            neighbours.append(f"{words[position - 1].lower()}_{word}")
        if position + 1 < len(words):
            neighbours.append(f"{word}_{words[position + 1].lower()}")
        if any(n in self.index(tag) for n in neighbours for tag in POS_TAGS):
            return True
        if position + 1 < len(words) and words[position + 1].lower() in PARTICLES and self.morphy(word, "v"):
            return True
        return (position > 0 and words[position - 1] == "-") or (
            position + 1 < len(words) and words[position + 1] == "-"
        )

    def contextual_synonyms(
        self, words: Sequence[str], position: int, max_senses: int | None = 3
    ) -> list[str]:
        """Synonyms of ``words[position]`` for its most likely part of speech in this context."""
        tags = self.guess_pos(words, position)
        return self.synonyms(words[position], tags[0], max_senses) if tags else []


def _check_pos(pos: str) -> Pos:
    tag = "a" if pos == "s" else pos
    if tag not in POS_FILES:
        raise ConfigError(f"unknown part of speech {pos!r}; fix: use one of n, v, a, r")
    return tag  # type: ignore[return-value]


def _read_index(path: Path) -> dict[str, str]:
    table: dict[str, str] = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):  # the licence header
            continue
        lemma, _, rest = line.partition(" ")
        if rest:
            table[lemma] = rest
    return table


def _parse_index_rest(lemma: str, pos: str, rest: str) -> IndexEntry:
    # rest = pos synset_cnt p_cnt ptr_symbol*p_cnt sense_cnt tagsense_cnt synset_offset*synset_cnt
    parts = rest.split()
    n_synsets, n_pointers = int(parts[1]), int(parts[2])
    tail = parts[3 + n_pointers :]
    offsets = tuple(int(o) for o in tail[2 : 2 + n_synsets])
    return IndexEntry(lemma, pos, offsets, int(tail[1]))


def _parse_data_line(line: str, path: Path, offset: int) -> Synset:
    head, _, gloss = line.partition(" | ")
    parts = head.split()
    if not parts or int(parts[0]) != offset:
        raise WordNetError(f"{path}: no synset at byte {offset}; fix: reinstall WordNet ({INSTALL_FIX})")
    n_words = int(parts[3], 16)
    lemmas = tuple(_ADJ_MARKER.sub("", parts[4 + 2 * i]) for i in range(n_words))
    return Synset(offset=offset, pos=parts[2], lemmas=lemmas, gloss=gloss.strip())


@lru_cache(maxsize=4)
def _cached(root: str) -> WordNet:
    return WordNet(root)


def load_wordnet(root: str | Path | None = None) -> WordNet:
    """A shared :class:`WordNet` per folder (index files are parsed once per process)."""
    return _cached(str(resolve_root(root)))


def wordnet_available(root: str | Path | None = None) -> bool:
    try:
        resolve_root(root)
    except WordNetError:
        return False
    return True
