"""``LLMTeacher``: a local causal LM asked for the intent, one forward pass per utterance.

``codes`` mode (the default, CAP's fast path): the prompt's prefix (instruction + label list + examples)
is encoded ONCE and its KV cache is shared, as a zero-copy ``expand`` view, by every row of every batch;
only the suffixes (utterance + answer cue) are run, padded on the RIGHT, with an attention mask over
prefix + suffix. Right padding keeps each real token at its true position (prefix length + offset), so no
position ids are needed, and each row's answer distribution is read at its own last real position: the
next-token logits restricted to the label codes, softmaxed over the codes.

``label_text`` mode scores each label's name (plus the end-of-answer marker) as a continuation: sum of
its tokens' log-probabilities (optionally divided by their number), softmax over labels. It costs one
suffix pass per batch plus one pass per utterance over all label continuations; it is a check of codes.

Every model call is counted in :attr:`LLMTeacher.cost` (forward passes, real and padded tokens, seconds)
for CAP's cost report.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, PreTrainedModel

from rationalign.data.types import Example, IntentDataset, LabelSpace
from rationalign.models.resolver import resolve_model, weights_hash
from rationalign.teachers.classifier import module_weights_hash
from rationalign.teachers.errors import TeacherError
from rationalign.teachers.prompt import (
    DEFAULT_INSTRUCTION,
    BuiltPrompt,
    CodeStyle,
    Format,
    Mode,
    PromptBuilder,
    clip_text,
    encode_prompt_start,
    select_examples,
)


@dataclass
class TeacherCost:
    """What a teacher spent: model calls, tokens run through the model, wall time, utterances served."""

    forward_passes: int = 0
    tokens: int = 0  # real (non-padding) tokens run through the model, prefix included
    padded_tokens: int = 0  # all positions run, padding included
    prefix_tokens: int = 0  # tokens of the shared prefix (run once per teacher when the cache is on)
    texts: int = 0
    seconds: float = 0.0

    def per_text(self) -> dict[str, float]:
        n = max(self.texts, 1)
        return {
            "forward_passes": self.forward_passes / n,
            "tokens": self.tokens / n,
            "padded_tokens": self.padded_tokens / n,
            "seconds": self.seconds / n,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _load_causal_lm(folder: Path, device: str, dtype: torch.dtype) -> PreTrainedModel:
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except (OSError, ValueError) as err:
        raise TeacherError(
            f"{folder}: cannot load a causal LM ({err}); fix: pass a causal LM folder"
        ) from None
    return model.to(device).eval()


def _expanded_cache(prefix_kv: list[tuple[torch.Tensor, torch.Tensor]], rows: int) -> DynamicCache:
    """A DynamicCache whose layers VIEW the one-row prefix cache ``rows`` times (``expand``, no copy).

    The model concatenates new keys onto these views, which allocates the batch's own tensors, so the
    shared prefix cache itself is never written to.
    """
    empty = [
        (k[:, :, :0].expand(rows, -1, -1, -1), v[:, :, :0].expand(rows, -1, -1, -1)) for k, v in prefix_kv
    ]
    cache = DynamicCache(ddp_cache_data=empty)
    for layer, (k, v) in zip(cache.layers, prefix_kv, strict=True):
        layer.keys = k.expand(rows, -1, -1, -1)
        layer.values = v.expand(rows, -1, -1, -1)
    if cache.get_seq_length() != prefix_kv[0][0].shape[-2]:  # a transformers version with other internals
        cache = DynamicCache(
            ddp_cache_data=[(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in prefix_kv]
        )
    return cache


class LLMTeacher:
    """A local causal LM as a :class:`~rationalign.teachers.base.Teacher` (see the module docstring).

    ``model``: a shipped short name (``"smollm2-135m"``), a local HF folder, or a loaded
    ``PreTrainedModel`` (then pass ``tokenizer``). ``examples``: in-context examples; with ``shots`` (per
    label) and/or ``example_budget`` (in all) they are sampled from it (seeded), else all are used as given.
    """

    def __init__(
        self,
        model: str | Path | PreTrainedModel = "smollm2-135m",
        label_space: LabelSpace | None = None,
        *,
        mode: Mode = "codes",
        examples: IntentDataset | Sequence[Example] | None = None,
        shots: int | None = None,
        example_budget: int | None = None,
        seed: int = 0,
        format: Format = "auto",
        instruction: str = DEFAULT_INSTRUCTION,
        code_style: CodeStyle = "mnemonic",
        length_normalise: bool = False,
        batch_size: int = 16,
        device: str = "cpu",
        use_prefix_cache: bool = True,
        max_cache_mb: float = 768.0,
        tokenizer: Any = None,
        dtype: torch.dtype = torch.float32,
        max_text_tokens: int | None = 256,
    ):
        if label_space is None:
            raise TeacherError("LLMTeacher needs a label space; fix: pass label_space=LabelSpace([...])")
        if batch_size < 1:
            raise TeacherError(
                f"batch_size must be at least 1, got {batch_size}; fix: pass a positive batch size"
            )
        self.label_space = label_space
        self.mode: Mode = mode
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.use_prefix_cache = use_prefix_cache
        self.max_cache_mb = max_cache_mb
        self.length_normalise = length_normalise
        self.max_text_tokens = max_text_tokens
        if isinstance(model, PreTrainedModel):
            if tokenizer is None:
                raise TeacherError("a model object needs its tokenizer; fix: pass tokenizer=...")
            self.model = model.to(self.device).eval()
            self.model_folder: Path | None = None
            self.model_name = getattr(model.config, "_name_or_path", "") or type(model).__name__
        else:
            folder = resolve_model(model)
            self.model_folder = folder
            self.model_name = str(model)
            self.model = _load_causal_lm(folder, str(self.device), dtype)
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(folder)
        if isinstance(tokenizer, str | Path):
            tokenizer = AutoTokenizer.from_pretrained(resolve_model(tokenizer))
        self.tokenizer = tokenizer
        chosen: list[Example] = []
        if examples is not None:
            if shots is not None or example_budget is not None:
                chosen = select_examples(examples, label_space, shots=shots, budget=example_budget, seed=seed)
            else:
                chosen = list(examples)
        self.prompt: BuiltPrompt = PromptBuilder(
            tokenizer,
            label_space,
            mode=mode,
            format=format,
            instruction=instruction,
            examples=chosen,
            code_style=code_style,
        ).build()
        self.prefix_ids: list[int] = encode_prompt_start(tokenizer, self.prompt.prefix)
        if self.prompt.codes is not None:
            self.code_ids = torch.tensor(self.prompt.codes.token_ids, dtype=torch.long)
        self._answer_ids = [self._encode(a) for a in self.prompt.answer_texts]
        self._prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._fingerprint: str | None = None
        self.cost = TeacherCost()
        self.cost.prefix_tokens = len(self.prefix_ids)

    # ------------------------------------------------------------------------------------ helpers
    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def suffix_ids(self, text: str) -> list[int]:
        return self._encode(self.prompt.suffix(clip_text(self.tokenizer, text, self.max_text_tokens)))

    def prompt_ids(self, text: str) -> list[int]:
        """The full prompt's token ids for one utterance (prefix + suffix)."""
        return self.prefix_ids + self.suffix_ids(text)

    def reset_cost(self) -> None:
        self.cost = TeacherCost(prefix_tokens=len(self.prefix_ids))

    def _count(self, real: int, padded: int) -> None:
        self.cost.forward_passes += 1
        self.cost.tokens += real
        self.cost.padded_tokens += padded

    def _kv_bytes_per_token(self) -> int:
        cfg = self.model.config.get_text_config()
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return 2 * cfg.num_hidden_layers * heads * head_dim * self.model.dtype.itemsize

    def _rows_per_call(self, context_tokens: int, wanted: int) -> int:
        """Cap a batch so its materialised KV cache (rows x context) stays under ``max_cache_mb``."""
        per_row = self._kv_bytes_per_token() * max(context_tokens, 1)
        return max(1, min(wanted, int(self.max_cache_mb * 2**20 // per_row)))

    def _ensure_prefix(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self._prefix_kv is None:
            ids = torch.tensor([self.prefix_ids], device=self.device)
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
            self._count(len(self.prefix_ids), len(self.prefix_ids))
            self._prefix_kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        return self._prefix_kv

    def _right_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        return ids.to(self.device), mask.to(self.device), lengths

    def _last_logits(
        self, suffixes: list[list[int]], *, keep_cache: bool = False
    ) -> tuple[torch.Tensor, DynamicCache | None]:
        """Next-token logits [rows, V] at each row's last real token, for prefix + suffix (cached or not)."""
        if self.use_prefix_cache or keep_cache:
            prefix_kv = self._ensure_prefix()
            ids, mask, lengths = self._right_pad(suffixes)
            prefix_len = prefix_kv[0][0].shape[-2]
            full_mask = torch.cat(
                [torch.ones(len(suffixes), prefix_len, dtype=torch.long, device=self.device), mask], 1
            )
            cache = _expanded_cache(prefix_kv, len(suffixes))
            last = lengths - 1
        else:
            ids, full_mask, lengths = self._right_pad([self.prefix_ids + s for s in suffixes])
            cache, last = None, lengths - 1
        # Only the positions that some row reads go through the LM head (logits_to_keep).
        keep = torch.unique(last)
        out = self.model(
            input_ids=ids,
            attention_mask=full_mask,
            past_key_values=cache,
            use_cache=keep_cache,
            logits_to_keep=keep.to(self.device),
        )
        self._count(int(lengths.sum()), int(ids.numel()))
        column = torch.searchsorted(keep, last)
        logits = out.logits[torch.arange(len(suffixes)), column.to(self.device)].float()
        return logits, (out.past_key_values if keep_cache else None)

    # ------------------------------------------------------------------------------------ scoring
    def predict_log_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Log-probabilities over the label space, ``[n, |Y|]`` (CAP's targets use these)."""
        texts = list(texts)
        n = len(texts)
        out = np.zeros((n, len(self.label_space)), dtype=np.float64)
        if n == 0:
            return out
        start_time = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                suffixes = [self.suffix_ids(t) for t in texts]
                # Sort by length so a batch's rows have similar lengths (little padding).
                order = np.argsort([len(s) for s in suffixes], kind="stable")
                context = len(self.prefix_ids) + max(len(s) for s in suffixes)
                step = self._rows_per_call(context, self.batch_size)
                for begin in range(0, n, step):
                    idx = order[begin : begin + step]
                    batch = [suffixes[i] for i in idx]
                    if self.mode == "codes":
                        logits, _ = self._last_logits(batch)
                        scores = torch.log_softmax(logits[:, self.code_ids.to(self.device)], dim=-1)
                    else:
                        scores = self._label_text_scores(batch)
                    out[idx] = scores.double().cpu().numpy()
        finally:
            self.model.train(was_training)
        self.cost.texts += n
        self.cost.seconds += time.perf_counter() - start_time
        return out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        logp = self.predict_log_proba(texts)
        probs = np.exp(logp)
        return probs / probs.sum(axis=1, keepdims=True)

    def _label_text_scores(self, suffixes: list[list[int]]) -> torch.Tensor:
        """[rows, |Y|] log-softmax over labels of each label text's (normalised) log-likelihood."""
        first_logits, cache = self._last_logits(suffixes, keep_cache=True)
        first_logp = torch.log_softmax(first_logits, dim=-1)
        answers = self._answer_ids
        n_labels = len(answers)
        prefix_len = len(self.prefix_ids)
        rows = []
        for r, suffix in enumerate(suffixes):
            context = prefix_len + len(suffix)
            # This row's cache without the suffix padding after its last real token.
            row_kv = [
                (layer.keys[r : r + 1, :, :context], layer.values[r : r + 1, :, :context])
                for layer in cache.layers
            ]
            totals = torch.zeros(n_labels, dtype=torch.float64)
            chunk = self._rows_per_call(context + max(len(a) for a in answers), n_labels)
            for lo in range(0, n_labels, chunk):
                group = list(range(lo, min(lo + chunk, n_labels)))
                # Feed all answer tokens but the last; their logits predict tokens 2..m.
                heads = [answers[j][:-1] or [answers[j][0]] for j in group]
                ids, mask, lengths = self._right_pad(heads)
                full_mask = torch.cat(
                    [torch.ones(len(group), context, dtype=torch.long, device=self.device), mask], 1
                )
                out = self.model(
                    input_ids=ids,
                    attention_mask=full_mask,
                    past_key_values=_expanded_cache(row_kv, len(group)),
                    use_cache=False,
                )
                self._count(int(lengths.sum()), int(ids.numel()))
                logp = torch.log_softmax(out.logits.float(), dim=-1)
                for k, j in enumerate(group):
                    ans = answers[j]
                    total = float(first_logp[r, ans[0]])
                    for t in range(1, len(ans)):
                        total += float(logp[k, t - 1, ans[t]])
                    totals[j] = total / len(ans) if self.length_normalise else total
            rows.append(torch.log_softmax(totals, dim=0))
        return torch.stack(rows)

    # ------------------------------------------------------------------------------------ identity
    def weights_digest(self) -> str:
        if self.model_folder is not None:
            return weights_hash(self.model_folder)
        return module_weights_hash(self.model)

    @property
    def fingerprint(self) -> str:
        # The prompt part is fixed at construction; the weights part is re-read (cheap: memoised by
        # file stamps for a folder, by tensor versions for an in-memory model).
        if self._fingerprint is None:
            spec = {
                "kind": "llm",
                "prompt": self.prompt.describe(),
                "prefix_ids": hashlib.sha256(json.dumps(self.prefix_ids).encode()).hexdigest(),
                "mode": self.mode,
                "length_normalise": self.length_normalise,
                "max_text_tokens": self.max_text_tokens,
                "dtype": str(self.model.dtype),
            }
            self._fingerprint = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        return hashlib.sha256(f"{self._fingerprint}:{self.weights_digest()}".encode()).hexdigest()

    def __repr__(self) -> str:
        return f"LLMTeacher({self.model_name!r}, {len(self.label_space)} labels, mode={self.mode!r})"
