"""Numeric precision of forward passes: float32, or bfloat16 autocast with float32 weights.

Under ``bfloat16`` autocast, matrix products run in bfloat16 while weights, optimizer state, losses and
softmaxes stay float32 (torch's autocast op lists). On CPUs with AVX512-BF16 or AMX this is where most of
the time goes: on this project's 2-core AMD EPYC, training ran 2.1x (MiniLM-L6) to 2.8x (MPNet-base)
faster and batched inference 2.9-3.3x, at the same accuracy (bench/throughput.py, bench/student_ce.py).
On CPUs without those instructions bfloat16 is emulated and slower; keep float32 there.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Literal

import torch

Precision = Literal["float32", "bfloat16"]
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16")


def check_precision(precision: str) -> Precision:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    return precision  # type: ignore[return-value]


def autocast(device: torch.device | str, precision: str) -> AbstractContextManager:
    """A context in which the model's forward pass runs at ``precision`` (a no-op for float32)."""
    check_precision(precision)
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bfloat16")
