"""k-shot sampling and stratified hold-out splits: seeded, deterministic, stable order."""

from __future__ import annotations

from collections import Counter

import pytest

from rationalign.data import IntentDataset, sample_k_shot, stratified_split
from rationalign.data.types import Example
from rationalign.errors import DataError


def _dataset(counts: dict[str, int]) -> IntentDataset:
    # Interleave labels so that "sorted by original index" differs from "grouped by label".
    examples, i = [], 0
    remaining = dict(counts)
    while any(remaining.values()):
        for label in counts:
            if remaining[label]:
                examples.append(Example(f"{label} text {i}", label, "mem.jsonl", i + 1))
                remaining[label] -= 1
                i += 1
    return IntentDataset(examples, name="toy")


TOY = _dataset({"a": 12, "b": 30, "c": 8})


def _positions(sample: IntentDataset, ds: IntentDataset = TOY) -> list[int]:
    index = {id(e): i for i, e in enumerate(ds.examples)}
    return [index[id(e)] for e in sample]


def test_k_per_label_in_original_order() -> None:
    sample = sample_k_shot(TOY, 5, seed=0)
    assert Counter(sample.labels) == {"a": 5, "b": 5, "c": 5}
    positions = _positions(sample)
    assert positions == sorted(positions) and len(set(positions)) == 15
    assert sample.meta["source_indices"] == positions
    assert sample.meta["k_shot"] == 5 and sample.meta["seed"] == 0


def test_seeded_and_deterministic() -> None:
    first = sample_k_shot(TOY, 4, seed=7)
    assert sample_k_shot(TOY, 4, seed=7).examples == first.examples
    seeds = {tuple(_positions(sample_k_shot(TOY, 4, seed=s))) for s in range(6)}
    assert len(seeds) == 6  # different seeds, different samples


def test_smaller_k_is_contained_in_larger_k_and_labels_are_independent() -> None:
    five, eight = sample_k_shot(TOY, 5, seed=3), sample_k_shot(TOY, 8, seed=3)
    assert set(_positions(five)) <= set(_positions(eight))
    # Removing label "c" does not change what is picked for "a" and "b".
    without_c = IntentDataset([e for e in TOY if e.label != "c"], name="toy-ab")
    picked = {e.text for e in sample_k_shot(without_c, 5, seed=3)}
    assert picked == {e.text for e in five if e.label != "c"}


def test_too_few_examples_is_an_error_unless_allowed() -> None:
    with pytest.raises(
        DataError, match=r"^toy: 2 label\(s\) have fewer than k=13 examples \('c' has 8, 'a' has 12"
    ):
        sample_k_shot(TOY, 13, seed=0)
    with pytest.raises(DataError, match=r"fix: lower k to 8 or sample with allow_fewer=True"):
        sample_k_shot(TOY, 10, seed=0)
    sample = sample_k_shot(TOY, 10, seed=0, allow_fewer=True)
    assert Counter(sample.labels) == {"a": 10, "b": 10, "c": 8}
    with pytest.raises(ValueError):
        sample_k_shot(TOY, 0, seed=0)


def test_real_banking77_ten_shot(banking77_train) -> None:
    sample = sample_k_shot(banking77_train, 10, seed=0)
    assert len(sample) == 770 and set(Counter(sample.labels).values()) == {10}
    lines = [e.line for e in sample]
    assert lines == sorted(lines)
    assert sample_k_shot(banking77_train, 10, seed=0).texts == sample.texts


def test_stratified_split_partitions_every_label() -> None:
    rest, held = stratified_split(TOY, 0.1, seed=0)
    assert Counter(held.labels) == {"a": 1, "b": 3, "c": 1}
    assert len(rest) + len(held) == len(TOY)
    assert set(_positions(rest)).isdisjoint(_positions(held))
    assert _positions(rest) == sorted(_positions(rest)) and _positions(held) == sorted(_positions(held))
    again_rest, again_held = stratified_split(TOY, 0.1, seed=0)
    assert again_held.examples == held.examples and again_rest.examples == rest.examples
    assert stratified_split(TOY, 0.1, seed=1)[1].examples != held.examples


def test_stratified_split_keeps_rare_labels_in_rest() -> None:
    ds = _dataset({"one": 1, "two": 2, "many": 40})
    rest, held = stratified_split(ds, 0.5, seed=0)
    assert Counter(held.labels) == {"two": 1, "many": 20}
    assert Counter(rest.labels) == {"one": 1, "two": 1, "many": 20}
    with pytest.raises(ValueError):
        stratified_split(ds, 1.0)
