"""Where a model runs: ``auto`` (cuda when torch sees a GPU, else cpu), ``cpu`` or ``cuda[:i]``.

One resolver for every place a device is named (a student's or teacher's config, a teacher spec's
``?device=``), so ``auto`` means the same everywhere and ``cuda`` on a machine without a GPU is a one-line
error instead of a CUDA traceback in the middle of a run.
"""

from __future__ import annotations

import re

import torch

from rationalign.errors import ConfigError

DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"


def resolve_device(name: str) -> torch.device:
    """``auto``: cuda when torch sees a GPU, else cpu. An unknown name, or cuda where there is none, is a
    ``ConfigError``."""
    if not re.fullmatch(DEVICE_PATTERN, name):
        raise ConfigError(f"device {name!r} is not a device name; fix: use auto, cpu or cuda[:i]")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r}, but torch sees no GPU; fix: device: auto or cpu")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {name!r}, but torch sees {torch.cuda.device_count()} GPU(s); "
                f"fix: use cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    return torch.device(name)
