"""Every bad-input check of the data stage.

Each check raises :class:`~rationalign.errors.DataError` with ONE line, ``file:line: problem; fix: ...``
(built by :func:`~rationalign.errors.located`), so the CLI can print it and exit 2.

Two kinds of checks live here:

* line checks, called by the loader while it streams a file, so it stops at the first bad line:
  :func:`check_line_length`, :func:`decode_line`, :func:`parse_json_line`, :func:`csv_columns`,
  :func:`check_csv_row`, :func:`record_to_example`, :class:`LabelConflictGuard`;
* cross-file checks, run once every split is loaded: :func:`validate_splits` (labels of valid/test that
  train lacks are an error; texts shared between train and another split are a warning, because such
  leakage is common in public data and the user should know, not be blocked).

Label policy: labels are strings. JSON integer labels (``{"label": 3}``) are accepted and converted to
``"3"`` so that integer-labelled data works as users expect and matches the same file written as CSV
(where every cell is a string). Floats, booleans, lists, objects and ``null`` are rejected: ``1.0`` vs
``1`` or ``true`` as a class name is almost always a bug in the export, not an intent. Surrounding
whitespace is stripped from both text and label (``"card "`` and ``"card"`` are the same class).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rationalign.data.types import Example, IntentDataset
from rationalign.errors import DataError, located

UTF8_BOM = b"\xef\xbb\xbf"
_SHOWN_LABELS = 5  # how many offending label names an error message lists before "..."


@dataclass
class ValidationReport:
    """What cross-file validation found that is worth telling the user but not worth stopping for."""

    warnings: list[str] = field(default_factory=list)

    def extend(self, other: ValidationReport) -> ValidationReport:
        self.warnings.extend(other.warnings)
        return self


def normalise_for_match(text: str) -> str:
    """The key under which two texts count as "the same": NFC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def _short(text: str, limit: int = 60) -> str:
    one_line = " ".join(text.split())
    return repr(one_line if len(one_line) <= limit else one_line[: limit - 3] + "...")


def _where(ds: IntentDataset) -> str:
    return str(ds.path) if ds.path is not None else ds.name


# ---------------------------------------------------------------------------------------------- lines


def check_line_length(content: bytes, *, path: object, line: int, max_line_bytes: int, cut: bool) -> None:
    """Refuse a line longer than ``max_line_bytes`` (``cut``: the reader stopped before its end)."""
    if len(content) > max_line_bytes:
        size = f"at least {len(content)}" if cut else str(len(content))
        raise DataError(
            located(
                path,
                line,
                f"line is {size} bytes, longer than max_line_bytes={max_line_bytes}",
                "check that the file really is one record per line, or raise max_line_bytes",
            )
        )


def decode_line(content: bytes, *, path: object, line: int) -> str:
    """Decode one line as UTF-8, naming the line and byte of the first invalid byte."""
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = content[err.start]
        raise DataError(
            located(
                path,
                line,
                f"bytes are not UTF-8 (byte 0x{bad:02x} at byte {err.start + 1} of the line)",
                "re-save the file as UTF-8, e.g. iconv -f latin1 -t utf-8 in > out",
            )
        ) from None


def parse_json_line(text: str, *, path: object, line: int, fix: str | None = None) -> dict[str, Any]:
    """Parse one JSON-lines record; it must be a JSON object. ``fix`` replaces the advice written for
    labelled-data files (files the toolkit wrote itself want "regenerate it", not a JSON-lines lesson)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        stripped = text.strip()
        if fix is not None:
            advice = fix
        elif (line == 1 and stripped in ("[", "{")) or stripped.startswith("[{"):
            advice = (
                "write JSON lines, one complete object per line, not a JSON array or pretty-printed JSON "
                f"(e.g. {_jq_hint(path)})"
            )
        else:
            advice = 'make the line one complete JSON object, e.g. {"text": "...", "label": "..."}'
        raise DataError(
            located(path, line, f"malformed JSON ({err.msg} at column {err.colno})", advice)
        ) from None
    if not isinstance(value, dict):
        kind = _json_kind(value)
        if fix is not None:
            advice = fix
        else:
            advice = 'make each line one JSON object, e.g. {"text": "...", "label": "..."}'
            if isinstance(value, list):
                advice += f" (a JSON array file: {_jq_hint(path)})"
        raise DataError(located(path, line, f"line is a JSON {kind}, not an object", advice))
    return value


def _jq_hint(path: object) -> str:
    name = Path(str(path)).name
    return f"jq -c '.[]' {name} > {Path(name).stem}.jsonl"


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def csv_columns(
    header: Sequence[str], *, path: object, line: int, text_field: str, label_field: str
) -> tuple[int, int]:
    """Check a CSV header row and return the column indices of the text and label fields."""
    names = [h.strip() for h in header]
    shown = ", ".join(repr(n) for n in names) or "nothing"
    for wanted, option in ((text_field, "text_field"), (label_field, "label_field")):
        if wanted not in names:
            raise DataError(
                located(
                    path,
                    line,
                    f"header has no {wanted!r} column (found {shown})",
                    f"add a header row naming the columns, or set {option} to one of the columns found",
                )
            )
    duplicates = sorted({n for n in names if names.count(n) > 1 and n in (text_field, label_field)})
    if duplicates:
        raise DataError(
            located(path, line, f"header names column {duplicates[0]!r} twice", "give each column one name")
        )
    return names.index(text_field), names.index(label_field)


def check_csv_row(row: Sequence[str], *, n_columns: int, path: object, line: int) -> None:
    """A data row must have exactly as many fields as the header (an unquoted comma adds one)."""
    if len(row) != n_columns:
        raise DataError(
            located(
                path,
                line,
                f"row has {len(row)} fields but the header has {n_columns}",
                'quote fields that contain the delimiter or a newline, e.g. "hello, world",label',
            )
        )


# -------------------------------------------------------------------------------------------- records


def _clean_text(value: object, *, path: object, line: int, field_name: str) -> str:
    if not isinstance(value, str):
        raise DataError(
            located(
                path,
                line,
                f"text field {field_name!r} is a {_json_kind(value)}, not a string",
                "write the utterance as a JSON string",
            )
        )
    text = value.strip()
    if not text:
        raise DataError(
            located(
                path,
                line,
                f"text field {field_name!r} is empty",
                "remove the line or give it the utterance text",
            )
        )
    return text


def clean_label(value: object, *, path: object, line: int, field_name: str = "label") -> str:
    """Return the label as a stripped string: strings as is, JSON integers converted, the rest refused."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise DataError(
            located(
                path,
                line,
                f"label field {field_name!r} is a {_json_kind(value)} ({value!r}), not a string",
                'write labels as strings (e.g. "card_arrival") or integers',
            )
        )
    label = value.strip()
    if not label:
        raise DataError(
            located(
                path,
                line,
                f"label field {field_name!r} is empty",
                "give every example its label, or remove unlabelled lines",
            )
        )
    return label


def record_to_example(
    record: Mapping[str, Any],
    *,
    path: object,
    line: int,
    text_field: str = "text",
    label_field: str = "label",
) -> Example:
    """Turn one parsed record into an :class:`Example`, checking both fields."""
    for wanted, option in ((text_field, "text_field"), (label_field, "label_field")):
        if wanted not in record:
            found = ", ".join(repr(k) for k in record) or "no fields"
            raise DataError(
                located(
                    path,
                    line,
                    f"record has no {wanted!r} field (found {found})",
                    f"add the {wanted!r} field to every record, or set {option} to the field name used",
                )
            )
    text = _clean_text(record[text_field], path=path, line=line, field_name=text_field)
    label = clean_label(record[label_field], path=path, line=line, field_name=label_field)
    return Example(text=text, label=label, source=str(path), line=line)


class LabelConflictGuard:
    """Streams examples of ONE file and stops at the first text already seen with another label.

    Texts are compared after :func:`normalise_for_match` (case and whitespace do not make an utterance
    different). Exact duplicates with the same label are allowed: public data sets contain a few.
    """

    def __init__(self, path: object):
        self.path = path
        self._first: dict[str, Example] = {}

    def add(self, example: Example) -> None:
        key = normalise_for_match(example.text)
        earlier = self._first.setdefault(key, example)
        if earlier.label != example.label:
            raise DataError(
                located(
                    self.path,
                    example.line,
                    f"text {_short(example.text)} is labelled {example.label!r} here "
                    f"but {earlier.label!r} on line {earlier.line}",
                    f"keep one label for this text (edit line {example.line} or line {earlier.line})",
                )
            )


def check_label_conflicts(ds: IntentDataset) -> None:
    """Run :class:`LabelConflictGuard` over a dataset that was not built by the loader."""
    guard = LabelConflictGuard(_where(ds))
    for position, example in enumerate(ds, start=1):
        # Examples built in memory have no line: their 1-based position stands in for it.
        guard.add(example if example.line is not None else replace(example, line=position))


def check_not_empty(n_examples: int, *, path: object, n_lines: int) -> None:
    if n_examples == 0:
        problem = "file is empty" if n_lines == 0 else f"no examples in {n_lines} lines"
        raise DataError(located(path, 1, problem, "give the file at least one example per label"))


# ------------------------------------------------------------------------------------------ cross-file


def validate_splits(
    train: IntentDataset,
    others: Mapping[str, IntentDataset | None] | Iterable[IntentDataset],
    *,
    unseen_labels_ok: Iterable[str] = (),
) -> ValidationReport:
    """Check the other splits (valid, test, ...) against train.

    Raises :class:`DataError` when a split uses labels train lacks (the model could never predict them),
    naming the file, the first line with such a label, the label and how many such labels there are;
    ``unseen_labels_ok`` names labels allowed anyway (``oos`` for out-of-scope test sets).
    Returns a :class:`ValidationReport` warning about texts shared with train (leakage).
    """
    splits: list[tuple[str, IntentDataset]]
    if isinstance(others, Mapping):
        splits = [(name, ds) for name, ds in others.items() if ds is not None]
    else:
        splits = [(ds.name, ds) for ds in others]
    known = set(train.labels) | set(unseen_labels_ok)
    for _, ds in splits:
        _check_labels_known(ds, known, train)

    report = ValidationReport()
    train_lines: dict[str, Example] = {}
    for example in train:
        train_lines.setdefault(normalise_for_match(example.text), example)
    for name, ds in splits:
        shared = [e for e in ds if normalise_for_match(e.text) in train_lines]
        if shared:
            first = shared[0]
            twin = train_lines[normalise_for_match(first.text)]
            report.warnings.append(
                located(
                    _where(ds),
                    first.line,
                    f"{len(shared)} of {len(ds)} texts of {name} also appear in train "
                    f"(first {_short(first.text)}, train line {twin.line})",
                    "scores on them measure memorisation; drop them from one side for a clean estimate",
                )
            )
    return report


def _check_labels_known(ds: IntentDataset, known: set[str], train: IntentDataset) -> None:
    unseen: dict[str, Example] = {}
    for example in ds:
        if example.label not in known:
            unseen.setdefault(example.label, example)
    if not unseen:
        return
    first = next(iter(unseen.values()))
    names = list(unseen)
    listed = ", ".join(repr(n) for n in names[:_SHOWN_LABELS]) + (
        ", ..." if len(names) > _SHOWN_LABELS else ""
    )
    raise DataError(
        located(
            _where(ds),
            first.line,
            f"label {first.label!r} is not in the training labels ({_where(train)}); "
            f"{len(names)} label(s) of this file are missing from train: {listed}",
            "add examples of these labels to train, or remove them from this file",
        )
    )
