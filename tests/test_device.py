"""rationalign.device: every place that names a device resolves it the same way."""

import pytest
import torch

from rationalign.device import resolve_device
from rationalign.errors import ConfigError


def test_cpu_and_auto_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"device 'cuda', but torch sees no GPU; fix: "):
        resolve_device("cuda")


def test_auto_and_indices_with_one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(
        ConfigError, match=r"device 'cuda:1', but torch sees 1 GPU\(s\); fix: use cuda:0..cuda:0"
    ):
        resolve_device("cuda:1")


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:", "cuda:x", "mps", ""])
def test_unknown_names_are_config_errors(name):
    with pytest.raises(ConfigError, match="is not a device name; fix: use auto, cpu or cuda"):
        resolve_device(name)
