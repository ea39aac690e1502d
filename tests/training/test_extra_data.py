import pytest

from rationalign.data.io import DataConfig, load_data
from rationalign.errors import DataError
from rationalign.evaluation.divergence import DivergenceItem, write_queue
from rationalign.training.run import add_extra_data


def _item(text, label, reviewed, **extra):
    return DivergenceItem(text, label, "alarm_set", label, [], [], 0.1, "label", reviewed, extra)


def test_reviewed_queue_items_join_the_training_split(tmp_path, tiny_data_dir):
    bundle = load_data(DataConfig(path=str(tiny_data_dir)))
    queue = write_queue(
        tmp_path / "queue.jsonl",
        [
            _item("turn my alarm off and on", "alarm_set", True),
            _item("is my card blocked", "alarm_query", True, corrected_label="card_block"),
            _item("not looked at yet", "alarm_set", False),
        ],
    )
    grown = add_extra_data(bundle, [str(queue)])
    assert len(grown.train) == len(bundle.train) + 2
    added = {e.text: e.label for e in grown.train.examples[len(bundle.train) :]}
    assert added == {"turn my alarm off and on": "alarm_set", "is my card blocked": "card_block"}
    assert grown.fingerprint != bundle.fingerprint and "2 reviewed examples" in grown.notes[-1]
    assert add_extra_data(bundle, []) is bundle

    bad = write_queue(tmp_path / "bad.jsonl", [_item("x", "no_such_label", True)])
    with pytest.raises(DataError, match=r"bad\.jsonl:1"):
        add_extra_data(bundle, [str(bad)])


def test_pseudo_labelled_files_join_the_training_split(tmp_path, tiny_data_dir):
    bundle = load_data(DataConfig(path=str(tiny_data_dir)))
    pseudo = tmp_path / "pseudo_labels.jsonl"
    pseudo.write_text(
        '{"text": "wake me at seven", "label": "alarm_set", "confidence": 0.97}\n'
        '{"text": "freeze my card now", "label": "card_block", "confidence": 0.93}\n',
        encoding="utf-8",
    )
    grown = add_extra_data(bundle, [], [str(pseudo)])
    assert [(e.text, e.label) for e in grown.train.examples[len(bundle.train) :]] == [
        ("wake me at seven", "alarm_set"),
        ("freeze my card now", "card_block"),
    ]
    assert grown.fingerprint != bundle.fingerprint and "2 pseudo-labelled examples" in grown.notes[-1]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "alarm_set"}\n{"text": "b", "label": "no_such_label"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: label 'no_such_label' is not in the label space"):
        add_extra_data(bundle, [], [str(bad)])
