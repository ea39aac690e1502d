"""Adversarial generators: determinism under a seed, real keyword edits, validity, attack-set files."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from rationalign.attribution.base import WordAttribution
from rationalign.attribution.words import split_words
from rationalign.data import load_dataset
from rationalign.data.types import Example, IntentDataset, LabelSpace
from rationalign.errors import ConfigError, DataError
from rationalign.evaluation.adversarial import (
    AdversarialExample,
    AttackSet,
    ConfusableKeywordSwap,
    LLMRewrite,
    ReferenceValidator,
    SimilarityValidator,
    SynonymSwap,
    apply_edits,
    clean_reply,
    generate_attack_set,
    inflect_like,
    word_edits,
    wordnet_synonym_fn,
)
from rationalign.evaluation.keywords import confusable_from_keywords, pmi_keywords, pmi_stats
from rationalign.evaluation.wordnet import WordNetError, load_wordnet


class BagOfWordsEncoder:
    """Deterministic stand-in for MiniLM: hashed bag-of-words vectors (shared words -> similar)."""

    def encode(self, texts):
        out = np.zeros((len(texts), 64))
        for i, text in enumerate(texts):
            for word in split_words(text.lower()):
                out[i, zlib.crc32(word.encode()) % 64] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def similarity(self, a, b):
        return np.sum(self.encode(a) * self.encode(b), axis=1)


@pytest.fixture(scope="module")
def wordnet():
    try:
        return load_wordnet()
    except WordNetError as err:
        pytest.skip(str(err))


@pytest.fixture()
def tiny(tiny_data_dir):
    train = load_dataset(tiny_data_dir / "train.jsonl")
    test = load_dataset(tiny_data_dir / "test.jsonl")
    stats = pmi_stats(train)
    return train, test, stats, pmi_keywords(stats, top_k=8, min_count=1)


EXAMPLES = [
    Example("please freeze my card", "card_block"),
    Example("block my card now", "card_block"),
    Example("activate my card", "card_activate"),
    Example("check my alarms", "alarm_query"),
]


def test_apply_and_diff_edits():
    text = "Please freeze my card!"
    assert apply_edits(text, [(1, "freeze", "block")]) == "Please block my card!"
    assert (
        apply_edits(text, [(1, "freeze", "lock up"), (3, "card", "account")]) == "Please lock up my account!"
    )
    with pytest.raises(DataError, match="expects"):
        apply_edits(text, [(1, "card", "x")])
    assert word_edits("please freeze my card", "please lock my card") == ((1, "freeze", "lock"),)
    assert word_edits("freeze my card", "freeze my debit card") == ((1, "my", "my debit"),)


def test_inflection_follows_the_original_word():
    assert inflect_like("cards", "card", "identity card", "n") == "identity cards"
    assert inflect_like("charged", "charge", "bill", "v") == "billed"
    assert inflect_like("stopped", "stop", "halt", "v") == "halted"
    assert inflect_like("blocking", "block", "stop", "v") == "stopping"
    assert inflect_like("transferred", "transfer", "call off", "v") is None  # doubling not derivable: skip
    assert inflect_like("froze", "freeze", "block", "v") is None  # irregular
    assert inflect_like("cancelled", "cancel", "get", "v", frozenset({"get"})) is None


def test_synonym_swap_is_deterministic_and_edits_a_label_carrying_word(wordnet, tiny):
    _, _, _, table = tiny
    swap = SynonymSwap(keywords=table, validator=SimilarityValidator(BagOfWordsEncoder()), min_validity=0.0)
    first = swap.generate(EXAMPLES, n_per_example=2, seed=3)
    again = swap.generate(EXAMPLES, n_per_example=2, seed=3)
    assert first == again
    assert first, "WordNet has synonyms for freeze/block/activate/check"
    for ex in first:
        assert ex.generator == "synonym" and ex.seed == 3
        assert ex.text != ex.original
        assert apply_edits(ex.original, ex.edits) == ex.text
        for position, old, new in ex.edits:
            assert split_words(ex.original)[position] == old
            assert old.lower() in table.top(ex.label), (old, ex.label)  # a keyword of the gold label
            assert new.lower() != old.lower() and not wordnet.is_inflection_of(new, old)
        assert 0.0 <= ex.validity <= 1.0 + 1e-9
    freeze = [e for e in first if e.original == "please freeze my card" and e.edits[0][1] == "freeze"]
    assert freeze and all(e.edits[0][2] in wordnet.synonyms("freeze", "v", None) for e in freeze)


def test_seed_changes_the_sampled_candidates(wordnet, tiny):
    _, _, _, table = tiny
    swap = SynonymSwap(keywords=table, validator=None, max_candidates=1, min_validity=0.0)
    outputs = {tuple(e.text for e in swap.generate(EXAMPLES, 1, seed)) for seed in range(6)}
    assert len(outputs) > 1  # with one candidate sampled per utterance, the seed decides which


def test_synonym_swap_with_a_prior_replaces_the_top_prior_word(wordnet):
    prior = WordAttribution(["please", "freeze", "my", "card"], np.array([0.0, 0.1, 0.0, 0.9]), "cap", 0)
    swap = SynonymSwap(priors={"please freeze my card": prior}, min_validity=0.0, top_words=1)
    out = swap.generate([EXAMPLES[0]], n_per_example=3, seed=0)
    # "card" has the top prior score; its noun synonyms are few but exist ("identity card" is excluded).
    assert all(e.edits[0][:2] == (3, "card") for e in out)


def test_confusable_swap_with_a_reference_model(tiny):
    train, _, stats, table = tiny
    confusable = confusable_from_keywords(stats)
    space = LabelSpace.from_labels(train.labels)

    def reference(texts):  # keeps card_block only while "card" is still there
        probs = np.full((len(texts), len(space)), 0.1 / (len(space) - 1))
        for i, t in enumerate(texts):
            probs[i, space.id("card_block" if "card" in t else "card_activate")] = 0.9
        return probs / probs.sum(1, keepdims=True)

    swap = ConfusableKeywordSwap(
        stats=stats, keywords=table, confusable=confusable, reference=ReferenceValidator(reference, space)
    )
    out = swap.generate(EXAMPLES[:2], n_per_example=3, seed=0)
    assert out == swap.generate(EXAMPLES[:2], n_per_example=3, seed=0)
    assert out
    for ex in out:
        ((_, old, new),) = ex.edits
        assert old.lower() in table.top(ex.label)
        assert new.lower() in table.top(confusable[ex.label])  # a keyword of the confusable class
        assert ex.validity == pytest.approx(0.9 if "card" in ex.text else 0.1 / 3)
    kept = generate_attack_set(EXAMPLES[:2], [swap], 3, 0).examples
    assert kept and all("card" in e.text for e in kept)  # validity >= 0.5 only where the reference agrees


def test_confusable_swap_heuristic_only_swaps_shared_words(tiny):
    _, _, stats, table = tiny
    confusable = confusable_from_keywords(stats)
    swap = ConfusableKeywordSwap(stats=stats, keywords=table, confusable=confusable, min_sharedness=0.3)
    out = swap.generate(EXAMPLES, n_per_example=5, seed=1)
    for ex in out:
        ((_, old, new),) = ex.edits
        other = confusable[ex.label]
        assert stats.sharedness(old, ex.label, other) >= 0.3
        assert stats.sharedness(new, ex.label, other) >= 0.3
        assert ex.validity == pytest.approx(
            min(stats.sharedness(old, ex.label, other), stats.sharedness(new, ex.label, other))
        )


class FakeLLM:
    """Replaces the keyword named in the prompt by 'XX' (or echoes the request once, to test rejection)."""

    name = "fake"

    def __init__(self, echo_for: str = ""):
        self.prompts: list[str] = []
        self.echo_for = echo_for

    def generate(self, prompt: str) -> str:
        self.prompts.append(prompt)
        keyword = prompt.split('use the word "')[1].split('"')[0]
        request = prompt.split("Request: ")[1].split("\n")[0]
        if keyword == self.echo_for:
            return request
        return f'Rewritten request: "{request.replace(keyword, "lock")}"\nHope this helps!'


def test_llm_rewrite_with_a_fake_generator(tiny):
    _, _, _, table = tiny
    llm = FakeLLM(echo_for="block")
    rewrite = LLMRewrite(llm, keywords=table, min_validity=0.0)
    out = rewrite.generate(EXAMPLES[:2], n_per_example=1, seed=0)
    assert len(llm.prompts) == 2 and "please freeze my card" in llm.prompts[0]
    assert rewrite.n_rejected_replies == 1  # the echo kept the keyword
    (ex,) = out
    assert ex.generator == "llm" and ex.text == "please lock my card"
    assert ex.edits == ((1, "freeze", "lock"),)
    assert clean_reply("  \n'Answer: hi there'\nmore") == "Answer: hi there"
    assert clean_reply("Answer: hi there") == "hi there"
    with pytest.raises(ConfigError, match="generate"):
        LLMRewrite(object(), keywords=table)


def test_attack_set_round_trip_and_threshold(tmp_path, wordnet, tiny):
    _, test, _, table = tiny
    encoder = BagOfWordsEncoder()
    gens = [SynonymSwap(keywords=table, validator=SimilarityValidator(encoder), min_validity=0.5)]
    attack = generate_attack_set(test, gens, n_per_example=2, seed=7)
    stats = attack.stats["synonym"]
    assert stats.n_passed == len(attack) == sum(e.validity >= 0.5 for e in attack.examples + attack.rejected)
    assert stats.n_candidates == len(attack.examples) + len(attack.rejected)
    path = attack.save(tmp_path / "set.jsonl", include_rejected=True)
    header = json.loads(path.read_text().splitlines()[0])
    assert header["seed"] == 7 and header["generators"][0]["name"] == "synonym"
    assert header["stats"]["synonym"]["n_passed"] == stats.n_passed
    loaded = AttackSet.load(path)
    assert loaded.examples == attack.examples and loaded.rejected == attack.rejected
    assert loaded.seed == 7 and loaded.stats["synonym"].pass_rate == pytest.approx(stats.pass_rate)
    assert len(loaded.to_dataset()) == len(attack)
    everything = generate_attack_set(test, gens, 2, 7, min_validity=0.0)
    assert len(everything) == stats.n_candidates


def test_merged_attack_sets_keep_every_variant_and_refuse_name_clashes(wordnet, tiny):
    _, test, _, table = tiny
    one = generate_attack_set(test, [SynonymSwap(keywords=table, min_validity=0.0)], 2, seed=1)
    two_words = SynonymSwap(keywords=table, swaps=2, min_validity=0.0)
    assert two_words.top_words == 3  # one more candidate word than it swaps
    two = generate_attack_set(test, [two_words], 2, seed=1)
    assert two.generator_names == ["synonym_x2"] and two.examples
    assert all(len(e.edits) == 2 for e in two.examples)
    merged = AttackSet.merge([one, two])
    assert merged.examples == one.examples + two.examples
    assert merged.generator_names == ["synonym", "synonym_x2"] and set(merged.stats) == set(
        merged.generator_names
    )
    with pytest.raises(ConfigError, match="share generator names"):
        AttackSet.merge([one, one])
    other_seed = generate_attack_set(test, [two_words], 2, seed=2)
    with pytest.raises(ConfigError, match="same split and seed"):
        AttackSet.merge([one, other_seed])


def test_attack_set_bad_files_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "label": "y"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: first line is not an attack-set header"):
        AttackSet.load(bad)
    header = AttackSet([], "d", 0, 1, [], {}).header()
    bad.write_text(json.dumps(header) + "\n" + '{"type": "example", "text": "x"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed example"):
        AttackSet.load(bad)
    bad.write_text(json.dumps(header) + "\nnot json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSON"):
        AttackSet.load(bad)
    bad.write_bytes(json.dumps(header).encode() + b'\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: bytes are not UTF-8"):
        AttackSet.load(bad)
    with pytest.raises(DataError, match="no such attack set"):
        AttackSet.load(tmp_path / "missing.jsonl")


def test_generator_argument_errors(tiny):
    _, _, _, table = tiny
    with pytest.raises(ConfigError):
        generate_attack_set(EXAMPLES, [], 1, 0)
    with pytest.raises(DataError, match="no examples"):
        generate_attack_set(IntentDataset([]), [SynonymSwap(keywords=table)], 1, 0)
    with pytest.raises(ConfigError, match="n_per_example"):
        SynonymSwap(keywords=table).generate(EXAMPLES, 0, 0)
    with pytest.raises(ConfigError, match="keywords"):
        SynonymSwap()
    with pytest.raises(DataError, match="does not know"):
        ReferenceValidator(lambda t: np.ones((len(t), 1)), LabelSpace(["x"])).score(["a"], ["b"], ["y"])


def test_wordnet_synonym_fn_for_stability(wordnet):
    synonym = wordnet_synonym_fn(wordnet)
    assert synonym("my") is None and synonym("42") is None
    assert synonym("quickly") == "rapidly"
    assert synonym("Change,") == "Alter,"  # case and punctuation kept


def test_adversarial_example_dict_round_trip():
    ex = AdversarialExample("a b", "a c", "y", ((1, "b", "c"),), "synonym", 0.9, 0, 4)
    assert AdversarialExample.from_dict(json.loads(json.dumps(ex.to_dict()))) == ex
