"""The data stage: load, validate, sample and fingerprint intent-classification data."""

from rationalign.data.fewshot import sample_k_shot, stratified_split
from rationalign.data.fingerprint import fingerprint, fingerprint_splits, normalise_text
from rationalign.data.io import (
    DataBundle,
    DataConfig,
    dataset_roots,
    load_data,
    load_dataset,
    load_splits,
    resolve_data,
    split_files,
)
from rationalign.data.types import Example, IntentDataset, LabelSpace
from rationalign.data.validate import ValidationReport, check_label_conflicts, validate_splits

__all__ = [
    "DataBundle",
    "DataConfig",
    "Example",
    "IntentDataset",
    "LabelSpace",
    "ValidationReport",
    "check_label_conflicts",
    "dataset_roots",
    "fingerprint",
    "fingerprint_splits",
    "load_data",
    "load_dataset",
    "load_splits",
    "normalise_text",
    "resolve_data",
    "sample_k_shot",
    "split_files",
    "stratified_split",
    "validate_splits",
]
