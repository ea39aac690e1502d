"""The small typed objects the data stage hands to every later stage."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rationalign.errors import DataError

LABEL_SPACE_FILE = "label_space.json"


@dataclass(frozen=True)
class Example:
    """One labelled utterance. ``source``/``line`` say where it came from, for error messages."""

    text: str
    label: str
    source: str | None = None
    line: int | None = None


class LabelSpace:
    """An ordered list of label names with a name <-> id map. Saved next to every model."""

    def __init__(self, names: Iterable[str]):
        self.names: tuple[str, ...] = tuple(names)
        if len(set(self.names)) != len(self.names):
            raise DataError(f"label space has duplicate names: {sorted(self.names)}")
        self._ids = {name: i for i, name in enumerate(self.names)}

    @classmethod
    def from_labels(cls, labels: Iterable[str]) -> LabelSpace:
        """Sorted unique labels: the same set always gives the same ids."""
        return cls(sorted(set(labels)))

    def id(self, name: str) -> int:
        try:
            return self._ids[name]
        except KeyError:
            raise DataError(f"unknown label {name!r}; known labels: {len(self.names)}") from None

    def ids(self, names: Iterable[str]) -> list[int]:
        return [self.id(n) for n in names]

    def name(self, idx: int) -> str:
        return self.names[idx]

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelSpace) and other.names == self.names

    def __hash__(self) -> int:
        return hash(self.names)

    def __repr__(self) -> str:
        return f"LabelSpace({len(self)} labels)"

    def to_dict(self) -> dict:
        return {"labels": list(self.names)}

    @classmethod
    def from_dict(cls, d: dict) -> LabelSpace:
        return cls(d["labels"])

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / LABEL_SPACE_FILE
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> LabelSpace:
        path = Path(directory) / LABEL_SPACE_FILE
        if not path.is_file():
            raise DataError(f"{path}: no label space; fix: point at a folder saved by rationalign")
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


@dataclass
class IntentDataset:
    """A list of examples with a name (for example ``banking77/train``) and where it was read from."""

    examples: list[Example]
    name: str = "dataset"
    path: Path | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.examples]

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.examples]

    def label_ids(self, space: LabelSpace) -> list[int]:
        return space.ids(self.labels)

    def subset(self, indices: Sequence[int], name: str | None = None) -> IntentDataset:
        return IntentDataset(
            [self.examples[i] for i in indices], name or self.name, self.path, dict(self.meta)
        )

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]], name: str = "dataset") -> IntentDataset:
        return cls([Example(t, y) for t, y in pairs], name)
