"""Fixtures of the attribution tests: tiny real-tokenizer classifiers and a model with a known answer."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rationalign.data.types import LabelSpace
from rationalign.models.classifier import IntentClassifier

KEYWORD = "refund"  # the one word the hand-built model reads (two WordPiece tokens: "ref", "##und")
ARCHS = ("bert", "mpnet", "llama")
TEXTS = [
    "Why isn't my card's top-up working?",
    "hi",
    "I want to cancel the transfer I made yesterday, please",
    "refund",
]


@pytest.fixture(scope="session")
def sample_texts() -> list[str]:
    return list(TEXTS)


@pytest.fixture(scope="session")
def label_space() -> LabelSpace:
    return LabelSpace(["card_issue", "refund_request", "transfer"])


@pytest.fixture(scope="session")
def tiny_models(label_space) -> dict[str, IntentClassifier]:
    """One random tiny classifier per architecture (real tokenizers), in eval mode, built once."""
    models = {}
    for arch in ARCHS:
        clf = IntentClassifier.tiny(label_space, arch=arch, seed=0)
        clf.model.eval()
        models[arch] = clf
    return models


class BagOfEmbeddings(nn.Module):
    """``logits = W @ sum_t mask_t * E[token_t] + b``: an HF-shaped linear model whose answer is known.

    The subword tokens of one chosen word have a large embedding along the direction that class 1's row of the head
    reads, every other embedding is small noise, and PAD's is zero: that word must rank first for class 1.
    """

    def __init__(
        self, vocab_size: int, keyword_ids: list[int], pad_id: int, num_labels: int = 3, dim: int = 8
    ):
        super().__init__()
        self.config = SimpleNamespace(num_labels=num_labels, is_decoder=False)
        generator = torch.Generator().manual_seed(0)
        self.embed = nn.Embedding(vocab_size, dim)
        self.head = nn.Linear(dim, num_labels)
        with torch.no_grad():
            self.embed.weight.copy_(0.05 * torch.randn(vocab_size, dim, generator=generator))
            direction = torch.zeros(dim)
            direction[0] = 1.0
            self.embed.weight[keyword_ids] = 1.5 * direction
            self.embed.weight[pad_id] = 0.0
            self.head.weight.copy_(0.1 * torch.randn(num_labels, dim, generator=generator))
            self.head.weight[1] = 2.0 * direction
            self.head.bias.zero_()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, **kwargs):
        embeds = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        if attention_mask is None:
            attention_mask = torch.ones(embeds.shape[:2])
        pooled = (embeds * attention_mask.unsqueeze(-1).to(embeds.dtype)).sum(1)
        return SimpleNamespace(logits=self.head(pooled))


@pytest.fixture(scope="session")
def bag_model(tiny_models):
    """``(model, tokenizer)``: the known-answer linear model on the WordPiece tokenizer."""
    tokenizer = tiny_models["bert"].tokenizer
    keyword_ids = tokenizer(KEYWORD, add_special_tokens=False)["input_ids"]
    assert len(keyword_ids) == 2, "the keyword should be split into subwords so that pooling is exercised"
    model = BagOfEmbeddings(tokenizer.vocab_size, keyword_ids, tokenizer.pad_token_id).eval()
    return model, tokenizer


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run faster on one thread, and the test machine's cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
