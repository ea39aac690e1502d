"""Fixtures of the teacher tests: a tiny random Llama with SmolLM2's real tokenizer, saved as a local folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rationalign.data.types import LabelSpace

# Eight Banking77 intents, two of them near-duplicates ("card arrival" / "card delivery estimate").
SMALL_LABELS = [
    "card_arrival",
    "card_delivery_estimate",
    "lost_or_stolen_card",
    "top_up_failed",
    "exchange_rate",
    "Refund_not_showing_up",
    "cash_withdrawal_charge",
    "pin_blocked",
]
TEXTS = [
    "where is my new card? it has been two weeks",
    "how long does it take for a card to be delivered",
    "someone stole my card",
    "my top up did not go through",
    "what rate do you use to exchange euros",
    "i am still waiting for my refund",
    "why was i charged for taking cash out",
    "my pin is blocked after three tries",
    "hi",
    "I need help with something that is a bit complicated to explain, it involves my account and a transfer",
]


@pytest.fixture(scope="session")
def small_space() -> LabelSpace:
    return LabelSpace(SMALL_LABELS)


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return list(TEXTS)


@pytest.fixture(scope="session")
def smollm_tokenizer():
    from transformers import AutoTokenizer

    from rationalign.models.resolver import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory, smollm_tokenizer) -> Path:
    """A 2-layer random Llama (GQA like SmolLM2) with SmolLM2's tokenizer and chat template, as a folder.

    A large init scale makes its next-token distributions far from uniform, so equality checks between
    code paths compare distinct, peaked numbers rather than near-uniform ones.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(
        vocab_size=len(smollm_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        initializer_range=0.5,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    smollm_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_teacher(tiny_llm_dir, small_space):
    from rationalign.teachers.llm import LLMTeacher

    return LLMTeacher(tiny_llm_dir, small_space, batch_size=4)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread for these tests: on the shared 2-core machine, two OpenMP threads that wait for
    each other under load made the tiny model's calls 30x slower (measured: 3.0 s vs 0.08 s per batch)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
