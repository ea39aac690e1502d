"""Export a saved classifier to ONNX (fp32, optionally dynamic int8) for ONNX Runtime serving.

The export folder is self-contained: ``model.onnx`` (+ ``model.int8.onnx``) next to copies of the tokenizer,
``label_space.json``, ``rationalign.json`` (temperature, abstain threshold, max length) and, unless
``copy_weights=False``, the PyTorch weights, which ``/explain`` needs for gradients. ``onnx.json`` records
how the graph was made and how closely it matched PyTorch on probe sentences.

We use the TorchScript exporter (``dynamo=False``): the dynamo exporter needs ``onnxscript``, which the
project does not install, and the traced graph matches PyTorch to ~1e-7 on our encoders.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from rationalign.errors import ConfigError, ModelError
from rationalign.models.classifier import META_FILE, IntentClassifier
from rationalign.serving.backends import ONNX_FILE, ONNX_INT8_FILE, WEIGHT_FILES, OnnxBackend

OPSET = 17
EXPORT_META_FILE = "onnx.json"
# Fixed probe sentences: different lengths so verification exercises padding and the dynamic axes.
PROBE_TEXTS = (
    "I still have not received my new card, when will it arrive?",
    "top up failed",
    "Why was I charged an extra fee for a transfer to another country last week?",
    "exchange rate",
    "Can I use Apple Pay with my card and how do I set it up?",
    "hi",
)
FP32_TOLERANCE = 1e-3  # max |logit difference| we accept before calling an export broken


@dataclass
class ExportResult:
    out_dir: Path
    onnx_path: Path | None = None
    int8_path: Path | None = None
    max_abs_diff: float | None = None  # fp32 ONNX vs PyTorch logits on PROBE_TEXTS
    int8_argmax_agreement: float | None = None  # share of PROBE_TEXTS where int8 and PyTorch agree
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


class _LogitsOnly(torch.nn.Module):
    """ONNX wants tensors out, not a ``SequenceClassifierOutput``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def _check_out_dir(model_dir: Path, out_dir: Path) -> None:
    if out_dir.resolve() == model_dir.resolve():
        raise ConfigError(f"{out_dir}: --out is the model folder itself; fix: choose a new folder")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ConfigError(f"{out_dir}: exists and is not a folder; fix: choose a new --out")
        if any(out_dir.iterdir()) and not (out_dir / META_FILE).is_file():
            # Never delete a folder we did not write: only a previous export may be replaced.
            raise ConfigError(
                f"{out_dir}: exists and is not a model folder; fix: choose a new or empty --out"
            )


def _copy_model_files(model_dir: Path, dest: Path, copy_weights: bool) -> None:
    for item in sorted(model_dir.iterdir()):
        if not item.is_file() or item.suffix == ".onnx" or item.name == EXPORT_META_FILE:
            continue
        if not copy_weights and item.name in WEIGHT_FILES:
            continue
        shutil.copy2(item, dest / item.name)


def _trace_to_onnx(clf: IntentClassifier, path: Path, opset: int) -> None:
    model = _LogitsOnly(clf.model).eval()
    # Trace with a padded batch of two, so the graph keeps the masking path used for real batches.
    sample = clf.encode(list(PROBE_TEXTS[:2]))
    args = (sample["input_ids"], sample["attention_mask"])
    dynamic = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "sequence"},
        "logits": {0: "batch"},
    }
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about Python branches on shapes; verified below
        torch.onnx.export(
            model,
            args,
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    clf.model.eval()  # export restores the wrapper's (train) mode on the whole tree; keep eval


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of the weights, per output channel (activations quantised at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with warnings.catch_warnings(), tempfile.TemporaryDirectory(dir=dst.parent) as scratch:
        warnings.simplefilter("ignore")
        # ORT's recommended pre-pass (shape inference + graph optimisation) before quantising.
        prepared = Path(scratch) / "prepared.onnx"
        try:
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        except Exception:  # the pre-pass is an optimisation; quantising the plain graph still works
            prepared = src
        # Per-channel scales: on MiniLM/Banking77 argmax agreement with fp32 rises from ~93% (per-tensor)
        # to ~98% at the same size and speed (bench/onnx_speed.py).
        quantize_dynamic(str(prepared), str(dst), weight_type=QuantType.QInt8, per_channel=True)


def export_model(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    onnx: bool = True,
    int8: bool = False,
    copy_weights: bool = True,
    opset: int = OPSET,
) -> ExportResult:
    """Copy a saved model to ``out_dir`` and, with ``onnx``/``int8``, add verified ONNX graphs.

    Written atomically: a temporary folder renamed into place, so a failed export leaves nothing behind.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    onnx = onnx or int8
    if not copy_weights and not onnx:
        raise ConfigError("an export without weights and without ONNX would be empty; fix: add --onnx")
    _check_out_dir(model_dir, out_dir)
    clf = IntentClassifier.load(model_dir)
    if onnx and clf.pooling == "last":
        # Causal LMs trace with their sequence length baked into reshapes (checked with transformers 4.57).
        raise ModelError(
            f"{model_dir}: ONNX export supports encoder students (BERT, MPNet, ...), not causal LMs; "
            "fix: serve this model with --backend torch"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    result = ExportResult(out_dir=out_dir)
    try:
        _copy_model_files(model_dir, tmp, copy_weights)
        meta: dict = {"source": str(model_dir.resolve()), "torch_version": torch.__version__}
        if onnx:
            import onnxruntime

            _trace_to_onnx(clf, tmp / ONNX_FILE, opset)
            reference = clf.logits(list(PROBE_TEXTS)).numpy()
            try:
                got = OnnxBackend(tmp).logits(list(PROBE_TEXTS))
            except Exception as err:  # onnxruntime's own errors: the graph does not generalise
                raise ModelError(
                    f"{model_dir}: the exported ONNX graph fails on new inputs ({type(err).__name__}); "
                    "fix: serve this model with --backend torch"
                ) from err
            result.max_abs_diff = float(np.abs(got - reference).max())
            if not result.max_abs_diff <= FP32_TOLERANCE:
                raise ModelError(
                    f"{model_dir}: the ONNX graph differs from PyTorch by {result.max_abs_diff:.2e} "
                    f"(> {FP32_TOLERANCE}); fix: serve this model with --backend torch"
                )
            meta.update(
                opset=opset, onnxruntime_version=onnxruntime.__version__, max_abs_diff=result.max_abs_diff
            )
            result.onnx_path = out_dir / ONNX_FILE
            if int8:
                quantize_int8(tmp / ONNX_FILE, tmp / ONNX_INT8_FILE)
                got8 = OnnxBackend(tmp, int8=True).logits(list(PROBE_TEXTS))
                result.int8_argmax_agreement = float((got8.argmax(1) == reference.argmax(1)).mean())
                meta.update(
                    int8="dynamic, QInt8 weights per channel",
                    int8_probe_argmax_agreement=result.int8_argmax_agreement,
                )
                result.int8_path = out_dir / ONNX_INT8_FILE
            (tmp / EXPORT_META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        result.files = sorted(p.name for p in tmp.iterdir())
        tmp.chmod(0o755)  # mkdtemp makes it private; an export is meant to be shipped
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def export_onnx(model_dir: str | Path, out_dir: str | Path, int8: bool = False) -> ExportResult:
    """``model.onnx`` (+ ``model.int8.onnx``) with dynamic batch and sequence axes, opset 17, verified."""
    return export_model(model_dir, out_dir, onnx=True, int8=int8)
