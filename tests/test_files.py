import json
from pathlib import Path

import numpy as np
import pytest

from rationalign.files import atomic_write_text, atomic_writer, json_default


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path):
    target = tmp_path / "sub" / "out.jsonl"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError), atomic_writer(target) as out:
        out.write("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in target.parent.iterdir()] == ["out.jsonl"]


def test_json_default_handles_numpy_and_paths():
    text = json.dumps(
        {"a": np.int64(3), "b": np.float32(0.5), "c": np.arange(2), "d": Path("x")}, default=json_default
    )
    assert json.loads(text) == {"a": 3, "b": 0.5, "c": [0, 1], "d": "x"}
    with pytest.raises(TypeError, match="set"):
        json.dumps({1, 2}, default=json_default)
