"""Explanation-aligned distillation: CE + soft-label KD + alignment of the student's own attributions.

    L = CE(y, p_s) + alpha * T^2 * KL(p_t^T || p_s^T) + lambda_t * D(norm(a_s(x)), norm(prior(x)))

``a_s`` is the student's word attribution of the gold class, computed *differentiably*
(``create_graph=True``): gradient x input (one forward, whose logits also feed CE and KD, plus a
double backward) or Integrated Gradients with k steps from the PAD baseline (k extra forwards).
Subword scores are summed into the words of ``split_words`` (the same segmentation every prior uses), so
the teacher's and student's tokenizers may differ.

Cost: an aligned step runs every linear layer's matrix product six times (forward; the input gradient,
built as a graph; its backward, two products per product; the forward's backward, two), against three for
cross-entropy, so aligning every row costs about r = 2 CE steps, and the exact gradient cannot be had for
much less. ``align_every=k`` aligns whole batches on one step in k (an epoch then costs about
1 + (r - 1) / k CE epochs);
``align_fraction`` aligns a share of every batch's rows in a second, smaller forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from rationalign.attribution.integrated_gradients import (
    pad_baseline_ids,
    patched_embeddings,
    path_integrated_gradients,
    quadrature,
    resolve_model,
    target_output,
)
from rationalign.attribution.words import encode_with_words, pool_to_words, token_word_index
from rationalign.errors import ConfigError
from rationalign.training.objectives import Batch, LossOutput

if TYPE_CHECKING:
    from rationalign.models.classifier import IntentClassifier

AlignLoss = Literal["mse", "kl", "cosine"]


class DistillConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(0.5, ge=0, description="weight of the soft-label KD term")
    temperature: float = Field(2.0, gt=0, description="KD temperature T")
    lam: float = Field(1.0, ge=0, description="weight lambda of the alignment term")
    align_loss: AlignLoss = Field("mse", description="mse, kl (between softmaxed maps) or cosine (1 - cos)")
    attribution: Literal["gxi", "ig"] = Field(
        "gxi", description="student self-attribution: gradient x input, or Integrated Gradients with ig_steps"
    )
    ig_steps: int = Field(8, ge=1, le=64, description="IG steps of the student attribution (4-16)")
    output: Literal["logit", "logprob", "prob"] = Field(
        "logprob", description="the student output its attribution explains"
    )
    warmup_steps: int = Field(0, ge=0, description="lambda ramps linearly from 0 over these steps")
    student_sharpness: float = Field(
        1.0, gt=0, description="softmax sharpness for standardised student scores"
    )
    align_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="share of each batch's rows that get the alignment term (the costly double backward);"
        " batches are shuffled, so it is a random subset",
    )
    align_every: int = Field(
        1,
        ge=1,
        description="align on one training step in k (the whole batch; the other steps train on CE + KD"
        " only): an epoch then costs about 1 + (r - 1) / k CE epochs, r being the cost of an aligned step,"
        " in either precision (align_fraction splits each batch in two forwards, which bfloat16 pays for)",
    )


def normalise_prior(scores: np.ndarray) -> np.ndarray | None:
    """Clip negatives, divide by the sum; None when nothing is positive (the example is not aligned)."""
    clipped = np.clip(np.asarray(scores, dtype=np.float64), 0, None)
    total = clipped.sum()
    return None if total <= 0 else clipped / total


def student_distribution(scores: torch.Tensor, mask: torch.Tensor, sharpness: float) -> torch.Tensor:
    """Softmax over a row's real words of its standardised scores (scale-free, differentiable)."""
    masked = scores.masked_fill(~mask, 0.0)
    count = mask.sum(-1, keepdim=True).clamp(min=1)
    mean = masked.sum(-1, keepdim=True) / count
    var = ((masked - mean) ** 2).masked_fill(~mask, 0.0).sum(-1, keepdim=True) / count
    # var + eps under the root: a one-word row has var == 0, where sqrt's gradient is infinite and
    # inf * 0 poisons every weight with NaN (HWU64's train_10 has one-word utterances such as "alarm")
    z = (scores - mean) / ((var + 1e-12).sqrt() + 1e-6) * sharpness
    return torch.softmax(z.masked_fill(~mask, float("-inf")), dim=-1)


def alignment_loss(
    scores: torch.Tensor, prior: torch.Tensor, mask: torch.Tensor, kind: AlignLoss, sharpness: float = 1.0
) -> torch.Tensor:
    """Mean over rows of D(student, prior). ``prior`` rows sum to one over ``mask``; ``scores`` are raw."""
    if kind == "cosine":
        s = scores.masked_fill(~mask, 0.0)
        return (1 - F.cosine_similarity(s, prior, dim=-1, eps=1e-8)).mean()
    s = student_distribution(scores, mask, sharpness)
    if kind == "mse":
        return ((s - prior) ** 2).masked_fill(~mask, 0.0).sum(-1).mean()
    if kind == "kl":
        log_s = torch.log(s.clamp(min=1e-12))
        log_p = torch.log(prior.clamp(min=1e-12))
        return (prior * (log_p - log_s)).masked_fill(~mask, 0.0).sum(-1).mean()
    raise ConfigError(f"unknown align_loss {kind!r}; fix: choose mse, kl or cosine")


def kd_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(p_t^T || p_s^T), with p_t^T the teacher's probabilities re-tempered (p^(1/T), renormalised)."""
    log_pt = torch.log(teacher_probs.clamp(min=1e-12)) / temperature
    pt = torch.softmax(log_pt, dim=-1)
    log_ps = torch.log_softmax(student_logits / temperature, dim=-1)
    return temperature**2 * (pt * (torch.log(pt.clamp(min=1e-12)) - log_ps)).sum(-1).mean()


@dataclass
class SelfAttribution:
    logits: torch.Tensor | None  # [B, C] from the real input (gxi) or None (ig)
    word_scores: torch.Tensor  # [B, W], differentiable
    word_mask: torch.Tensor  # [B, W] bool: real words that kept at least one token


def student_attribution(
    clf: IntentClassifier,
    texts: Sequence[str],
    targets: torch.Tensor,
    *,
    method: Literal["gxi", "ig"] = "gxi",
    ig_steps: int = 8,
    output: str = "logprob",
    create_graph: bool = True,
) -> SelfAttribution:
    """Differentiable word attributions of ``targets`` for the student ``clf`` (train or eval mode)."""
    handle = resolve_model(clf)
    inputs, alignments = encode_with_words(clf.tokenizer, texts, clf.max_length, clf.device)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    targets = targets.to(clf.device)
    logits = None
    if method == "gxi":
        model = clf.model
        with patched_embeddings(model) as patch:
            emb = model.get_input_embeddings()(ids)
            patch.value = emb
            kwargs = {"input_ids": ids, "attention_mask": mask}
            if handle.left_padded:
                kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
            logits = model(**kwargs).logits
            patch.value = None
        y = target_output(logits, targets, output)  # type: ignore[arg-type]
        (grad,) = torch.autograd.grad(y.sum(), emb, create_graph=create_graph)
        token_scores = (grad * emb).sum(-1)
    else:
        alphas, weights = quadrature(ig_steps, "gausslegendre")
        token_scores = path_integrated_gradients(
            handle,
            ids,
            mask,
            targets,
            baseline_ids=pad_baseline_ids(ids, mask, clf.tokenizer),
            alphas=alphas,
            weights=weights,
            output=output,
            internal_batch=ids.shape[0] * ig_steps,  # type: ignore[arg-type]
            create_graph=create_graph,
            endpoints=False,
        ).token_scores
    n_words = max(max((a.n_words for a in alignments), default=1), 1)
    index = token_word_index(alignments, ids.shape[1], clf.tokenizer.padding_side).to(clf.device)
    words = pool_to_words(token_scores, index, n_words)
    word_mask = torch.zeros(len(texts), n_words, dtype=torch.bool, device=clf.device)
    for i, a in enumerate(alignments):
        present = sorted({w for w in a.token_to_word if w >= 0})
        word_mask[i, present] = True
    return SelfAttribution(logits, words, word_mask)


class DistillationObjective:
    """The trainer's loss hook. ``soft_labels[i]`` and ``priors[i]`` belong to training example ``i``.

    ``labelled`` (optional, one bool per training example) marks the rows with a gold label; the others are
    a transfer set (unlabelled text the teacher labelled) that trains only the KD term: CE is summed over
    the batch's labelled rows and divided by all its rows (a transfer row counts 0), KD is the mean over
    every row, and alignment the mean over the rows that have a prior (transfer rows have none)."""

    name = "distill"

    def __init__(
        self,
        config: DistillConfig,
        soft_labels: np.ndarray | None = None,
        priors: Sequence[np.ndarray | None] | None = None,
        labelled: np.ndarray | None = None,
    ):
        self.config = config
        if labelled is not None and soft_labels is None:
            raise ConfigError(
                "unlabelled training rows need the teacher's soft labels; fix: set distill.alpha > 0"
            )
        self.labelled = torch.as_tensor(labelled, dtype=torch.bool) if labelled is not None else None
        self.soft_labels = (
            torch.as_tensor(soft_labels, dtype=torch.float32) if soft_labels is not None else None
        )
        self.priors = (
            [normalise_prior(p) if p is not None else None for p in priors] if priors is not None else None
        )

    def lambda_at(self, step: int) -> float:
        """The alignment weight at the trainer's global ``step``: 0 without priors and on the steps that
        ``align_every`` skips, else lambda ramped linearly over ``warmup_steps``."""
        cfg = self.config
        if self.priors is None or step % cfg.align_every:
            return 0.0
        if cfg.warmup_steps <= 0:
            return cfg.lam
        return cfg.lam * min(1.0, step / cfg.warmup_steps)

    def __call__(self, clf: IntentClassifier, batch: Batch) -> LossOutput:
        cfg = self.config
        # The step comes with the batch, not from a counter here, so a resumed run aligns the same steps
        # with the same lambda as an uninterrupted one.
        lam = self.lambda_at(batch.step)
        parts: dict[str, float] = {}
        align = None
        rows = len(batch.labels)
        chosen = self._rows_to_align(batch) if lam > 0 else None
        if chosen is not None and len(chosen):
            m = len(chosen)
            attr = student_attribution(
                clf,
                [batch.texts[i] for i in chosen.tolist()],
                batch.labels[chosen.to(batch.labels.device)],
                method=cfg.attribution,
                ig_steps=cfg.ig_steps,
                output=cfg.output,
            )
            logits = attr.logits
            if logits is None:
                logits = clf.model(**batch.model_inputs()).logits
            elif m < rows:
                others = torch.ones(rows, dtype=torch.bool)
                others[chosen] = False
                rest_rows = torch.nonzero(others).flatten()
                device_rows = rest_rows.to(batch.input_ids.device)
                rest = clf.model(**{k: v[device_rows] for k, v in batch.model_inputs().items()}).logits
                # back to the batch's row order (the identity when the chosen rows come first)
                order = torch.argsort(torch.cat([chosen, rest_rows])).to(logits.device)
                logits = torch.cat([logits, rest])[order]
            prior, keep = self._prior_batch(batch.indices[chosen].tolist(), attr.word_mask)
            if keep.any():
                align = alignment_loss(
                    attr.word_scores[keep],
                    prior[keep],
                    attr.word_mask[keep],
                    cfg.align_loss,
                    cfg.student_sharpness,
                )
        else:
            logits = clf.model(**batch.model_inputs()).logits
        if self.labelled is None:
            loss = F.cross_entropy(logits, batch.labels)
        else:  # transfer rows have no gold label: their CE weighs 0, the batch mean stays per row
            gold = self.labelled[batch.indices].to(logits.device)
            loss = (F.cross_entropy(logits, batch.labels, reduction="none") * gold).sum() / len(gold)
        parts["ce"] = float(loss.detach())
        if self.soft_labels is not None and cfg.alpha > 0:
            kd = kd_loss(logits, self.soft_labels[batch.indices].to(logits.device), cfg.temperature)
            loss = loss + cfg.alpha * kd
            parts["kd"] = float(kd.detach())
        if align is not None:
            loss = loss + lam * align
            parts["align"] = float(align.detach())
        return LossOutput(loss, parts, logits)

    def _rows_to_align(self, batch: Batch) -> torch.Tensor:
        """The batch rows that pay for the differentiable attribution: transfer rows have no prior and
        never do; of the others, the first m (a random subset: batches are shuffled) do, and the rest take
        a plain forward pass."""
        rows = len(batch.labels)
        candidates = (
            torch.arange(rows)
            if self.labelled is None
            else torch.nonzero(self.labelled[batch.indices.cpu()]).flatten()
        )
        n = len(candidates)
        frac = self.config.align_fraction
        m = n if frac >= 1 else min(n, max(1, int(np.ceil(frac * n))))
        return candidates[:m]

    def _prior_batch(self, indices: list[int], word_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_words = word_mask.shape[1]
        prior = torch.zeros(len(indices), n_words, device=word_mask.device)
        keep = torch.zeros(len(indices), dtype=torch.bool, device=word_mask.device)
        assert self.priors is not None
        for row, i in enumerate(indices):
            p = self.priors[i]
            if p is None:
                continue
            d = min(len(p), n_words)
            values = torch.as_tensor(p[:d], dtype=torch.float32, device=word_mask.device)
            values = values * word_mask[row, :d]  # words lost to truncation carry no prior
            if values.sum() <= 0:
                continue
            prior[row, :d] = values / values.sum()
            keep[row] = True
        return prior, keep
