"""Resumable checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint folder holds ``model.safetensors`` (the trainable weights), ``optimizer.safetensors``
(AdamW moments and step counts), ``rng.safetensors`` (torch RNG) and ``state.json`` (loop position,
scheduler, best score, history, python/numpy RNG). It is written to a temporary folder and renamed, so a
kill at any instant leaves either the previous checkpoint or the new one, never a half-written mix.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_DIR = "checkpoint"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = optimizer.state_dict()
    tensors = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{pid}.{key}"] = t.detach().cpu().contiguous()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def _optimizer_state(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loop_state: dict[str, Any],
) -> Path:
    final = run_dir / CHECKPOINT_DIR
    tmp = run_dir / f"{CHECKPOINT_DIR}.tmp"
    old = run_dir / f"{CHECKPOINT_DIR}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(_dedupe_shared(weights), str(tmp / "model.safetensors"))
    opt_tensors, groups = _optimizer_tensors(optimizer)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"cuda{i}"] = s
    save_file(rng, str(tmp / "rng.safetensors"))
    np_state = np.random.get_state()
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    state = {
        **loop_state,
        "optimizer_param_groups": groups,
        "scheduler": sched,
        "python_rng": _jsonable(random.getstate()),
        "numpy_rng": [np_state[0], np_state[1].tolist(), *map(_jsonable, np_state[2:])],
    }
    (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(run_dir: Path) -> Path | None:
    for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.old"):
        path = run_dir / name
        if (path / "state.json").is_file():
            return path
    return None


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    weights = load_file(str(path / "model.safetensors"))
    model.load_state_dict(weights, strict=False)
    opt = _optimizer_state(
        load_file(str(path / "optimizer.safetensors")), state.pop("optimizer_param_groups")
    )
    optimizer.load_state_dict(opt)
    sched = scheduler.state_dict()
    sched.update(state.pop("scheduler"))
    scheduler.load_state_dict(sched)
    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available():
        cuda = [rng[k] for k in sorted(rng) if k.startswith("cuda")]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    random.setstate(_tupled(state.pop("python_rng")))
    np_rng = state.pop("numpy_rng")
    np.random.set_state((np_rng[0], np.asarray(np_rng[1], dtype=np.uint32), *np_rng[2:]))
    return state


def _dedupe_shared(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory (tied embeddings); clone so each entry owns its data.
    seen: set[int] = set()
    out = {}
    for k, v in weights.items():
        ptr = v.data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, tuple | list):
        return [_jsonable(x) for x in obj]
    return obj


def _tupled(obj: Any) -> Any:
    if isinstance(obj, list):
        return tuple(_tupled(x) for x in obj)
    return obj
