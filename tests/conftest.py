"""Shared fixtures: the shipped datasets, a tiny labelled data folder, a tiny classifier."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]

# Four intents in two confusable pairs sharing a keyword ("card", "alarm"): enough to learn in seconds.
TINY_INTENTS = {
    "card_block": [
        "block my card",
        "please freeze my card",
        "lock the card now",
        "my card was stolen block it",
    ],
    "card_activate": [
        "activate my card",
        "how do i enable my new card",
        "turn on my card",
        "start using my card",
    ],
    "alarm_set": ["set an alarm for 7", "wake me up at six", "create an alarm tomorrow", "set alarm at noon"],
    "alarm_query": [
        "what alarms do i have",
        "check my alarms",
        "which alarm is set",
        "show alarms for tomorrow",
    ],
}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    root = Path(os.environ.get("RATIONALIGN_DATA_DIR", REPO.parent / "shared" / "datasets"))
    if not (root / "banking77" / "train.jsonl").is_file():
        pytest.skip(f"shared datasets not found at {root}")
    return root


@pytest.fixture()
def tiny_data_dir(tmp_path: Path) -> Path:
    """train/valid/test JSONL files of the four tiny intents (train repeats with variations)."""
    train, valid, test = [], [], []
    for label, texts in TINY_INTENTS.items():
        for i, t in enumerate(texts):
            rows = [{"text": t, "label": label}, {"text": f"{t} please", "label": label}]
            (test if i == 3 else valid if i == 2 else train).extend(rows)
            if i < 2:
                train.append({"text": f"hey {t}", "label": label})
    folder = tmp_path / "tiny"
    write_jsonl(folder / "train.jsonl", train)
    write_jsonl(folder / "valid.jsonl", valid)
    write_jsonl(folder / "test.jsonl", test)
    return folder


@pytest.fixture()
def tiny_label_space():
    from rationalign.data.types import LabelSpace

    return LabelSpace.from_labels(TINY_INTENTS)


@pytest.fixture()
def tiny_classifier(tiny_label_space):
    from rationalign.models.classifier import IntentClassifier

    return IntentClassifier.tiny(tiny_label_space, arch="bert", seed=0)


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory) -> Path:
    """A tiny random BERT encoder saved as a local HF folder (stands in for a pretrained backbone)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rationalign.models.resolver import resolve_model

    folder = tmp_path_factory.mktemp("tiny-base")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm-l6"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
