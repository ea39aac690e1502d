"""Seeded per-label sampling: k-shot training sets and stratified hold-out splits.

Each label draws from its own ``numpy.random.Generator`` seeded by ``(seed, sha256(label), purpose)``. So the
examples picked for one label do not depend on which other labels exist or in which order they come,
and for a fixed seed the k=5 sample is contained in the k=10 sample (both are prefixes of the same
permutation), which keeps few-shot learning curves comparable. Results keep the original order
(sorted by index in the source dataset), so the output is stable and easy to diff.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict

import numpy as np

from rationalign.data.types import IntentDataset
from rationalign.errors import DataError, located

_K_SHOT, _HOLD_OUT = 0, 1  # salts: a hold-out split and a k-shot sample with one seed draw independently


def _label_rng(seed: int, label: str, purpose: int) -> np.random.Generator:
    label_key = int.from_bytes(hashlib.sha256(label.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([seed, label_key, purpose]))


def _indices_by_label(ds: IntentDataset) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, example in enumerate(ds):
        groups[example.label].append(i)
    return dict(groups)


def _where(ds: IntentDataset) -> str:
    return str(ds.path) if ds.path is not None else ds.name


def sample_k_shot(ds: IntentDataset, k: int, seed: int = 0, *, allow_fewer: bool = False) -> IntentDataset:
    """Pick ``k`` examples per label, seeded and deterministic, in the original order.

    Raises :class:`DataError` when a label has fewer than ``k`` examples, unless ``allow_fewer`` is set
    (then such labels keep all their examples).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    groups = _indices_by_label(ds)
    short = {label: len(idx) for label, idx in groups.items() if len(idx) < k}
    if short and not allow_fewer:
        worst = sorted(short.items(), key=lambda item: (item[1], item[0]))
        shown = ", ".join(f"{label!r} has {n}" for label, n in worst[:3]) + (
            ", ..." if len(worst) > 3 else ""
        )
        raise DataError(
            located(
                _where(ds),
                None,
                f"{len(short)} label(s) have fewer than k={k} examples ({shown})",
                f"lower k to {min(short.values())} or sample with allow_fewer=True",
            )
        )
    chosen: list[int] = []
    for label in sorted(groups):
        indices = np.asarray(groups[label])
        order = _label_rng(seed, label, _K_SHOT).permutation(len(indices))
        chosen.extend(indices[order[:k]].tolist())
    chosen.sort()
    sample = ds.subset(chosen, name=f"{ds.name}[k={k},seed={seed}]")
    sample.meta.update({"k_shot": k, "seed": seed, "sampled_from": ds.name, "source_indices": chosen})
    return sample


def stratified_split(
    ds: IntentDataset, fraction: float, seed: int = 0
) -> tuple[IntentDataset, IntentDataset]:
    """Split off about ``fraction`` of every label as a hold-out set: returns ``(rest, held_out)``.

    Each label with at least two examples gives ``max(1, round(fraction * n))`` examples, but always
    leaves at least one in ``rest``; a label with a single example stays in ``rest``. Both parts keep
    the original order.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    held: list[int] = []
    for label, indices in sorted(_indices_by_label(ds).items()):
        n = len(indices)
        if n < 2:
            continue
        n_held = min(n - 1, max(1, math.floor(fraction * n + 0.5)))
        order = _label_rng(seed, label, _HOLD_OUT).permutation(n)
        held.extend(np.asarray(indices)[order[:n_held]].tolist())
    held_set = set(held)
    rest = [i for i in range(len(ds)) if i not in held_set]
    held.sort()
    return ds.subset(rest, name=f"{ds.name}[rest]"), ds.subset(held, name=f"{ds.name}[held-out]")
