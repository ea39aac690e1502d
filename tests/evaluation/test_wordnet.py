"""The offline WordNet reader: synonyms, lemmatisation, POS guess, errors, and agreement with nltk."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest

from rationalign.errors import RationalignError
from rationalign.evaluation.wordnet import POS_FILES, WordNet, WordNetError, load_wordnet, resolve_root


@pytest.fixture(scope="module")
def wn() -> WordNet:
    try:
        return load_wordnet()
    except WordNetError as err:
        pytest.skip(str(err))


def test_synonyms_are_what_wordnet_3_lists(wn):
    # "freeze" as a verb shares a synset with "block" ("prohibit the conversion or use of assets").
    assert "block" in wn.synonyms("freeze", "v", max_senses=None)
    assert "suspend" in wn.synonyms("freeze", "v", max_senses=None)
    assert "call off" in wn.synonyms("cancel", "v")  # underscores become spaces
    assert "obstruct" in wn.synonyms("block", "v")
    assert "repay" in wn.synonyms("refund", "v")
    assert wn.synonyms("money", "n") == []  # money's senses have no other lemma
    # the verb sense of "freeze" is not a noun synonym
    assert "block" not in wn.synonyms("freeze", "n", max_senses=None)


def test_synonyms_exclude_the_word_its_inflections_and_phrases_containing_it(wn):
    for word in ("card", "cards", "check", "swallow", "transfer"):
        synonyms = wn.synonyms(word, max_senses=None)
        assert all("_" not in s for s in synonyms)
        assert all(not wn.is_inflection_of(token, word) for s in synonyms for token in s.split()), (
            word,
            synonyms,
        )
    assert "card" not in wn.synonyms("cards", max_senses=None)
    assert "swallow up" not in wn.synonyms("swallowed", "v", max_senses=None)
    assert all(s == s.lower() for s in wn.synonyms("express", max_senses=None))  # no proper names


def test_morphy_handles_rules_and_exceptions(wn):
    assert wn.morphy("froze", "v") == ["freeze"]  # verb.exc
    assert "card" in wn.morphy("cards", "n")
    assert "transfer" in wn.morphy("transferred", "v")
    assert "charge" in wn.morphy("charged", "v")
    assert wn.morphy("qwertyuiop", "n") == []
    assert wn.is_inflection_of("alarms", "alarm") and not wn.is_inflection_of("alarm", "clock")


def test_guess_pos_uses_the_context(wn):
    assert wn.guess_pos(["please", "freeze", "my", "card"], 1)[0] == "v"
    assert wn.guess_pos(["i", "need", "a", "new", "card"], 4)[0] == "n"
    assert wn.guess_pos(["the", "wrong", "amount", "was", "taken"], 1)[0] == "a"
    assert wn.guess_pos(["how", "long", "does", "it", "take"], 1)[0] == "a"
    assert wn.guess_pos(["xyzzy"], 0) == []


def test_compounds_are_detected(wn):
    assert wn.in_compound(["my", "credit", "card", "is", "gone"], 2)  # credit_card is a WordNet noun
    assert wn.in_compound(["how", "do", "i", "top", "up"], 3)  # phrasal verb
    assert wn.in_compound(["the", "top", "-", "up", "failed"], 1)  # hyphenated
    assert not wn.in_compound(["please", "freeze", "my", "card"], 1)


def test_missing_folder_names_the_install_fix(tmp_path):
    with pytest.raises(RationalignError, match="apt-get install -y wordnet-base"):
        WordNet(tmp_path / "nowhere")
    (tmp_path / "index.noun").write_text("")
    with pytest.raises(WordNetError, match=r"missing data\.noun"):
        resolve_root(tmp_path)


def test_environment_variable_points_at_the_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("RATIONALIGN_WORDNET", str(tmp_path))
    with pytest.raises(WordNetError, match=str(tmp_path)):
        resolve_root()


def test_agrees_with_nltk_reader_on_the_same_files(wn, tmp_path):
    """nltk cannot open Debian's folder as is (no lexnames file, path sandbox): give it a copy."""
    nltk = pytest.importorskip("nltk")
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    folder = tmp_path / "wordnet"
    folder.mkdir()
    for entry in Path(wn.root).iterdir():
        if entry.is_file() and entry.name.split(".")[0] in ("index", "data", *POS_FILES.values()):
            shutil.copyfile(entry, folder / entry.name)  # copies: nltk refuses links leaving its folder
    # nltk only maps lexicographer file numbers to names with it; the names do not matter here.
    (folder / "lexnames").write_text("".join(f"{i:02d}\tlex.{i}\t0\n" for i in range(45)))

    class PlainReader(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):  # the Open Multilingual WordNet mapping needs nltk_data
            return None

    nltk.data.path.append(str(folder))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multilingual functions are not available": not used here
            reader = PlainReader(str(folder), None)
        words = [
            "freeze",
            "block",
            "card",
            "cards",
            "transfer",
            "cancelled",
            "alarm",
            "check",
            "top",
            "charged",
            "lost",
        ]
        for word in words:
            for pos in POS_FILES:
                ours = [(s.offset, s.lemmas) for s in wn.synsets(word, pos)]
                theirs = [
                    (s.offset(), tuple(lemma.name() for lemma in s.lemmas()))
                    for s in reader.synsets(word, pos)
                ]
                assert sorted(ours) == sorted(theirs), (word, pos)
            assert set(wn.morphy("cancelled", "v")) == {reader.morphy("cancelled", "v")}
    finally:
        nltk.data.path.remove(str(folder))
