"""Fixtures of the data-stage tests: writing small files, and the real datasets loaded once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rationalign.data import IntentDataset, load_dataset, resolve_data
from rationalign.errors import DataError

WriteData = Callable[[str, str | bytes], Path]


@pytest.fixture
def write_data(tmp_path: Path) -> WriteData:
    """``write_data("name.jsonl", content)`` writes text (UTF-8, exactly as given) or bytes under tmp_path."""

    def write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    return write


def _assert_located(err: DataError, path: Path | str, line: int | None) -> str:
    message = str(err)
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert message.startswith(where), f"expected it to start with {where!r}: {message!r}"
    assert "; fix: " in message, message
    assert len(message.split("; fix: ", 1)[1].strip()) > 5, message
    assert "\n" not in message and "\r" not in message, message
    return message


@pytest.fixture
def assert_located() -> Callable[[DataError, Path | str, int | None], str]:
    """``assert_located(err, path, line)``: the message is ONE line ``<path>:<line>: problem; fix: ...``
    (``line=None``: ``<path>: ...``); returns the message for further checks."""
    return _assert_located


@pytest.fixture(scope="session")
def banking77_dir() -> Path:
    return resolve_data("banking77")


@pytest.fixture(scope="session")
def banking77_train(banking77_dir: Path) -> IntentDataset:
    return load_dataset(banking77_dir / "train.jsonl")
