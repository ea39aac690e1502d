"""Serving and export: a FastAPI server with micro-batching and explanations, and ONNX export.

Heavy modules (FastAPI, onnxruntime, torch) load on first use of a name, so ``import rationalign.serving``
stays cheap for the CLI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create_app": "rationalign.serving.app",
    "MicroBatcher": "rationalign.serving.batching",
    "QueueFull": "rationalign.serving.batching",
    "ShuttingDown": "rationalign.serving.batching",
    "RequestTimeout": "rationalign.serving.batching",
    "export_onnx": "rationalign.serving.onnx_export",
    "export_model": "rationalign.serving.onnx_export",
    "load_backend": "rationalign.serving.backends",
    "TorchBackend": "rationalign.serving.backends",
    "OnnxBackend": "rationalign.serving.backends",
    "Explainer": "rationalign.serving.explain",
    "register": "rationalign.serving.commands",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rationalign.serving' has no attribute {name!r}")
