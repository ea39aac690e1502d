"""The evaluation suite end to end on a tiny random classifier and tiny data (plumbing, not quality)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.conftest import write_jsonl

from rationalign.attribution.base import WordAttribution
from rationalign.attribution.words import split_words
from rationalign.data import load_dataset
from rationalign.data.types import IntentDataset
from rationalign.errors import ConfigError, DataError, ModelError
from rationalign.evaluation.adversarial import AdversarialExample, AttackSet, GeneratorStats
from rationalign.evaluation.suite import SCHEMA_VERSION, evaluate_suite, load_teacher_priors


@pytest.fixture()
def data_dir(tiny_data_dir):
    write_jsonl(
        tiny_data_dir / "oos_valid.jsonl",
        [{"text": t, "label": "oos"} for t in ("what is the weather", "tell me a joke", "who won the game")],
    )
    write_jsonl(
        tiny_data_dir / "oos_test.jsonl",
        [
            {"text": t, "label": "oos"}
            for t in ("play some jazz", "how tall is everest", "book a table", "sing")
        ],
    )
    return tiny_data_dir


@pytest.fixture()
def model_dir(tmp_path, tiny_classifier):
    return tiny_classifier.save(tmp_path / "model")


def _attack(test: IntentDataset) -> AttackSet:
    examples = [
        AdversarialExample(
            e.text,
            e.text.replace("card", "account").replace("alarm", "clock"),
            e.label,
            ((0, "x", "y"),),
            "synonym",
            0.9,
            0,
            i,
        )
        for i, e in enumerate(test)
    ]
    stats = {
        "synonym": GeneratorStats("synonym", 0.5, len(test), len(test), len(test) + 2, len(test), len(test))
    }
    return AttackSet(examples, "tiny", 0, 1, [{"name": "synonym", "min_validity": 0.5, "config": {}}], stats)


def test_suite_end_to_end(tmp_path, data_dir, model_dir):
    test = load_dataset(data_dir / "test.jsonl")
    attack = _attack(test)
    attack_path = attack.save(tmp_path / "attack.jsonl")
    # teacher rationale: the last word matters most (a made-up but well-defined prior)
    priors = {
        e.text: WordAttribution(
            split_words(e.text), np.arange(len(split_words(e.text)), dtype=float), "cap", i % 4
        )
        for i, e in enumerate(test)
    }
    result = evaluate_suite(
        model_dir,
        str(data_dir),
        attack_set=attack_path,
        teacher_priors=priors,
        limit=5,
        store_calibration=True,
    )
    out = result.to_dict()
    assert out["schema_version"] == SCHEMA_VERSION == 1
    assert out["split"] == "test" and out["model"]["labels"] == 4
    m = out["metrics"]
    assert set(m) >= {
        "clean",
        "calibration",
        "ood",
        "adversarial",
        "faithfulness",
        "counterfactual",
        "stability",
        "fidelity",
    }
    assert 0.0 <= m["clean"]["accuracy"] <= 1.0 and m["clean"]["n_examples"] == len(test)
    adv = m["adversarial"]["synonym"]
    assert adv["n_examples"] == len(test)
    assert adv["drop"] == pytest.approx(adv["clean_accuracy_same_sources"] - adv["accuracy"])
    assert adv["validity_pass_rate"] == pytest.approx(len(test) / (len(test) + 2))
    worst = m["adversarial"]["worst_case"]  # one variant per source: the same as the generator's rate
    assert worst["n_sources"] == len(test) and worst["accuracy"] == pytest.approx(adv["accuracy"])
    assert m["faithfulness"]["n_examples"] == 5 and len(m["faithfulness"]["comprehensiveness"]) == 5
    assert m["faithfulness"]["attribution"] == "gxi"
    assert set(m["stability"]) >= {"typo", "casing", "punctuation"}
    assert m["fidelity"]["n_examples"] == 5
    cal = m["calibration"]
    assert cal["temperature"] > 0 and cal["after"]["n_examples"] == len(test)
    assert (
        cal["fit"]["nll_after"] <= cal["fit"]["nll_before"] + 1e-9
    )  # fitted on validation: never worse there
    ood = m["ood"]
    assert (
        ood["n_out_of_scope"] == 4
        and 0.0 <= ood["msp"]["auroc"] <= 1.0
        and 0.0 <= ood["energy"]["auroc"] <= 1.0
    )
    assert ood["abstain"]["tpr"] >= 0.95
    # the temperature and threshold were stored with the model
    meta = json.loads((model_dir / "rationalign.json").read_text())
    assert meta["temperature"] == pytest.approx(cal["temperature"])
    assert meta["abstain_threshold"] == pytest.approx(ood["abstain"]["threshold"])
    json.dumps(out, allow_nan=False)  # strict JSON: NaN were turned into null

    metrics_path, records_path = result.save(tmp_path / "out" / "metrics.json")
    assert json.loads(metrics_path.read_text())["metrics"]["clean"] == m["clean"]
    records = [json.loads(line) for line in records_path.read_text().splitlines()]
    kinds = [r["kind"] for r in records]
    assert (
        kinds.count("clean") == len(test)
        and kinds.count("adversarial") == len(test)
        and kinds.count("oos") == 4
    )
    explained = [r for r in records if r["kind"] == "clean" and "aopc_comprehensiveness" in r]
    assert len(explained) == 5 and all("fidelity_spearman" in r for r in explained)


def test_suite_without_optional_parts(tiny_classifier, data_dir):
    test = load_dataset(data_dir / "test.jsonl")
    result = evaluate_suite(
        tiny_classifier,
        {"test": test},
        calibrate=False,
        stability=False,
        attribution="ig",
        ig_steps=4,
        limit=2,
    )
    m = result.metrics
    assert "adversarial" not in m and "ood" not in m and "fidelity" not in m and "stability" not in m
    assert "after" not in m["calibration"] and m["faithfulness"]["attribution"] == "ig"
    assert result.timings["faithfulness_per_100_seconds"] > 0


def test_suite_errors(tmp_path, tiny_classifier, data_dir, model_dir):
    other = IntentDataset.from_pairs([("hello there", "greeting")], name="other")
    with pytest.raises(DataError, match="label space"):
        evaluate_suite(tiny_classifier, {"test": other})
    with pytest.raises(DataError, match="empty"):
        evaluate_suite(tiny_classifier, {"test": IntentDataset([], name="none")})
    with pytest.raises(ConfigError, match="model folder"):
        evaluate_suite(tiny_classifier, str(data_dir), store_calibration=True)
    with pytest.raises(ConfigError, match="gxi"):
        evaluate_suite(tiny_classifier, str(data_dir), attribution="lime", stability=False)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="not a rationalign model"):
        evaluate_suite(tmp_path, str(data_dir))
    with pytest.raises(ModelError, match="not a classifier"):
        evaluate_suite(object(), str(data_dir))
    from rationalign.data.types import LabelSpace

    headless = type(tiny_classifier).tiny(tiny_classifier.label_space, arch="bert", seed=0)
    # 5 label names over a head with 4 logits
    headless.label_space = LabelSpace([*tiny_classifier.label_space.names, "extra_intent"])
    with pytest.raises(ModelError, match="4 logits for 5 labels"):
        evaluate_suite(headless, str(data_dir), stability=False, limit=1)
    bad_attack = AttackSet(
        [AdversarialExample("a", "b", "unknown_label", ((0, "a", "b"),), "synonym", 1.0, 0, 0)],
        "x",
        0,
        1,
        [{"name": "synonym"}],
        {},
    )
    with pytest.raises(DataError, match="label space"):
        evaluate_suite(tiny_classifier, str(data_dir), attack_set=bad_attack, stability=False, limit=1)
    with pytest.raises(DataError, match="no teacher prior"):
        evaluate_suite(
            tiny_classifier,
            str(data_dir),
            teacher_priors={"unrelated": WordAttribution(["x"], [1.0], "cap", 0)},
            stability=False,
            limit=1,
        )


def test_teacher_priors_from_a_prior_store(tmp_path, tiny_classifier, data_dir):
    from rationalign.attribution.store import PriorKey, PriorStore

    test = load_dataset(data_dir / "test.jsonl")
    space = tiny_classifier.label_space
    path = tmp_path / "priors.sqlite"
    with PriorStore(path) as store:
        items = []
        for e in test:
            words = split_words(e.text)
            items.append(
                (
                    PriorKey.make("teacher", "cap", {"m": 32}, e.text, space.id(e.label)),
                    WordAttribution(
                        words, np.ones(len(words)) + np.arange(len(words)), "cap", space.id(e.label)
                    ),
                )
            )
        store.put_many(items)
    table = load_teacher_priors(path)
    assert len(table) == len(test)
    result = evaluate_suite(
        tiny_classifier, str(data_dir), teacher_priors=path, stability=False, calibrate=False, limit=3
    )
    assert result.metrics["fidelity"]["n_examples"] == 3 and result.metrics["fidelity"]["prior_method"] == [
        "cap"
    ]
    with PriorStore(path) as store:
        e = test[0]
        store.put_many(
            [
                (
                    PriorKey.make("teacher", "lime", {}, e.text, 0),
                    WordAttribution(split_words(e.text), np.ones(len(split_words(e.text))), "lime", 0),
                )
            ]
        )
    with pytest.raises(DataError, match="--prior-method"):
        load_teacher_priors(path)
    assert len(load_teacher_priors(path, method="cap")) == len(test)


def test_worst_case_counts_a_source_only_when_every_variant_and_the_original_are_right():
    from rationalign.evaluation.suite import _worst_case

    def ex(original: str, i: int) -> AdversarialExample:
        return AdversarialExample(original, f"{original} v{i}", "a", ((0, "x", "y"),), "synonym", 0.9, 0, 0)

    examples = [ex("s1", 0), ex("s1", 1), ex("s2", 0), ex("s2", 1), ex("s2", 2), ex("s3", 0)]
    attack = AttackSet(examples, "tiny", 0, 3, [], {})
    gold = np.zeros(6, dtype=int)
    clean = np.array([0, 0, 0, 0, 0, 1])  # s3's original is already wrong
    adv_pred = np.array([0, 1, 0, 0, 0, 0])  # s1 falls to its second variant; s2 survives all three
    out = _worst_case(attack, gold, clean, adv_pred)
    assert out["n_sources"] == 3 and out["n_examples"] == 6 and out["variants_per_source"] == 2.0
    assert out["accuracy"] == pytest.approx(1 / 3)
    assert out["clean_accuracy_same_sources"] == pytest.approx(2 / 3)
    assert out["drop"] == pytest.approx(1 / 3)
    assert out["attack_success_rate"] == pytest.approx(1 / 2)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"text": "caf\xe9"}\n', r"priors.jsonl:1: bytes are not UTF-8"),
        (b'{"text": "a", "method": "cap", "fingerprint": "f"}\n[1]\n', r"priors.jsonl:1: malformed prior"),
        (b"\n[1]\n", r"priors.jsonl:2: line is a JSON array, not an object; fix: re-export the prior store"),
        (b'{"text": \n', r"priors.jsonl:1: malformed JSON .*; fix: re-export the prior store"),
    ],
)
def test_a_bad_prior_file_is_a_located_error(tmp_path, content: bytes, problem: str) -> None:
    path = tmp_path / "priors.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=problem):
        load_teacher_priors(path)
