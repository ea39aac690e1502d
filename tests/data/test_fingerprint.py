"""Content fingerprints: order-insensitive, normalised, and sensitive to every real change."""

from __future__ import annotations

import hashlib
import json
import random

from rationalign.data import IntentDataset, fingerprint, fingerprint_splits, normalise_text
from rationalign.data.types import Example

PAIRS = [("Where is my card?", "card_arrival"), ("top up failed", "top_up_failed"), ("hello", "greet")]
BASE = IntentDataset.from_pairs(PAIRS, name="base")


def test_independent_reimplementation() -> None:
    # The documented scheme, written out: sorted JSON pairs, one per line, after a versioned prefix.
    body = "".join(json.dumps(list(p), ensure_ascii=False) + "\n" for p in sorted(PAIRS))
    expected = hashlib.sha256(b"rationalign-data-fingerprint-v1\n" + body.encode()).hexdigest()
    assert fingerprint(BASE) == expected
    assert len(expected) == 64 and int(expected, 16) >= 0


def test_order_source_and_name_do_not_matter() -> None:
    shuffled = list(PAIRS)
    random.Random(0).shuffle(shuffled)
    assert shuffled != PAIRS
    relocated = IntentDataset(
        [Example(t, y, "/elsewhere/data.csv", 100 + i) for i, (t, y) in enumerate(shuffled)], name="other"
    )
    assert fingerprint(relocated) == fingerprint(BASE)


def test_unicode_and_whitespace_normalised_but_case_kept() -> None:
    composed = IntentDataset.from_pairs([("café  au\tlait ", "order")])
    decomposed = IntentDataset.from_pairs([("  cafe\u0301 au lait", "order")])
    assert normalise_text("  cafe\u0301 \n au lait") == "café au lait"
    assert fingerprint(composed) == fingerprint(decomposed)
    assert fingerprint(IntentDataset.from_pairs([("Café au lait", "order")])) != fingerprint(composed)


def test_every_content_change_changes_it() -> None:
    reference = fingerprint(BASE)
    relabelled = IntentDataset.from_pairs([*PAIRS[:2], ("hello", "goodbye")])
    edited = IntentDataset.from_pairs([*PAIRS[:2], ("hello!", "greet")])
    duplicated = IntentDataset.from_pairs([*PAIRS, PAIRS[0]])
    dropped = IntentDataset.from_pairs(PAIRS[:2])
    # A pair boundary cannot be faked by moving text between text and label.
    swapped = IntentDataset.from_pairs([*PAIRS[:2], ("hel", "lohello")])
    prints = {fingerprint(d) for d in (relabelled, edited, duplicated, dropped, swapped)}
    assert reference not in prints and len(prints) == 5


def test_split_fingerprint_depends_on_roles() -> None:
    a, b = IntentDataset.from_pairs(PAIRS[:2]), IntentDataset.from_pairs(PAIRS[2:])
    base = fingerprint_splits({"train": a, "test": b})
    assert fingerprint_splits({"test": b, "train": a}) == base  # key order does not matter
    assert fingerprint_splits({"train": b, "test": a}) != base  # moving data between splits does
    assert fingerprint_splits({"train": a, "test": b, "valid": None}) != base
    assert fingerprint_splits({"train": a, "test": b, "valid": IntentDataset([])}) != fingerprint_splits(
        {"train": a, "test": b, "valid": None}
    )


def test_real_data_fingerprint_is_stable(banking77_train) -> None:
    reversed_ds = IntentDataset(list(reversed(banking77_train.examples)))
    assert fingerprint(reversed_ds) == fingerprint(banking77_train)
    assert fingerprint(banking77_train.subset(range(len(banking77_train) - 1))) != fingerprint(
        banking77_train
    )
