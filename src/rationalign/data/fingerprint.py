"""Content fingerprints of datasets: a sha256 hex digest that changes only when the data changes.

The fingerprint is **order-insensitive**: it hashes the *sorted* multiset of normalised ``(text, label)``
pairs. The same data shuffled (or re-exported by a tool that reorders rows) is the same dataset, and
training results are keyed by it; an order-sensitive hash would invalidate caches and registry entries
for no reason. Duplicates still count (a multiset, not a set), since they change the training signal.

Normalisation: Unicode NFC, surrounding whitespace stripped, inner runs of whitespace collapsed to one
space; case is kept (it is content a cased model sees). Where the data came from (file name, line
numbers, dataset name) is not content and is not hashed.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Mapping

from rationalign.data.types import IntentDataset

# Bump when the scheme changes, so old and new fingerprints can never collide.
_SCHEME = b"rationalign-data-fingerprint-v1\n"


def normalise_text(text: str) -> str:
    """NFC, stripped, whitespace collapsed: the form in which texts are hashed."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def fingerprint(ds: IntentDataset) -> str:
    """sha256 hex of the sorted normalised ``(text, label)`` pairs of ``ds`` (see the module docstring)."""
    pairs = sorted((normalise_text(e.text), normalise_text(e.label)) for e in ds)
    digest = hashlib.sha256(_SCHEME)
    for text, label in pairs:
        # JSON-encode each pair on its own line: no separator inside a text can fake a pair boundary.
        digest.update(json.dumps([text, label], ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def fingerprint_splits(splits: Mapping[str, IntentDataset | None]) -> str:
    """sha256 hex over named splits: moving an example from train to test changes it; a missing split
    (``None``) differs from an empty one."""
    digest = hashlib.sha256(_SCHEME + b"splits\n")
    for name in sorted(splits):
        ds = splits[name]
        digest.update(f"{name}={fingerprint(ds) if ds is not None else 'none'}\n".encode())
    return digest.hexdigest()
