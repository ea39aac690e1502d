"""A transfer set: unlabelled in-domain utterances that the teacher labels for the student.

A few-shot student sees 5-10 utterances an intent; its teacher can say what it thinks of many more. Soft
labels on unlabelled text of the same domain carry the teacher's knowledge further than the labelled
examples alone (the "transfer set" of Hinton et al., 2015). The usual source is the training split read
without its labels, the same unlabelled text that few-shot methods such as CPFT pre-train on.

Every utterance of the labelled splits (train, valid, test) is removed from the transfer set: a test
utterance must never reach the student, not even unlabelled, and a training one is already there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rationalign.data.io import DataBundle, canonical_split, resolve_data, split_files
from rationalign.data.texts import load_texts
from rationalign.data.validate import normalise_for_match
from rationalign.errors import DataError, located


class TransferConfig(BaseModel):
    """Where the transfer set comes from; its rows train the KD term only (no gold label, no prior)."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(
        None,
        description="a .txt/.jsonl/.csv file, a folder of splits or a dataset name (default: data.path)",
    )
    split: str | None = Field(
        "train", description="split of a folder or dataset read for its texts only (labels are ignored)"
    )
    text_field: str = Field("text", description="JSON key / CSV column of the utterance")
    limit: int | None = Field(None, ge=1, description="keep a seeded random N of the texts")
    seed: int = Field(0, ge=0, description="seed of the limit's sample")
    store: str | None = Field(
        None,
        description="SQLite prior store that keeps the teacher's soft labels of the transfer texts, so the "
        "other seeds and variants read them (default: priors.store when set, else scored anew per run)",
    )


@dataclass
class TransferSet:
    texts: list[str]
    source: Path
    read: int  # texts in the source file
    removed_labelled: int  # dropped: also in train, valid or test
    removed_duplicates: int

    @property
    def fingerprint(self) -> str:
        """sha256 of the texts as the student sees them (the run registry's hash of this input)."""
        return hashlib.sha256("\n".join(self.texts).encode("utf-8")).hexdigest()

    def summary(self) -> dict:
        return {
            "source": str(self.source),
            "fingerprint": self.fingerprint,
            "texts": len(self.texts),
            "read": self.read,
            "removed_labelled": self.removed_labelled,
            "removed_duplicates": self.removed_duplicates,
        }


def _source_file(cfg: TransferConfig, data_path: str) -> Path:
    root = resolve_data(cfg.path or data_path)
    if root.is_file():
        return root
    found = split_files(root)
    if cfg.split is None or canonical_split(cfg.split) not in found:
        raise DataError(
            located(
                root,
                None,
                f"no transfer split {cfg.split!r} (found {', '.join(sorted(found)) or 'no data files'})",
                "set transfer.split to one of the splits found, or transfer.path to a file of texts",
            )
        )
    return found[canonical_split(cfg.split)]


def load_transfer_set(cfg: TransferConfig, bundle: DataBundle, data_path: str) -> TransferSet:
    """The transfer texts of ``cfg``, without any utterance of ``bundle``'s splits and without repeats."""
    source = _source_file(cfg, data_path)
    texts = load_texts(source, text_field=cfg.text_field)
    labelled = {
        normalise_for_match(t)
        for split in (bundle.train, bundle.valid, bundle.test)
        if split is not None
        for t in split.texts
    }
    kept: dict[str, str] = {}
    removed_labelled = 0
    for text in texts:
        key = normalise_for_match(text)
        if key in labelled:
            removed_labelled += 1
        elif key not in kept:
            kept[key] = text
    removed_duplicates = len(texts) - removed_labelled - len(kept)
    chosen = list(kept.values())
    if not chosen:
        raise DataError(
            located(
                source,
                None,
                f"all {len(texts)} transfer texts are already in the labelled splits",
                "point transfer at unlabelled text that is not the training data (or drop transfer)",
            )
        )
    if cfg.limit is not None and cfg.limit < len(chosen):
        picked = np.random.default_rng(cfg.seed).choice(len(chosen), size=cfg.limit, replace=False)
        chosen = [chosen[i] for i in sorted(picked)]
    return TransferSet(chosen, source, len(texts), removed_labelled, removed_duplicates)
