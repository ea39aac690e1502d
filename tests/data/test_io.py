"""Loading files, split folders, dataset names and data configs; the real datasets load as documented."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pydantic
import pytest

from rationalign.data import (
    DataConfig,
    fingerprint_splits,
    load_data,
    load_dataset,
    load_splits,
    resolve_data,
)
from rationalign.data.io import DATA_DIR_ENV
from rationalign.errors import DataError


def _jsonl(pairs: list[tuple[str, str]]) -> str:
    return "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in pairs)


PAIRS = [(f"utterance {i} about {y}", y) for y in ("alpha", "beta", "gamma") for i in range(20)]


# ------------------------------------------------------------------------------------------ real data


def test_banking77_train_loads_with_sources_and_lines(banking77_train, banking77_dir) -> None:
    assert len(banking77_train) == 8622
    assert len(set(banking77_train.labels)) == 77
    assert banking77_train.name == "banking77/train"
    first, last = banking77_train[0], banking77_train[-1]
    assert (first.text, first.label) == ("i am still waiting on my card?", "card_arrival")
    assert first.source == str(banking77_dir / "train.jsonl") and first.line == 1
    assert last.line == 8622


def test_banking77_train_10_has_ten_per_label(banking77_dir) -> None:
    ds = load_dataset(banking77_dir / "train_10.jsonl")
    assert len(ds) == 770
    assert set(Counter(ds.labels).values()) == {10}


def test_clinc150_splits_and_oos() -> None:
    splits = load_splits(resolve_data("clinc150"))
    assert list(splits)[:3] == ["train", "valid", "test"]
    assert {"oos_test", "oos_train", "oos_valid", "train_5", "train_10"} <= set(splits)
    assert len(set(splits["train"].labels)) == 150
    assert len(splits["train"]) == 15000
    oos = splits["oos_test"]
    assert len(oos) == 1000 and set(oos.labels) == {"oos"}
    assert oos.name == "clinc150/oos_test"


def test_hwu64_loads_by_name() -> None:
    bundle = load_data(DataConfig(path="hwu64"))
    assert len(bundle.label_space) == 64
    assert (len(bundle.train), len(bundle.valid), len(bundle.test)) == (8954, 1076, 1076)


# ------------------------------------------------------------------------------------------ formats


def test_csv_quoted_commas_and_newlines_record_start_lines(write_data) -> None:
    content = (
        "\ufeffid,text,label\r\n"  # Excel-style BOM and CRLF
        '1,"hello, world",greet\r\n'
        '2,"a text\r\nover two lines",multi\r\n'
        "\r\n"
        '3,"she said ""hi""",greet\r\n'
    )
    path = write_data("quoted.csv", content)
    ds = load_dataset(path)
    assert [(e.text, e.label, e.line) for e in ds] == [
        ("hello, world", "greet", 2),
        ("a text\nover two lines", "multi", 3),
        ('she said "hi"', "greet", 6),
    ]
    assert all(e.source == str(path) for e in ds)


def test_tsv_and_custom_field_names(write_data) -> None:
    tsv = load_dataset(
        write_data("d.tsv", "intent\tsentence\ngreet\thi, there\n"),
        text_field="sentence",
        label_field="intent",
    )
    assert [(e.text, e.label) for e in tsv] == [("hi, there", "greet")]
    jsonl = load_dataset(
        write_data("d.jsonl", '{"q": "hi", "y": 1}\n\n{"q": "bye", "y": 2}\n'),
        text_field="q",
        label_field="y",
        name="mine",
    )
    assert [(e.text, e.label, e.line) for e in jsonl] == [("hi", "1", 1), ("bye", "2", 3)]
    assert jsonl.name == "mine"


def test_json_suffix_is_read_as_json_lines(write_data) -> None:
    ds = load_dataset(write_data("folder/x.json", _jsonl(PAIRS[:3])))
    assert ds.texts == [t for t, _ in PAIRS[:3]]
    assert ds.name == "folder/x"


# ------------------------------------------------------------------------------------------ folders


def test_load_splits_reads_aliases_and_mixed_formats(write_data, tmp_path) -> None:
    write_data("mix/train.csv", "text,label\n" + "".join(f'"{t}",{y}\n' for t, y in PAIRS))
    write_data("mix/dev.jsonl", _jsonl(PAIRS[:5]))
    write_data("mix/test.tsv", "text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in PAIRS[5:9]))
    write_data("mix/oos_test.jsonl", _jsonl([("what is the weather", "oos")]))
    write_data("mix/README.md", "# not data\n")
    splits = load_splits(tmp_path / "mix")
    assert list(splits) == ["train", "valid", "test", "oos_test"]
    assert [len(splits[k]) for k in splits] == [60, 5, 4, 1]
    assert splits["valid"].name == "mix/valid" and splits["valid"].path == tmp_path / "mix" / "dev.jsonl"


def test_load_splits_requires_train_and_one_file_per_split(write_data, tmp_path) -> None:
    write_data("notrain/valid.jsonl", _jsonl(PAIRS[:2]))
    with pytest.raises(DataError, match=r"notrain: no train split \(found valid\); fix: add train\.jsonl"):
        load_splits(tmp_path / "notrain")
    write_data("twice/train.jsonl", _jsonl(PAIRS[:2]))
    write_data("twice/validation.jsonl", _jsonl(PAIRS[:2]))
    write_data("twice/valid.csv", "text,label\na,b\n")
    with pytest.raises(DataError, match=r"split 'valid' is given twice \(valid\.csv and validation\.jsonl\)"):
        load_splits(tmp_path / "twice")
    with pytest.raises(DataError, match=r"missing: no such folder; fix:"):
        load_splits(tmp_path / "missing")


# ------------------------------------------------------------------------------------------ names


def test_resolve_data_paths_and_names(banking77_dir, tmp_path, monkeypatch) -> None:
    assert banking77_dir.name == "banking77" and (banking77_dir / "train.jsonl").is_file()
    assert resolve_data(banking77_dir) == banking77_dir
    assert resolve_data("BANKING77") == banking77_dir
    assert resolve_data("banking77/train_10") == banking77_dir / "train_10.jsonl"
    assert resolve_data("clinc150/validation") == resolve_data("clinc150") / "valid.jsonl"
    # From an unrelated folder, the package location still finds the shared datasets.
    monkeypatch.chdir(tmp_path)
    assert resolve_data("banking77") == banking77_dir


def test_resolve_data_env_var_and_nearest_shared_folder(write_data, tmp_path, monkeypatch) -> None:
    write_data("env_root/toyset/train.jsonl", _jsonl(PAIRS))
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env_root"))
    assert resolve_data("toyset") == tmp_path / "env_root" / "toyset"
    monkeypatch.delenv(DATA_DIR_ENV)
    with pytest.raises(DataError):
        resolve_data("toyset")
    write_data("proj/shared/datasets/walkset/train.jsonl", _jsonl(PAIRS))
    deep = tmp_path / "proj" / "repo" / "src"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert resolve_data("walkset") == tmp_path / "proj" / "shared" / "datasets" / "walkset"


def test_resolve_data_not_found_says_what_was_searched(tmp_path) -> None:
    with pytest.raises(DataError) as info:
        resolve_data("no_such_set")
    message = str(info.value)
    assert message.startswith("no_such_set: no such file, folder or dataset; fix: ")
    assert "banking77, clinc150, hwu64" in message and "searched:" in message and "\n" not in message
    missing = tmp_path / "nothing" / "here.jsonl"
    with pytest.raises(DataError, match="no such file, folder or dataset"):
        resolve_data(missing)
    with pytest.raises(DataError, match="no such file, folder or dataset"):
        resolve_data("banking77/no_such_split")


# ------------------------------------------------------------------------------------------ configs


def test_load_data_banking77_default(banking77_train) -> None:
    bundle = load_data(DataConfig(path="banking77"))
    assert (len(bundle.train), len(bundle.valid), len(bundle.test)) == (8622, 1540, 3080)
    assert len(bundle.label_space) == 77 and bundle.label_space.names == tuple(
        sorted(set(banking77_train.labels))
    )
    assert bundle.notes == []
    assert bundle.fingerprint == fingerprint_splits(
        {"train": bundle.train, "valid": bundle.valid, "test": bundle.test}
    )
    # banking77 test repeats 4 train texts: reported, not refused.
    assert (
        len(bundle.report.warnings) == 1
        and "4 of 3080 texts of test also appear in train" in bundle.report.warnings[0]
    )


def test_load_data_train_split_and_k_shot(banking77_dir) -> None:
    ten = load_data(DataConfig(path="banking77", train_split="train_10"))
    assert len(ten.train) == 770 and ten.train.path == banking77_dir / "train_10.jsonl"
    assert len(ten.valid) == 1540
    five = load_data(DataConfig(path="banking77", k_shot=5, seed=3))
    assert len(five.train) == 385 and set(Counter(five.train.labels).values()) == {5}
    assert len(five.test) == 3080 and any("5 examples per label" in n for n in five.notes)
    assert five.fingerprint != ten.fingerprint
    assert load_data(DataConfig(path="banking77", k_shot=5, seed=3)).fingerprint == five.fingerprint


def test_load_data_single_file_carves_stratified_valid(banking77_dir) -> None:
    bundle = load_data(DataConfig(path=str(banking77_dir / "train.jsonl"), seed=1))
    assert bundle.test is None
    assert len(bundle.train) + len(bundle.valid) == 8622
    assert {(e.line) for e in bundle.train}.isdisjoint(e.line for e in bundle.valid)
    assert set(bundle.valid.labels) == set(bundle.train.labels)  # every label held out, stratified
    assert 0.09 < len(bundle.valid) / 8622 < 0.11
    assert any("single file" in n for n in bundle.notes)
    assert any("held out" in n and "seed 1" in n for n in bundle.notes)
    other_seed = load_data(DataConfig(path=str(banking77_dir / "train.jsonl"), seed=2))
    assert other_seed.valid.texts != bundle.valid.texts and other_seed.fingerprint != bundle.fingerprint


def test_load_data_folder_without_valid_or_test(write_data, tmp_path) -> None:
    write_data("only_train/train.jsonl", _jsonl(PAIRS))
    bundle = load_data(DataConfig(path=str(tmp_path / "only_train")))
    assert (len(bundle.train), len(bundle.valid)) == (54, 6) and bundle.test is None
    assert Counter(bundle.valid.labels) == {"alpha": 2, "beta": 2, "gamma": 2}
    assert any("no test split" in n for n in bundle.notes)
    with pytest.raises(DataError, match=r"only_train: no 'dev2' split \(found train\); fix:"):
        load_data(DataConfig(path=str(tmp_path / "only_train"), valid_split="dev2"))
    with pytest.raises(DataError, match=r"only_train: no 'train_10' split \(found train\); fix:"):
        load_data(DataConfig(path=str(tmp_path / "only_train"), train_split="train_10"))


def test_load_data_refuses_test_labels_missing_from_train(write_data, tmp_path) -> None:
    write_data("bad/train.jsonl", _jsonl(PAIRS))
    test_path = write_data("bad/test.jsonl", _jsonl([("hello", "alpha"), ("new", "delta")]))
    with pytest.raises(DataError, match=rf"^{test_path}:2: label 'delta' is not in the training labels"):
        load_data(DataConfig(path=str(tmp_path / "bad")))


def test_data_config_validates_fields() -> None:
    with pytest.raises(pydantic.ValidationError):
        DataConfig(path="banking77", kshot=5)  # typo: extra fields are refused
    with pytest.raises(pydantic.ValidationError):
        DataConfig(path="banking77", k_shot=0)
    cfg = DataConfig(path="x")
    assert (cfg.train_split, cfg.valid_split, cfg.test_split, cfg.k_shot, cfg.seed) == (
        "train",
        "valid",
        "test",
        None,
        0,
    )


def test_example_paths_are_strings(banking77_train) -> None:
    assert isinstance(banking77_train[0].source, str) and isinstance(banking77_train.path, Path)


def test_iter_json_objects_names_file_line_and_fix(tmp_path) -> None:
    from rationalign.data.io import iter_json_objects

    path = tmp_path / "records.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n{"b": 2}\r\n')
    assert list(iter_json_objects(path, fix="f")) == [(1, {"a": 1}), (3, {"b": 2})]
    for content, problem in [
        (b'{"a": 1}\n[1, 2]\n', r"records.jsonl:2: line is a JSON array, not an object; fix: rewrite it"),
        (b'{"a": 1}\n{"b": \n', r"records.jsonl:2: malformed JSON \(.*\); fix: rewrite it"),
        (b'{"a": "\xff"}\n', r"records.jsonl:1: bytes are not UTF-8"),
        (b'{"a": "' + b"x" * 64 + b'"}\n', r"records.jsonl:1: line is at least 34 bytes"),
    ]:
        path.write_bytes(content)
        with pytest.raises(DataError, match=problem):
            list(iter_json_objects(path, fix="rewrite it", max_line_bytes=32))
