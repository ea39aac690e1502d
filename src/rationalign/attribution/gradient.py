"""Gradient x input on the embedding layer, pooled to words.

A token's score is ``sum_h e_h * dF/de_h`` at the input embeddings ``e`` (the output of
``model.get_input_embeddings()``, like captum's ``LayerGradientXActivation`` / ``InputXGradient`` on the
embeddings). One forward and one backward per batch; ``gradient_x_input_tokens(create_graph=True)`` is
differentiable for aligning a student's attributions during training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rationalign.attribution.base import WordAttribution
from rationalign.attribution.integrated_gradients import (
    OUTPUTS,
    ModelHandle,
    Output,
    Precision,
    attribute_in_batches,
    path_integrated_gradients,
    resolve_model,
)


def gradient_x_input_tokens(
    handle: ModelHandle,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    targets: torch.Tensor,
    *,
    output: Output = "logprob",
    create_graph: bool = False,
    precision: Precision = "float32",
) -> torch.Tensor:
    """Token scores ``[B, T]``: embeddings times the gradient of the target output, summed over hidden."""
    # Integrated gradients from a zero baseline with one step at alpha = 1 is exactly gradient x input.
    result = path_integrated_gradients(
        handle,
        input_ids,
        attention_mask,
        targets,
        baseline_ids=None,
        alphas=(1.0,),
        weights=(1.0,),
        output=output,
        internal_batch=input_ids.shape[0],
        create_graph=create_graph,
        endpoints=False,
        precision=precision,
    )
    return result.token_scores


class GradientXInput:
    """Word-level gradient x input of a classifier's target output (``output`` as in IG)."""

    name = "gxi"

    def __init__(
        self,
        clf_or_model,
        tokenizer=None,
        *,
        output: Output = "logprob",
        batch_size: int = 64,
        max_length: int | None = None,
        precision: Precision = "float32",
    ):
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; choose one of {OUTPUTS}")
        self.handle = resolve_model(clf_or_model, tokenizer, max_length)
        self.precision = precision
        self.output = output
        self.batch_size = int(batch_size)

    def attribute(self, texts: Sequence[str], targets: Sequence[int]) -> list[WordAttribution]:
        meta = {"output": self.output, "precision": self.precision}

        def score_batch(inputs: dict[str, torch.Tensor], batch_targets: torch.Tensor):
            tokens = gradient_x_input_tokens(
                self.handle,
                inputs["input_ids"],
                inputs["attention_mask"],
                batch_targets,
                output=self.output,
                precision=self.precision,
            )
            return tokens, [dict(meta) for _ in range(len(batch_targets))]

        return attribute_in_batches(self.handle, texts, targets, self.batch_size, self.name, score_batch)
