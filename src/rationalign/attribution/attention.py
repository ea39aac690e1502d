"""Attention prior: the last layer's attention from the classifying token, averaged over heads.

Encoders read the first token (CLS / ``<s>``); causal LMs classify from their last real token, so that
token's attention row is used. A word's score is the attention mass on its subwords (summed). A cheap
baseline prior: one forward pass, no gradient.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch

from rationalign.attribution.base import WordAttribution
from rationalign.attribution.integrated_gradients import (
    attribute_in_batches,
    model_inputs,
    resolve_model,
)

Query = Literal["auto", "first", "last"]


@contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """Temporarily switch to the eager attention kernel: SDPA/flash kernels return no attention weights."""
    current = getattr(model.config, "_attn_implementation", "eager")
    if current == "eager":
        yield
        return
    if not hasattr(model, "set_attn_implementation"):
        raise RuntimeError(
            f"{type(model).__name__} uses {current!r} attention, which returns no attention weights; "
            "fix: load the model with attn_implementation='eager'"
        )
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(current)


class AttentionPrior:
    """Last-layer (``layer``) attention of the classifying token, mean over heads, pooled to words.

    ``query="auto"``: the first real token for encoders, the last real token for causal (left-padded)
    models. The target class is recorded but does not change the scores (attention is class-agnostic).
    """

    name = "attention"

    def __init__(
        self,
        clf_or_model,
        tokenizer=None,
        *,
        layer: int = -1,
        query: Query = "auto",
        batch_size: int = 64,
        max_length: int | None = None,
    ):
        self.handle = resolve_model(clf_or_model, tokenizer, max_length)
        self.layer = int(layer)
        if query not in ("auto", "first", "last"):
            raise ValueError(f"unknown query {query!r}; choose 'auto', 'first' or 'last'")
        causal = bool(getattr(self.handle.model.config, "is_decoder", False)) or self.handle.left_padded
        self.query = ("last" if causal else "first") if query == "auto" else query
        self.batch_size = int(batch_size)

    def token_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, T]``: the chosen layer's attention row of the query token, averaged over heads."""
        h = self.handle
        with torch.no_grad(), eager_attention(h.model):
            out = h.model(**model_inputs(h, input_ids, attention_mask), output_attentions=True)
        if not out.attentions:
            raise RuntimeError(f"{type(h.model).__name__} returned no attentions")
        attn = out.attentions[self.layer].float().mean(dim=1)  # [B, T(query), T(key)]
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        real = attention_mask.bool()
        if self.query == "first":
            query = torch.where(real, positions, attention_mask.shape[1]).min(dim=1).values
        else:
            query = torch.where(real, positions, -1).max(dim=1).values
        rows = attn[torch.arange(attn.shape[0]), query.clamp(min=0)]
        return rows * real

    def attribute(self, texts: Sequence[str], targets: Sequence[int]) -> list[WordAttribution]:
        meta = {"layer": self.layer, "query": self.query}

        def score_batch(inputs: dict[str, torch.Tensor], batch_targets: torch.Tensor):
            tokens = self.token_scores(inputs["input_ids"], inputs["attention_mask"])
            return tokens, [dict(meta) for _ in range(len(batch_targets))]

        return attribute_in_batches(self.handle, texts, targets, self.batch_size, self.name, score_batch)
