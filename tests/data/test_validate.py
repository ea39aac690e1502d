"""The bad-input suite: every malformed file gives ONE line ``file:line: problem; fix: ...``."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from rationalign.data import (
    IntentDataset,
    ValidationReport,
    check_label_conflicts,
    load_dataset,
    load_splits,
    validate_splits,
)
from rationalign.errors import DataError, RationalignError

OK = '{"text": "hello there", "label": "greet"}\n'
OK2 = '{"text": "bye now", "label": "leave"}\n'
HEADER = "text,label\n"


@dataclass
class Bad:
    name: str  # test id, also the file stem
    suffix: str
    content: str | bytes
    line: int | None
    problem: str  # must appear in the message before "; fix:"
    max_line_bytes: int = 100_000


BAD_FILES = [
    # JSON lines
    Bad("malformed_json", ".jsonl", OK + OK2 + '{"text": "oops", "label": }\n', 3, "malformed JSON"),
    Bad("truncated_json", ".jsonl", OK + '{"text": "a", "label": "b"\n' + OK2, 2, "malformed JSON"),
    Bad("blank_lines_counted", ".jsonl", "\n" + OK + "\n\n" + "{not json}\n", 5, "malformed JSON"),
    Bad("array_line", ".jsonl", OK + '["hi", "greet"]\n', 2, "line is a JSON array, not an object"),
    Bad("string_line", ".jsonl", OK + OK2 + '"just text"\n', 3, "line is a JSON string, not an object"),
    Bad("number_line", ".jsonl", OK + "42\n", 2, "line is a JSON number, not an object"),
    Bad("json_array_file", ".json", '[\n  {"text": "a", "label": "b"}\n]\n', 1, "malformed JSON"),
    Bad("missing_text", ".jsonl", OK + '{"utterance": "hi", "label": "greet"}\n', 2, "no 'text' field"),
    Bad("missing_label", ".jsonl", OK + OK2 + '{"text": "hi"}\n', 3, "no 'label' field"),
    Bad("empty_text", ".jsonl", OK + '{"text": "", "label": "greet"}\n', 2, "text field 'text' is empty"),
    Bad(
        "blank_text", ".jsonl", OK + '{"text": "  \\t ", "label": "greet"}\n', 2, "text field 'text' is empty"
    ),
    Bad("number_text", ".jsonl", OK + '{"text": 42, "label": "greet"}\n', 2, "is a number, not a string"),
    Bad("null_text", ".jsonl", OK + '{"text": null, "label": "greet"}\n', 2, "is a null, not a string"),
    Bad("empty_label", ".jsonl", OK + '{"text": "hi", "label": ""}\n', 2, "label field 'label' is empty"),
    Bad("blank_label", ".jsonl", OK + '{"text": "hi", "label": "   "}\n', 2, "label field 'label' is empty"),
    Bad("float_label", ".jsonl", OK + '{"text": "hi", "label": 1.5}\n', 2, "is a number (1.5), not a string"),
    Bad("integral_float_label", ".jsonl", OK + '{"text": "hi", "label": 2.0}\n', 2, "is a number (2.0)"),
    Bad("null_label", ".jsonl", OK + '{"text": "hi", "label": null}\n', 2, "is a null (None), not a string"),
    Bad("list_label", ".jsonl", OK + '{"text": "hi", "label": ["a"]}\n', 2, "is a array (['a'])"),
    Bad("bool_label", ".jsonl", OK + '{"text": "hi", "label": true}\n', 2, "is a boolean (True)"),
    Bad("object_label", ".jsonl", OK + '{"text": "hi", "label": {"a": 1}}\n', 2, "is a object"),
    Bad(
        "latin1_bytes",
        ".jsonl",
        (OK + OK2 + OK).encode() + b'{"text": "caf\xe9 au lait", "label": "order"}\n',
        4,
        "bytes are not UTF-8 (byte 0xe9",
    ),
    Bad("long_line", ".jsonl", OK + '{"text": "' + "x" * 80 + '", "label": "a"}\n', 2, "longer than", 60),
    Bad("empty_file", ".jsonl", "", 1, "file is empty"),
    Bad("only_blank_lines", ".jsonl", "\n   \n\t\n", 1, "no examples in 3 lines"),
    Bad(
        "conflicting_labels",
        ".jsonl",
        OK
        + '{"text": "Where is  my card?", "label": "card_arrival"}\n'
        + OK2
        + OK
        # differs only in case and whitespace: the same utterance
        + '{"text": " where is my CARD? ", "label": "lost_card"}\n',
        5,
        "is labelled 'lost_card' here but 'card_arrival' on line 2",
    ),
    # CSV / TSV
    Bad("csv_header_only", ".csv", HEADER, 1, "no examples in 1 lines"),
    Bad("csv_missing_text_column", ".csv", "utterance,label\nhi,greet\n", 1, "header has no 'text' column"),
    Bad("csv_missing_label_column", ".csv", "text,intent\nhi,greet\n", 1, "header has no 'label' column"),
    Bad("csv_no_header", ".csv", "hi there,greet\nbye,leave\n", 1, "header has no 'text' column"),
    Bad("csv_duplicate_column", ".csv", "text,label,text\nhi,greet,x\n", 1, "names column 'text' twice"),
    Bad(
        "csv_unquoted_comma",
        ".csv",
        HEADER + "hi,greet\nhello, world,greet\n",
        3,
        "3 fields but the header has 2",
    ),
    Bad("csv_missing_field", ".csv", HEADER + "hi,greet\nhello world\n", 3, "1 fields but the header has 2"),
    Bad(
        "csv_unclosed_quote",
        ".csv",
        HEADER + "hi,greet\n" + '"never closed,greet\nmore,text\n',
        3,
        "malformed CSV in the record starting on this line",
    ),
    Bad("csv_stray_quote", ".csv", HEADER + "hi,greet\n" + '"a"b,x\n', 3, "malformed CSV"),
    Bad("csv_empty_text", ".csv", HEADER + "hi,greet\n,greet\n", 3, "text field 'text' is empty"),
    Bad("csv_empty_label", ".csv", HEADER + "hi,greet\nbye,  \n", 3, "label field 'label' is empty"),
    Bad(
        "csv_after_multiline_record",
        ".csv",
        HEADER + '"two\nlines",greet\n' + "bye,leave\n" + "hi,greet,extra\n",
        5,
        "3 fields but the header has 2",
    ),
    Bad("csv_latin1", ".csv", (HEADER + "hi,greet\n").encode() + b"na\xefve,greet\n", 3, "not UTF-8"),
    Bad("csv_long_line", ".csv", HEADER + "hi,greet\n" + "y" * 300 + ",greet\n", 3, "longer than", 200),
    Bad(
        "csv_conflicting_labels",
        ".csv",
        HEADER + '"Top up\nplease",top_up\n' + "bye,leave\n" + "top up please,refund\n",
        5,
        "is labelled 'refund' here but 'top_up' on line 2",
    ),
    Bad("tsv_missing_column", ".tsv", "sentence\tlabel\nhi\tgreet\n", 1, "header has no 'text' column"),
    Bad("tsv_wrong_fields", ".tsv", "text\tlabel\nhi\tgreet\nhi\tthere\tgreet\n", 3, "3 fields"),
]


@pytest.mark.parametrize("case", BAD_FILES, ids=[c.name for c in BAD_FILES])
def test_bad_file_names_file_line_and_fix(case: Bad, write_data, assert_located) -> None:
    path = write_data(case.name + case.suffix, case.content)
    with pytest.raises(DataError) as info:
        load_dataset(path, max_line_bytes=case.max_line_bytes)
    message = assert_located(info.value, path, case.line)
    assert case.problem in message.split("; fix: ")[0], message
    assert isinstance(info.value, RationalignError)  # the CLI turns these into exit code 2


def test_json_array_file_fix_explains_json_lines(write_data) -> None:
    pretty = write_data("pretty.json", '[\n  {"text": "a", "label": "b"}\n]\n')
    with pytest.raises(
        DataError, match=r"pretty\.json:1: .*fix: .*one complete object per line.*jq -c '\.\[\]' pretty"
    ):
        load_dataset(pretty)
    one_line = write_data("compact.json", '[{"text": "a", "label": "b"}]\n')
    with pytest.raises(
        DataError,
        match=r"compact\.json:1: line is a JSON array.*jq -c '\.\[\]' compact\.json > compact\.jsonl",
    ):
        load_dataset(one_line)


def test_first_bad_line_wins(write_data, assert_located) -> None:
    path = write_data("two_bad.jsonl", OK + '{"text": "", "label": "x"}\n' + OK2 + "{broken\n")
    with pytest.raises(DataError) as info:
        load_dataset(path)
    assert_located(info.value, path, 2)


def test_huge_line_is_refused_without_reading_it_whole(write_data, assert_located) -> None:
    # 5 MB on one line: the reader stops after max_line_bytes + 2 bytes, so it reports "at least" that.
    path = write_data("huge.jsonl", OK + '{"text": "' + "z" * 5_000_000 + '", "label": "a"}\n' + OK2)
    with pytest.raises(DataError) as info:
        load_dataset(path, max_line_bytes=1000)
    message = assert_located(info.value, path, 2)
    assert "line is at least 1002 bytes, longer than max_line_bytes=1000" in message


def test_line_exactly_at_limit_is_accepted(write_data) -> None:
    line = '{"text": "' + "a" * 20 + '", "label": "b"}'
    path = write_data(
        "edge.jsonl", line + "\r\n" + line.replace('"b"', '"c"').replace("a" * 20, "d" * 20) + "\n"
    )
    assert len(load_dataset(path, max_line_bytes=len(line.encode()))) == 2
    n = len(line.encode())
    with pytest.raises(
        DataError, match=rf"edge\.jsonl:1: line is (at least )?{n} bytes, longer than max_line_bytes={n - 1};"
    ):
        load_dataset(path, max_line_bytes=n - 1)


def test_integer_labels_become_strings(write_data) -> None:
    path = write_data("ints.jsonl", '{"text": "a", "label": 3}\n{"text": "b", "label": 10}\n')
    ds = load_dataset(path)
    assert ds.labels == ["3", "10"]
    csv_path = write_data("ints.csv", "text,label\na,3\nb,10\n")
    assert load_dataset(csv_path).labels == ds.labels  # same data, same labels, whatever the format


def test_surrounding_whitespace_is_stripped_and_duplicates_allowed(write_data) -> None:
    path = write_data("dups.jsonl", '{"text": "  hi  ", "label": " greet "}\n' + OK + OK)
    ds = load_dataset(path)
    assert [(e.text, e.label) for e in ds] == [
        ("hi", "greet"),
        ("hello there", "greet"),
        ("hello there", "greet"),
    ]


def test_unsupported_and_missing_files(write_data, tmp_path, assert_located) -> None:
    txt = write_data("notes.txt", "hello\n")
    with pytest.raises(DataError) as info:
        load_dataset(txt)
    assert "unsupported file type '.txt'" in assert_located(info.value, txt, None)
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError) as info:
        load_dataset(missing)
    assert "no such file" in assert_located(info.value, missing, None)
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path)
    assert "use load_splits" in assert_located(info.value, tmp_path, None)


# ------------------------------------------------------------------------------------------ cross-file


def _jsonl(pairs: list[tuple[str, str]]) -> str:
    import json

    return "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in pairs)


TRAIN = [("hello there", "greet"), ("bye now", "leave"), ("hi friend", "greet"), ("see you", "leave")]


def test_labels_missing_from_train_name_file_first_line_label_and_count(write_data, assert_located) -> None:
    train = load_dataset(write_data("sp/train.jsonl", _jsonl(TRAIN)))
    valid = load_dataset(write_data("sp/valid.jsonl", _jsonl([("hey", "greet"), ("later", "leave")])))
    test_path = write_data(
        "sp/test.jsonl",
        _jsonl(
            [("yo", "greet"), ("refund me", "refund"), ("card lost", "lost_card"), ("money back", "refund")]
        ),
    )
    test = load_dataset(test_path)
    with pytest.raises(DataError) as info:
        validate_splits(train, {"valid": valid, "test": test})
    message = assert_located(info.value, test_path, 2)
    assert "label 'refund' is not in the training labels" in message
    assert str(train.path) in message
    assert "2 label(s) of this file are missing from train: 'refund', 'lost_card'" in message
    # The same labels declared acceptable (e.g. out-of-scope test sets) pass.
    assert validate_splits(train, [valid, test], unseen_labels_ok=["refund", "lost_card"]).warnings == []


def test_train_test_overlap_is_a_warning_not_an_error(write_data) -> None:
    train = load_dataset(write_data("ov/train.jsonl", _jsonl(TRAIN)))
    test_path = write_data(
        "ov/test.jsonl", _jsonl([("new text", "greet"), ("HELLO   there", "greet"), ("see you", "leave")])
    )
    test = load_dataset(test_path)
    report = validate_splits(train, {"valid": None, "test": test})
    assert isinstance(report, ValidationReport)
    assert len(report.warnings) == 1
    warning = report.warnings[0]
    assert warning.startswith(f"{test_path}:2: 2 of 3 texts of test also appear in train")
    assert "train line 1" in warning
    clean = load_dataset(write_data("ov/valid.jsonl", _jsonl([("fresh", "greet")])))
    assert validate_splits(train, {"valid": clean}).warnings == []


def test_label_conflicts_in_a_dataset_built_in_memory() -> None:
    ds = IntentDataset.from_pairs([("a b", "x"), ("c", "y"), ("A  B", "z")], name="mem")
    with pytest.raises(DataError, match=r"^mem:3: text 'A B' is labelled 'z' here but 'x' on line 1; fix: "):
        check_label_conflicts(ds)
    check_label_conflicts(IntentDataset.from_pairs([("a b", "x"), ("A B", "x")]))


def test_real_oos_test_labels_are_not_in_train(assert_located) -> None:
    from rationalign.data import resolve_data

    splits = load_splits(resolve_data("clinc150"))
    with pytest.raises(DataError) as info:
        validate_splits(splits["train"], {"oos_test": splits["oos_test"]})
    message = assert_located(info.value, splits["oos_test"].path, 1)
    assert "label 'oos'" in message and "1 label(s)" in message
    report = validate_splits(
        splits["train"],
        {"valid": splits["valid"], "test": splits["test"], "oos": splits["oos_test"]},
        unseen_labels_ok=["oos"],
    )
    # clinc150 has a few texts in both train and valid/test (after case/space normalisation); oos none.
    assert [w.split(":", 1)[0].rsplit("/", 1)[-1] for w in report.warnings] == ["valid.jsonl", "test.jsonl"]
    assert "2 of 4500 texts of test also appear in train" in report.warnings[1]
