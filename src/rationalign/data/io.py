"""Reading intent data: JSON-lines and CSV/TSV files, split folders, dataset names, and data configs.

Files are streamed as bytes, one line at a time with a size cap, and decoded per line, so a huge or
binary file fails on its first bad line with ``file:line: problem; fix: ...`` instead of being read
whole. Every :class:`Example` records its source file and 1-based line (for CSV, the line where the
record starts; a quoted field may span lines).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rationalign.data import validate
from rationalign.data.fewshot import sample_k_shot, stratified_split
from rationalign.data.fingerprint import fingerprint_splits
from rationalign.data.types import Example, IntentDataset, LabelSpace
from rationalign.errors import DataError, located

DEFAULT_MAX_LINE_BYTES = 100_000
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}
DATA_SUFFIXES = (*JSONL_SUFFIXES, *CSV_DELIMITERS)
DATASET_NAMES = ("banking77", "clinc150", "hwu64")
DATASET_ALIASES = {"banking": "banking77", "clinc": "clinc150", "clinc_oos": "clinc150", "hwu": "hwu64"}
SPLIT_ALIASES = {"validation": "valid", "dev": "valid", "val": "valid"}
DATA_DIR_ENV = "RATIONALIGN_DATA_DIR"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SUFFIX_FIX = "use .jsonl / .json (JSON lines), .csv or .tsv"


# ----------------------------------------------------------------------------------------- one file


def _iter_lines(path: Path, max_line_bytes: int, *, shown: Path | None = None) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` without line terminators; refuses over-long and non-UTF-8 lines.
    Errors name ``shown`` (default ``path``)."""
    shown = shown or path
    with path.open("rb") as handle:
        number = 0
        while True:
            # Read at most max+2 bytes (room for "\r\n"): an over-long line is never read whole.
            raw = handle.readline(max_line_bytes + 2)
            if not raw:
                return
            number += 1
            cut = not raw.endswith(b"\n") and len(raw) == max_line_bytes + 2
            content = raw.rstrip(b"\r\n")
            if number == 1 and content.startswith(validate.UTF8_BOM):
                content = content[len(validate.UTF8_BOM) :]
            validate.check_line_length(
                content, path=shown, line=number, max_line_bytes=max_line_bytes, cut=cut
            )
            yield number, validate.decode_line(content, path=shown, line=number)


def iter_json_objects(
    path: str | Path,
    *,
    fix: str | None = None,
    max_line_bytes: int = 10 * DEFAULT_MAX_LINE_BYTES,
    origin: str | Path | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of every non-blank line of a JSON-lines file the toolkit wrote (an attack
    set, a divergence queue, attributions, an export of priors). A line that is not UTF-8, too long, not
    JSON or not an object raises ``DataError`` naming the file and line, with ``fix`` as the advice
    (default: the advice for labelled-data files).
    ``origin`` is the file errors name when ``path`` is a temporary copy of it (an export of a store)."""
    path = Path(path)
    shown = Path(origin) if origin is not None else path
    for number, text in _iter_lines(path, max_line_bytes, shown=shown):
        if text.strip():
            yield number, validate.parse_json_line(text, path=shown, line=number, fix=fix)


def _read_jsonl(
    path: Path, text_field: str, label_field: str, max_line_bytes: int
) -> tuple[list[Example], int]:
    examples: list[Example] = []
    guard = validate.LabelConflictGuard(path)
    n_lines = 0
    for n_lines, text in _iter_lines(path, max_line_bytes):
        if not text.strip():
            continue  # blank lines still count in n_lines ("no examples in N lines")
        record = validate.parse_json_line(text, path=path, line=n_lines)
        example = validate.record_to_example(
            record, path=path, line=n_lines, text_field=text_field, label_field=label_field
        )
        guard.add(example)
        examples.append(example)
    return examples, n_lines


def _read_csv(
    path: Path, delimiter: str, text_field: str, label_field: str, max_line_bytes: int
) -> tuple[list[Example], int]:
    # The csv module sees one physical line per item (newline restored), so reader.line_num is the
    # physical line a record ends on and the record starts one line after the previous one ended.
    lines = (text + "\n" for _, text in _iter_lines(path, max_line_bytes))
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    examples: list[Example] = []
    guard = validate.LabelConflictGuard(path)
    columns: tuple[int, int] | None = None
    n_columns = 0
    previous_end = 0
    while True:
        start = previous_end + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise DataError(
                located(
                    path,
                    start,
                    f"malformed CSV in the record starting on this line ({err})",
                    'close every quoted field and double any quote inside one ("" for ")',
                )
            ) from None
        previous_end = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if columns is None:
            columns = validate.csv_columns(
                row, path=path, line=start, text_field=text_field, label_field=label_field
            )
            n_columns = len(row)
            continue
        validate.check_csv_row(row, n_columns=n_columns, path=path, line=start)
        text_col, label_col = columns
        record = {text_field: row[text_col], label_field: row[label_col]}
        example = validate.record_to_example(
            record, path=path, line=start, text_field=text_field, label_field=label_field
        )
        guard.add(example)
        examples.append(example)
    return examples, previous_end


def load_dataset(
    path: str | Path,
    *,
    text_field: str = "text",
    label_field: str = "label",
    name: str | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> IntentDataset:
    """Load one JSON-lines (``.jsonl``/``.json``/``.ndjson``) or CSV/TSV (``.csv``/``.tsv``) file.

    JSON lines: one object per line, blank lines skipped. CSV: a header row naming the columns, parsed
    by the csv module (quoted delimiters and newlines work). Stops with a one-line :class:`DataError`
    at the first bad line; see :mod:`rationalign.data.validate` for every check.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if p.is_dir():
        raise DataError(
            located(p, None, "is a folder, not a data file", "use load_splits for a folder of splits")
        )
    if not p.is_file():
        raise DataError(located(p, None, "no such file", "check the path, or give a dataset name"))
    if suffix not in DATA_SUFFIXES:
        raise DataError(located(p, None, f"unsupported file type {suffix or '(no suffix)'!r}", _SUFFIX_FIX))
    if suffix in CSV_DELIMITERS:
        examples, n_lines = _read_csv(p, CSV_DELIMITERS[suffix], text_field, label_field, max_line_bytes)
    else:
        examples, n_lines = _read_jsonl(p, text_field, label_field, max_line_bytes)
    validate.check_not_empty(len(examples), path=p, n_lines=n_lines)
    default_name = f"{p.parent.name}/{p.stem}" if p.parent.name else p.stem
    return IntentDataset(examples, name=name or default_name, path=p)


# --------------------------------------------------------------------------------------- split folders


def canonical_split(name: str) -> str:
    """``validation``/``dev``/``val`` -> ``valid``; other names unchanged."""
    return SPLIT_ALIASES.get(name.lower(), name)


def split_files(folder: str | Path) -> dict[str, Path]:
    """Data files of a folder keyed by split name (file stem, with validation/dev read as valid)."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(
            located(root, None, "no such folder", "give a folder holding train.jsonl / train.csv")
        )
    found: dict[str, Path] = {}
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in DATA_SUFFIXES:
            continue
        key = canonical_split(path.stem)
        if key in found:
            raise DataError(
                located(
                    path,
                    None,
                    f"split {key!r} is given twice ({found[key].name} and {path.name})",
                    "keep one file per split",
                )
            )
        found[key] = path
    return found


def load_splits(
    folder: str | Path,
    *,
    text_field: str = "text",
    label_field: str = "label",
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> dict[str, IntentDataset]:
    """Load every data file of a folder, keyed by split: ``train`` (required), ``valid``, ``test``, then
    the others (``train_10``, ``oos_test``, ...) in name order. Cross-file checks are
    :func:`~rationalign.data.validate.validate_splits`'s job."""
    root = Path(folder)
    files = split_files(root)
    if "train" not in files:
        found = ", ".join(sorted(files)) or "no data files"
        raise DataError(
            located(root, None, f"no train split (found {found})", "add train.jsonl or train.csv")
        )
    order = sorted(files, key=lambda key: ({"train": 0, "valid": 1, "test": 2}.get(key, 3), key))
    return {
        key: load_dataset(
            files[key],
            text_field=text_field,
            label_field=label_field,
            name=f"{root.name}/{key}",
            max_line_bytes=max_line_bytes,
        )
        for key in order
    }


# ------------------------------------------------------------------------------------------ dataset names


def dataset_roots() -> list[Path]:
    """Folders searched for dataset names: ``$RATIONALIGN_DATA_DIR`` (may list several, os.pathsep), then
    the nearest ``shared/datasets`` walking up from the current folder, then from this package."""
    roots: list[Path] = [
        Path(p).expanduser() for p in os.environ.get(DATA_DIR_ENV, "").split(os.pathsep) if p
    ]
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            candidate = folder / "shared" / "datasets"
            if candidate.is_dir():
                roots.append(candidate)
                break
    unique: list[Path] = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return unique


def resolve_data(spec: str | Path) -> Path:
    """A local file or folder as given, else a dataset name (``banking77``; ``banking77/train_10`` names
    one split file) looked up in :func:`dataset_roots`."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    name, _, split = str(spec).strip().partition("/")
    name = DATASET_ALIASES.get(name.lower(), name)
    roots = dataset_roots()
    looks_like_name = _NAME.fullmatch(name) is not None and (not split or _NAME.fullmatch(split) is not None)
    for root in roots if looks_like_name else []:
        for candidate in (root / name, root / name.lower()):
            if not candidate.is_dir():
                continue
            if not split:
                return candidate
            split_file = split_files(candidate).get(canonical_split(split))
            if split_file is not None:
                return split_file
    searched = ", ".join(str(r) for r in roots) or "nothing"
    raise DataError(
        located(
            spec,
            None,
            "no such file, folder or dataset",
            f"give a path to a .jsonl/.csv file or a folder of splits, or a dataset name "
            f"({', '.join(DATASET_NAMES)}) under ${DATA_DIR_ENV}/<name> or shared/datasets/<name> "
            f"(searched: {searched})",
        )
    )


# ------------------------------------------------------------------------------------------ data configs


class DataConfig(BaseModel):
    """Which data to train and evaluate on. ``path``: a file (train only), a folder of splits, or a
    dataset name. A split set to ``None`` is not read; a missing ``valid`` is carved from train."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="a JSONL/CSV file, a folder of split files, or a dataset name (banking77, ...)"
    )
    train_split: str = Field("train", description="split file stem for training, e.g. train or train_10")
    valid_split: str | None = Field(
        "valid", description="validation split (null: carve valid_fraction of train)"
    )
    test_split: str | None = Field("test", description="test split (null: none)")
    text_field: str = Field("text", description="JSON key / CSV column of the utterance")
    label_field: str = Field("label", description="JSON key / CSV column of the intent")
    k_shot: int | None = Field(
        default=None, ge=1, description="sample k examples per label from train (seeded)"
    )
    seed: int = Field(
        default=0, ge=0, description="seed of k-shot sampling and of carving a validation split"
    )
    valid_fraction: float = Field(
        default=0.1, gt=0.0, lt=1.0, description="share of train carved off when there is no valid split"
    )


@dataclass
class DataBundle:
    """The loaded, validated data of one run. ``fingerprint`` covers train, valid and test as used
    (after k-shot sampling and any carved validation split)."""

    train: IntentDataset
    valid: IntentDataset | None
    test: IntentDataset | None
    label_space: LabelSpace
    report: validate.ValidationReport
    fingerprint: str
    notes: list[str] = field(default_factory=list)
    root: Path | None = None


def _optional_split(
    files: dict[str, Path], wanted: str | None, default: str, root: Path, cfg: DataConfig
) -> IntentDataset | None:
    """Load a valid/test split; a missing default split is None, a missing named split is an error."""
    if wanted is None:
        return None
    path = files.get(canonical_split(wanted))
    if path is None:
        if canonical_split(wanted) == default:
            return None
        found = ", ".join(sorted(files))
        raise DataError(located(root, None, f"no {wanted!r} split (found {found})", "name an existing split"))
    return load_dataset(
        path,
        text_field=cfg.text_field,
        label_field=cfg.label_field,
        name=f"{root.name}/{canonical_split(wanted)}",
    )


def load_data(cfg: DataConfig) -> DataBundle:
    """Resolve, load and validate the data a config names; see :class:`DataConfig`.

    Order: load splits; if there is no valid split, hold out ``valid_fraction`` of every label of train
    (seeded); then sample ``k_shot`` per label from what is left of train; then cross-check the splits.
    """
    root = resolve_data(cfg.path)
    notes: list[str] = []
    fields = {"text_field": cfg.text_field, "label_field": cfg.label_field}
    if root.is_file():
        train = load_dataset(root, **fields)
        valid = test = None
        notes.append(f"{root} is a single file: it is the train split; there is no test split")
    else:
        files = split_files(root)
        train_path = files.get(canonical_split(cfg.train_split))
        if train_path is None:
            found = ", ".join(sorted(files)) or "no data files"
            raise DataError(
                located(
                    root,
                    None,
                    f"no {cfg.train_split!r} split (found {found})",
                    "set train_split to one of the splits found",
                )
            )
        train = load_dataset(train_path, name=f"{root.name}/{cfg.train_split}", **fields)
        valid = _optional_split(files, cfg.valid_split, "valid", root, cfg)
        test = _optional_split(files, cfg.test_split, "test", root, cfg)
        if test is None:
            notes.append(f"no test split in {root}")
    if valid is None:
        train, held_out = stratified_split(train, cfg.valid_fraction, cfg.seed)
        if len(held_out):
            valid = held_out
            notes.append(
                f"no valid split: held out {len(valid)} examples of train as valid "
                f"({cfg.valid_fraction:.0%} of every label, seed {cfg.seed})"
            )
        else:
            notes.append("no valid split, and train has too few examples per label to hold some out")
    if cfg.k_shot is not None:
        train = sample_k_shot(train, cfg.k_shot, cfg.seed)
        notes.append(
            f"train sampled to {cfg.k_shot} examples per label (seed {cfg.seed}): {len(train)} examples"
        )
    report = validate.validate_splits(train, {"valid": valid, "test": test})
    return DataBundle(
        train=train,
        valid=valid,
        test=test,
        label_space=LabelSpace.from_labels(train.labels),
        report=report,
        fingerprint=fingerprint_splits({"train": train, "valid": valid, "test": test}),
        notes=notes,
        root=root,
    )
