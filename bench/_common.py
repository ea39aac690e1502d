"""Helpers shared by every benchmark script in ``bench/``.

A benchmark writes ``bench/results/<name>.json``: a list of result rows (see :class:`Row`). Re-running a
benchmark for a subset of datasets or settings merges into that file, replacing only the rows it
recomputed, so partial re-runs update the results instead of wiping them.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from rationalign.errors import DataError, located

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
CACHE_DIR = BENCH_DIR / ".cache"

# The identity of a result: a re-run replaces the row with the same key.
ROW_KEY = ("dataset", "setting", "method", "metric")


@dataclass
class Row:
    """One measured number, with everything needed to reproduce and judge it."""

    dataset: str
    setting: str
    method: str
    metric: str
    value: float
    std: float
    n_seeds: int
    command: str
    date: str  # ISO date (YYYY-MM-DD) of the run
    machine: str

    def key(self) -> tuple[str, str, str, str]:
        return (self.dataset, self.setting, self.method, self.metric)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gib() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20)
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info() -> str:
    """One line describing where a number was measured, e.g. ``2-core x86_64 CPU (AMD EPYC), 23 GiB, ...``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 0
    parts = [f"{cores}-core {platform.machine()} CPU ({_cpu_model()})"]
    memory = _memory_gib()
    if memory is not None:
        parts.append(f"{memory} GiB")
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
        threads = torch.get_num_threads()
        parts.append(f"{threads} thread" + ("s" if threads != 1 else ""))
    except ImportError:
        parts.append("no torch")
    return ", ".join(parts)


def matmul_peak_gflops(size: int = 2048, repeats: int = 5, dtype: str = "float32") -> float:
    """Matmul rate (GFLOP/s) at torch's current thread count: the ceiling to compare hot loops with.
    ``dtype="bfloat16"``: bfloat16 inputs (what autocast feeds the matrix products)."""
    import time

    import torch

    kind = getattr(torch, dtype)
    a, b = torch.randn(size, size, dtype=kind), torch.randn(size, size, dtype=kind)
    for _ in range(2):  # warm up: first calls pay for allocation and kernel selection
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2.0 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that was run, as a shell line relative to the repository root."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    try:
        script_text = str(script.relative_to(REPO_ROOT))
    except ValueError:
        script_text = argv[0]
    return shlex.join([".venv/bin/python", script_text, *argv[1:]])


def datasets_root() -> Path:
    """``$RATIONALIGN_DATA_DIR`` if set, else the shared data sets next to the repository."""
    env = os.environ.get("RATIONALIGN_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "shared" / "datasets"


def _read_jsonl_plain(path: Path) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    labels: list[str] = []
    with path.open(encoding="utf-8") as src:
        for number, line in enumerate(src, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise DataError(
                    located(path, number, "not valid JSON", "write one JSON object per line")
                ) from None
            if not isinstance(record, dict):
                raise DataError(
                    located(path, number, "not a JSON object", 'write {"text": ..., "label": ...}')
                )
            text, label = record.get("text"), record.get("label")
            if not isinstance(text, str) or not text.strip():
                raise DataError(
                    located(path, number, "missing or empty 'text'", "give every line a text string")
                )
            if not isinstance(label, str | int) or isinstance(label, bool) or str(label) == "":
                raise DataError(located(path, number, "missing or empty 'label'", "give every line a label"))
            texts.append(text)
            labels.append(str(label))
    if not texts:
        raise DataError(located(path, None, "no examples", "point at a non-empty JSONL file"))
    return texts, labels


def load_jsonl(path: str | Path) -> tuple[list[str], list[str]]:
    """Read a ``{"text", "label"}`` JSONL file into parallel lists of texts and labels.

    Uses the package's own loader (``rationalign.data.io.load_dataset``) when it is available, so benchmarks
    read data exactly as the library does; falls back to a plain reader with the same error messages.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            located(
                path,
                None,
                "no such data file",
                f"check the name or set RATIONALIGN_DATA_DIR ({datasets_root()})",
            )
        )
    try:
        from rationalign.data.io import load_dataset
    except ImportError:  # the data stage is not written yet in this checkout
        return _read_jsonl_plain(path)
    dataset = load_dataset(path)
    return list(dataset.texts), list(dataset.labels)


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    from rationalign.files import atomic_write_text as write

    write(path, text)


def results_path(name: str) -> Path:
    return RESULTS_DIR / f"{name}.json"


def read_results(name: str) -> list[dict]:
    """The rows already in ``bench/results/<name>.json`` (empty if the file does not exist)."""
    path = results_path(name)
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(
            located(path, err.lineno, "not valid JSON", "delete it and re-run the benchmark")
        ) from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError(
            located(path, None, "not a list of result rows", "delete it and re-run the benchmark")
        )
    return rows


def write_results(name: str, rows: Iterable[Row | dict]) -> Path:
    """Merge ``rows`` into ``bench/results/<name>.json`` atomically and return its path.

    Existing rows with the same (dataset, setting, method, metric) are replaced in place; other rows are
    kept, and new keys are appended, so the file's order stays stable across partial re-runs.
    """
    names = [f.name for f in fields(Row)]
    merged: dict[tuple, dict] = {}
    for old in read_results(name):
        merged[tuple(old.get(k) for k in ROW_KEY)] = old
    for row in rows:
        record = asdict(row) if isinstance(row, Row) else dict(row)
        missing = [n for n in names if n not in record]
        if missing:
            raise ValueError(f"result row lacks {missing}: {record}")
        merged[tuple(record[k] for k in ROW_KEY)] = {n: record[n] for n in names}
    path = results_path(name)
    atomic_write_text(path, json.dumps(list(merged.values()), indent=1) + "\n")
    return path


def format_cell(value: float, std: float, n_seeds: int, digits: int) -> str:
    """``mean ± std`` for a multi-seed row, the value alone for one seed."""
    if n_seeds > 1:
        return f"{value:.{digits}f} ± {std:.{digits}f}"
    return f"{value:.{digits}f}"


def markdown_table(
    rows: Iterable[Row | dict],
    metric: str,
    *,
    columns: Sequence[str] | None = None,
    row_fields: Sequence[str] = ("method", "setting"),
    column_field: str = "dataset",
    row_order: Sequence[tuple] | None = None,
    digits: int = 2,
) -> str:
    """Render the rows of one ``metric`` as a GitHub markdown table.

    Table rows are the distinct values of ``row_fields`` (default method x setting), columns the values of
    ``column_field`` (default dataset). Multi-seed cells read ``mean ± std``; missing cells read ``-``.
    """
    records = [asdict(r) if isinstance(r, Row) else dict(r) for r in rows]
    records = [r for r in records if r["metric"] == metric]
    if columns is None:
        columns = list(dict.fromkeys(r[column_field] for r in records))
    cells: dict[tuple, dict[str, str]] = {}
    for r in records:
        key = tuple(r[f] for f in row_fields)
        cells.setdefault(key, {})[r[column_field]] = format_cell(r["value"], r["std"], r["n_seeds"], digits)
    keys = list(row_order) if row_order is not None else list(cells)
    lines = [
        "| " + " | ".join([*row_fields, *columns]) + " |",
        "|" + "---|" * len(row_fields) + "---:|" * len(columns),
    ]
    for key in keys:
        values = cells.get(tuple(key), {})
        lines.append("| " + " | ".join([*map(str, key), *(values.get(c, "-") for c in columns)]) + " |")
    return "\n".join(lines) + "\n"
