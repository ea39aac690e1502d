from pathlib import Path

import pytest

from rationalign.errors import ModelError
from rationalign.models.resolver import canonical_name, resolve_model, weights_hash


def test_shipped_student_resolves_to_a_hf_folder():
    folder = resolve_model("minilm-l6")
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == folder


def test_aliases():
    assert canonical_name("All-MPNet-Base-v2") == "mpnet-base"
    assert canonical_name("smollm2") == "smollm2-135m"
    assert canonical_name("bert-base-uncased") is None


def test_unknown_name_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ModelError, match="not a local folder nor a shipped model; fix"):
        resolve_model("bert-base-uncased")
    with pytest.raises(ModelError, match=r"no config\.json"):
        resolve_model(tmp_path)


def test_weights_hash_changes_with_content(tmp_path: Path):
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    first = weights_hash(tmp_path)
    assert first == weights_hash(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"abd")
    assert weights_hash(tmp_path) != first
