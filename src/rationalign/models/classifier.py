"""``IntentClassifier``: a sequence classifier with its tokenizer, label space and calibration.

Saved in Hugging Face layout (config.json, model.safetensors, tokenizer files) plus ``label_space.json``
and ``rationalign.json`` (pooling, max length, temperature, abstain threshold, provenance).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rationalign import __version__
from rationalign.data.types import LABEL_SPACE_FILE, LabelSpace
from rationalign.errors import ModelError
from rationalign.files import atomic_write_text
from rationalign.models.mean_pooling import CLASS_NAME, MODELING_FILE, mean_pooled_class, modeling_source
from rationalign.models.resolver import resolve_model, weights_hash
from rationalign.precision import Precision, autocast, check_precision

META_FILE = "rationalign.json"
Pooling = Literal["mean", "cls", "last"]
CAUSAL_TYPES = {"llama", "mistral", "qwen2", "gpt2", "gpt_neox", "phi", "phi3", "gemma", "gemma2", "smollm3"}


@dataclass
class Prediction:
    label: str
    probability: float
    probs: np.ndarray
    abstained: bool = False


def _label_maps(space: LabelSpace) -> dict[str, Any]:
    return {
        "num_labels": len(space),
        "id2label": dict(enumerate(space.names)),
        "label2id": {n: i for i, n in enumerate(space.names)},
    }


def _is_causal(config) -> bool:
    return config.model_type in CAUSAL_TYPES or bool(config.is_decoder)


def _quiet_load(fn, *args, **kwargs):
    # "Some weights were not initialized" is expected for a new head; keep the console readable.
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)
    finally:
        hf_logging.set_verbosity(level)


class IntentClassifier:
    """A fine-tunable text classifier: ``model`` (HF, sequence-classification head) + ``tokenizer``."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        label_space: LabelSpace,
        *,
        pooling: Pooling = "mean",
        max_length: int = 64,
        temperature: float = 1.0,
        abstain_threshold: float | None = None,
        meta: dict | None = None,
        precision: Precision = "float32",
    ):
        if model.config.num_labels != len(label_space):
            raise ModelError(
                f"model has {model.config.num_labels} outputs but the label space has {len(label_space)}; "
                "fix: train a model for this label space"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.label_space = label_space
        self.pooling = pooling
        self.max_length = max_length
        self.temperature = float(temperature)
        self.abstain_threshold = abstain_threshold
        self.meta = dict(meta or {})
        self.precision = precision

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_base(
        cls,
        base: str | Path,
        label_space: LabelSpace,
        *,
        pooling: Pooling | None = None,
        num_layers: int | None = None,
        max_length: int = 64,
        seed: int = 0,
    ) -> IntentClassifier:
        """A new classifier on a pretrained backbone (shipped short name or local HF folder)."""
        folder = resolve_model(base)
        config = AutoConfig.from_pretrained(folder)
        causal = _is_causal(config)
        pooling = pooling or ("last" if causal else "mean")
        if causal and pooling != "last":
            raise ModelError(f"{base}: a causal LM classifies from its last token; fix: use pooling='last'")
        if not causal and pooling == "last":
            raise ModelError(f"{base}: an encoder pools 'mean' or 'cls'; fix: choose one of those")
        config.update(_label_maps(label_space))
        if num_layers is not None:
            total = config.num_hidden_layers
            if not 1 <= num_layers <= total:
                raise ModelError(
                    f"{base}: num_layers={num_layers} but the model has {total}; fix: 1..{total}"
                )
            config.num_hidden_layers = num_layers
        tokenizer = cls._load_tokenizer(folder, causal)
        if causal:
            config.pad_token_id = tokenizer.pad_token_id
        torch.manual_seed(seed)  # the new head's initial weights
        model_cls = (
            mean_pooled_class(type(config).__name__)
            if pooling == "mean"
            else AutoModelForSequenceClassification
        )
        model = _quiet_load(model_cls.from_pretrained, folder, config=config)
        meta = {"base_model": str(base), "base_model_path": str(folder), "num_layers": num_layers}
        return cls(model, tokenizer, label_space, pooling=pooling, max_length=max_length, meta=meta)

    @classmethod
    def tiny(
        cls,
        label_space: LabelSpace,
        *,
        arch: Literal["bert", "mpnet", "llama"] = "bert",
        pooling: Pooling | None = None,
        hidden_size: int = 32,
        num_layers: int = 2,
        seed: int = 0,
        max_length: int = 32,
    ) -> IntentClassifier:
        """Random weights and a real tokenizer (from the shipped models): fast plumbing tests."""
        source = {"bert": "minilm-l6", "mpnet": "mpnet-base", "llama": "smollm2-135m"}[arch]
        folder = resolve_model(source)
        causal = arch == "llama"
        tokenizer = cls._load_tokenizer(folder, causal)
        base = AutoConfig.from_pretrained(folder)
        config = type(base)(
            vocab_size=base.vocab_size,
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=2,
            intermediate_size=hidden_size * 2,
            max_position_embeddings=max(max_length + 4, 64),
            **_label_maps(label_space),
        )
        if causal:
            config.num_key_value_heads = 2
            config.pad_token_id = tokenizer.pad_token_id
            config.tie_word_embeddings = False
        else:
            config.pad_token_id = base.pad_token_id
        pooling = pooling or ("last" if causal else "mean")
        torch.manual_seed(seed)
        model = (
            mean_pooled_class(type(config).__name__)(config)
            if pooling == "mean"
            else (AutoModelForSequenceClassification.from_config(config))
        )
        meta = {"base_model": f"tiny-{arch}", "base_model_path": None, "num_layers": num_layers}
        return cls(model, tokenizer, label_space, pooling=pooling, max_length=max_length, meta=meta)

    @staticmethod
    def _load_tokenizer(folder: Path, causal: bool) -> PreTrainedTokenizerBase:
        tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=True)
        if not tokenizer.is_fast:
            raise ModelError(
                f"{folder}: needs a fast tokenizer (tokenizer.json); fix: save one with transformers"
            )
        if causal:
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            # Left padding keeps the last real token at position -1, which is where a causal LM's
            # classification head reads, also when the model is called with inputs_embeds.
            tokenizer.padding_side = "left"
        return tokenizer

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path, card: str | None = None) -> Path:
        """Write the HF layout atomically (a temporary folder renamed into place)."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            config = self.model.config
            if self.pooling == "mean":
                config.auto_map = {
                    "AutoModelForSequenceClassification": f"{MODELING_FILE[:-3]}.{CLASS_NAME}",
                }
                config.architectures = [CLASS_NAME]
                (tmp / MODELING_FILE).write_text(modeling_source(type(config).__name__), encoding="utf-8")
            self.model.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            self.label_space.save(tmp)
            meta = {
                **self.meta,
                "rationalign_version": __version__,
                "pooling": self.pooling,
                "max_length": self.max_length,
                "temperature": self.temperature,
                "abstain_threshold": self.abstain_threshold,
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=1, default=str) + "\n", encoding="utf-8")
            if card is not None:
                (tmp / "README.md").write_text(card, encoding="utf-8")
            if directory.exists():
                shutil.rmtree(directory)
            tmp.rename(directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    def save_meta(self, directory: str | Path) -> None:
        """Rewrite only ``rationalign.json`` (temperature, threshold) of a saved model."""
        path = Path(directory) / META_FILE
        meta = json.loads(path.read_text(encoding="utf-8"))
        meta.update(temperature=self.temperature, abstain_threshold=self.abstain_threshold, **self.meta)
        atomic_write_text(path, json.dumps(meta, indent=1, default=str) + "\n")

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> IntentClassifier:
        directory = Path(directory)
        if not (directory / META_FILE).is_file() or not (directory / LABEL_SPACE_FILE).is_file():
            raise ModelError(
                f"{directory}: not a rationalign model (no {META_FILE} / {LABEL_SPACE_FILE}); "
                "fix: pass a folder written by `rationalign train`"
            )
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        label_space = LabelSpace.load(directory)
        config = AutoConfig.from_pretrained(directory)
        pooling = meta.get("pooling", "cls")
        model_cls = (
            mean_pooled_class(type(config).__name__)
            if pooling == "mean"
            else AutoModelForSequenceClassification
        )
        model = _quiet_load(model_cls.from_pretrained, directory, config=config)
        tokenizer = cls._load_tokenizer(directory, pooling == "last")
        known = {"pooling", "max_length", "temperature", "abstain_threshold", "rationalign_version"}
        clf = cls(
            model,
            tokenizer,
            label_space,
            pooling=pooling,
            max_length=int(meta.get("max_length", 64)),
            temperature=float(meta.get("temperature", 1.0)),
            abstain_threshold=meta.get("abstain_threshold"),
            meta={k: v for k, v in meta.items() if k not in known},
        )
        clf.to(device)
        clf.model.eval()
        return clf

    # ------------------------------------------------------------------ inference
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> IntentClassifier:
        self.model.to(device)
        return self

    @property
    def precision(self) -> Precision:
        """``float32`` or ``bfloat16`` (autocast) for every forward pass. A run-time choice, never saved:
        weights stay float32 and a saved model loads as float32."""
        return self._precision

    @precision.setter
    def precision(self, value: Precision) -> None:
        self._precision = check_precision(value)

    def autocast(self):
        """The context every forward pass of this classifier runs in (bfloat16 autocast or a no-op)."""
        return autocast(self.device, self.precision)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def weights_fingerprint(self) -> str:
        """sha256 over the parameters (in memory): changes whenever the weights do."""
        import hashlib

        h = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        keep = ("input_ids", "attention_mask")
        return {k: v.to(self.device) for k, v in batch.items() if k in keep}

    def logits(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Raw logits in input order; batches sorted by length so padding costs little."""
        texts = list(texts)
        if not texts:
            return torch.zeros(0, len(self.label_space))
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = torch.empty(len(texts), len(self.label_space))
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode(), self.autocast():
            for start in range(0, len(texts), batch_size):
                idx = order[start : start + batch_size]
                batch = self.encode([texts[i] for i in idx])
                out[torch.as_tensor(idx)] = self.model(**batch).logits.float().cpu()
        self.model.train(was_training)
        return out

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        logits = self.logits(texts, batch_size)
        return torch.softmax(logits / self.temperature, dim=-1).numpy()

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> list[Prediction]:
        probs = self.predict_proba(texts, batch_size)
        preds = []
        for row in probs:
            i = int(row.argmax())
            abstain = self.abstain_threshold is not None and float(row[i]) < self.abstain_threshold
            preds.append(Prediction(self.label_space.name(i), float(row[i]), row, abstain))
        return preds

    def base_model_hash(self) -> str | None:
        path = self.meta.get("base_model_path")
        return weights_hash(path) if path else None
