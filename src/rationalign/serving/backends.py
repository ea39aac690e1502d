"""Inference backends the server runs: PyTorch (the saved model) or ONNX Runtime (an exported model).

Both turn texts into raw logits ``[n, C]``; calibration (``softmax(logits / temperature)``) and abstention
are applied the same way on top, from the model folder's ``rationalign.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from rationalign.data.types import LABEL_SPACE_FILE, LabelSpace
from rationalign.errors import ModelError
from rationalign.models.classifier import META_FILE, IntentClassifier

BackendName = Literal["torch", "onnx", "onnx-int8"]
BACKENDS: tuple[str, ...] = ("torch", "onnx", "onnx-int8")
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class Backend(Protocol):
    """What the server needs from a model: logits for texts, the label space and the calibration."""

    name: str
    model_name: str
    label_space: LabelSpace
    temperature: float
    abstain_threshold: float | None

    def logits(self, texts: Sequence[str]) -> np.ndarray: ...


def calibrated(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(logits / temperature)`` row-wise, computed stably in float64."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _model_name(folder: Path | None, meta: dict) -> str:
    if folder is not None:
        return folder.resolve().name
    return str(meta.get("base_model") or "in-memory model")


class TorchBackend:
    """The :class:`IntentClassifier` itself (eval mode, no grad)."""

    name = "torch"

    def __init__(self, classifier: IntentClassifier, folder: Path | None = None):
        self.classifier = classifier
        self.classifier.model.eval()
        self.folder = folder
        self.model_name = _model_name(folder, classifier.meta)
        self.label_space = classifier.label_space

    @property
    def temperature(self) -> float:
        return self.classifier.temperature

    @property
    def abstain_threshold(self) -> float | None:
        return self.classifier.abstain_threshold

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        # One forward pass for the whole micro-batch: the batcher already bounded its size.
        return self.classifier.logits(texts, batch_size=max(1, len(texts))).numpy()


class OnnxBackend:
    """An exported ``model.onnx`` (or ``model.int8.onnx``) run by ONNX Runtime on the CPU."""

    def __init__(self, folder: str | Path, *, int8: bool = False, threads: int | None = None):
        import onnxruntime as ort

        self.folder = Path(folder)
        self.name = "onnx-int8" if int8 else "onnx"
        path = self.folder / (ONNX_INT8_FILE if int8 else ONNX_FILE)
        if not path.is_file():
            flag = "--onnx --int8" if int8 else "--onnx"
            raise ModelError(
                f"{path}: no such ONNX model; fix: run `rationalign export MODEL --out {self.folder} {flag}` "
                "and serve that folder"
            )
        if not (self.folder / META_FILE).is_file() or not (self.folder / LABEL_SPACE_FILE).is_file():
            raise ModelError(
                f"{self.folder}: no {META_FILE} / {LABEL_SPACE_FILE} next to the ONNX model; "
                "fix: export with `rationalign export` (it copies them)"
            )
        meta = json.loads((self.folder / META_FILE).read_text(encoding="utf-8"))
        self.meta = meta
        self.label_space = LabelSpace.load(self.folder)
        self.pooling = meta.get("pooling", "cls")
        self.max_length = int(meta.get("max_length", 64))
        self.temperature = float(meta.get("temperature", 1.0))
        self.abstain_threshold = meta.get("abstain_threshold")
        self.model_name = _model_name(self.folder, meta)
        self.tokenizer = IntentClassifier._load_tokenizer(self.folder, self.pooling == "last")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        n_out = self.session.get_outputs()[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.label_space):
            raise ModelError(
                f"{path}: {n_out} outputs but {len(self.label_space)} labels; fix: export the model again"
            )

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
        )
        return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask") if k in self.input_names}

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, len(self.label_space)), dtype=np.float32)
        return self.session.run(["logits"], self.encode(texts))[0]


def has_torch_weights(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / "config.json").is_file() and any((folder / f).is_file() for f in WEIGHT_FILES)


def load_backend(
    source: str | Path | IntentClassifier, backend: str = "torch", *, threads: int | None = None
) -> Backend:
    """A backend for a model folder (or an in-memory classifier, torch only)."""
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}; fix: choose one of {', '.join(BACKENDS)}")
    if isinstance(source, IntentClassifier):
        if backend != "torch":
            raise ModelError(
                "an in-memory classifier runs on the torch backend; fix: export it and pass the folder"
            )
        return TorchBackend(source)
    folder = Path(source)
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder; fix: pass a folder written by `rationalign train`")
    if backend == "torch":
        if not has_torch_weights(folder):
            raise ModelError(
                f"{folder}: no PyTorch weights (config.json + model.safetensors); fix: serve it with --backend onnx"
            )
        return TorchBackend(IntentClassifier.load(folder), folder)
    return OnnxBackend(folder, int8=backend == "onnx-int8", threads=threads)
