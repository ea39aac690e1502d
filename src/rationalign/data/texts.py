"""Unlabelled texts for prediction: a .txt file (one text a line) or a .jsonl/.csv/.tsv text field."""

from __future__ import annotations

import csv
from pathlib import Path

from rationalign.data.io import (
    CSV_DELIMITERS,
    DEFAULT_MAX_LINE_BYTES,
    JSONL_SUFFIXES,
    _iter_lines,
    iter_json_objects,
)
from rationalign.errors import DataError, located


def load_texts(
    path: str | Path, *, text_field: str = "text", max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(located(path, None, "file not found", "pass an existing .txt, .jsonl or .csv file"))
    suffix = path.suffix.lower()
    texts: list[str] = []
    if suffix in JSONL_SUFFIXES:
        for number, record in iter_json_objects(path, max_line_bytes=max_line_bytes):
            value = record.get(text_field)
            if not isinstance(value, str) or not value.strip():
                raise DataError(
                    located(
                        path,
                        number,
                        f"no non-empty string field {text_field!r}",
                        f"add {text_field!r} or pass --text-field",
                    )
                )
            texts.append(value.strip())
    elif suffix in CSV_DELIMITERS:
        lines = [line for _, line in _iter_lines(path, max_line_bytes)]
        reader = csv.DictReader(lines, delimiter=CSV_DELIMITERS[suffix])
        if reader.fieldnames is None or text_field not in reader.fieldnames:
            raise DataError(
                located(path, 1, f"no column {text_field!r} in the header", "add it or pass --text-field")
            )
        for row in reader:
            value = (row.get(text_field) or "").strip()
            if not value:
                raise DataError(
                    located(path, reader.line_num, f"empty {text_field!r}", "remove the row or fill it")
                )
            texts.append(value)
    else:
        texts = [line.strip() for _, line in _iter_lines(path, max_line_bytes) if line.strip()]
    if not texts:
        raise DataError(located(path, None, "no texts", "put one text per line"))
    return texts
