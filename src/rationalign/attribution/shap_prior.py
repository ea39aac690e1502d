"""SHAP prior (optional): shap's Partition explainer with a ``shap.maskers.Text`` masker on the
classifier's own tokenizer, mapped from shap's token segments back to our words (subword values summed).

``shap`` is imported lazily; install it with ``pip install 'rationalign[attribution]'``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rationalign.attribution.base import WordAttribution
from rationalign.attribution.integrated_gradients import (
    OUTPUTS,
    Output,
    check_targets,
    eval_mode,
    model_inputs,
    resolve_model,
)
from rationalign.attribution.words import align_offsets, word_spans


def _import_shap():
    try:
        import shap
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ShapPrior needs the 'shap' package; fix: pip install 'rationalign[attribution]'"
        ) from err
    return shap


def _wrapping_specials(tokenizer) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after every text."""
    special = tokenizer("a", return_special_tokens_mask=True)["special_tokens_mask"]
    prefix = next((i for i, s in enumerate(special) if not s), len(special))
    suffix = next((i for i, s in enumerate(reversed(special)) if not s), len(special))
    return prefix, suffix


class ShapPrior:
    """Word scores from shap's Partition explainer (``max_evals`` model calls per utterance at most).

    The explained output is the same as IG's (``output``: log-probability by default) for every class;
    each utterance keeps the values of its target. ``mask_token=None`` is shap's default (the tokenizer's
    mask token, else "..."); ``mask_token=""`` deletes the masked words instead.
    """

    name = "shap"

    def __init__(
        self,
        clf_or_model,
        tokenizer=None,
        *,
        max_evals: int = 500,
        output: Output = "logprob",
        batch_size: int = 64,
        mask_token: str | None = None,
        max_length: int | None = None,
    ):
        self._shap = _import_shap()
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; choose one of {OUTPUTS}")
        self.handle = resolve_model(clf_or_model, tokenizer, max_length)
        self.max_evals = int(max_evals)
        self.output = output
        self.batch_size = int(batch_size)
        self.masker = self._shap.maskers.Text(self.handle.tokenizer, mask_token=mask_token)
        # shap guesses which special tokens wrap every text from tokenizer(""); when one token is both BOS
        # and EOS (SmolLM2's <|im_start|>) it guesses "suffix" and then never masks the last real token.
        # Count the wrapping special tokens of a real text instead.
        self.masker.keep_prefix, self.masker.keep_suffix = _wrapping_specials(self.handle.tokenizer)

    def predict(self, texts) -> np.ndarray:
        """``[n, C]`` explained output of every class for a batch of (masked) texts; sorted by length."""
        h = self.handle
        texts = [str(t) for t in texts]
        out = np.empty((len(texts), h.num_labels), dtype=np.float64)
        order = np.argsort([len(t) for t in texts], kind="stable")
        with torch.no_grad(), eval_mode(h.model):
            for start in range(0, len(texts), self.batch_size):
                idx = order[start : start + self.batch_size]
                enc = h.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=h.max_length,
                    return_tensors="pt",
                )
                ids, mask = enc["input_ids"].to(h.device), enc["attention_mask"].to(h.device)
                logits = h.model(**model_inputs(h, ids, mask)).logits.float()
                if self.output == "logprob":
                    logits = torch.log_softmax(logits, -1)
                elif self.output == "prob":
                    logits = torch.softmax(logits, -1)
                out[idx] = logits.cpu().numpy()
        return out

    def _token_words(self, text: str) -> tuple[list[str], list[int]]:
        # shap's Text masker has one segment per token of an untruncated tokenisation of the text.
        enc = self.handle.tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
        spans = word_spans(text)
        token_to_word = align_offsets(text, enc["offset_mapping"], enc["special_tokens_mask"], spans)
        return [text[s:e] for s, e in spans], token_to_word

    def attribute(self, texts: Sequence[str], targets: Sequence[int]) -> list[WordAttribution]:
        texts = list(texts)
        targets = check_targets(texts, targets, self.handle.num_labels)
        if not texts:
            return []
        explainer = self._shap.Explainer(self.predict, self.masker, algorithm="partition")
        values = explainer(texts, max_evals=self.max_evals, batch_size=self.batch_size, silent=True)
        results = []
        for i, (text, target) in enumerate(zip(texts, targets, strict=True)):
            words, token_to_word = self._token_words(text)
            token_values = np.asarray(values.values[i])[:, target]
            if len(token_values) != len(token_to_word):
                raise RuntimeError(
                    f"shap returned {len(token_values)} token values for {len(token_to_word)} tokens"
                )
            scores = np.zeros(len(words))
            for w, v in zip(token_to_word, token_values, strict=True):
                if w >= 0:
                    scores[w] += v
            results.append(
                WordAttribution(
                    words,
                    scores,
                    self.name,
                    target,
                    meta={
                        "max_evals": self.max_evals,
                        "output": self.output,
                        "base_value": float(np.asarray(values.base_values[i])[target]),
                    },
                )
            )
        return results
