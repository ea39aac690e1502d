"""Word-level attribution priors: one word segmentation, and methods that score each word.

Every method follows ``attribute(texts, targets) -> list[WordAttribution]`` (see :mod:`.base`); words come
from :mod:`.words`. ``ShapPrior`` lives in :mod:`.shap_prior` (optional dependency, imported lazily).
"""

from rationalign.attribution.attention import AttentionPrior
from rationalign.attribution.base import Attributor, WordAttribution, normalise
from rationalign.attribution.cap import CAPPrior
from rationalign.attribution.gradient import GradientXInput, gradient_x_input_tokens
from rationalign.attribution.hybrid import HybridPrior, fuse
from rationalign.attribution.integrated_gradients import IntegratedGradients, path_integrated_gradients
from rationalign.attribution.lime import LimePrior
from rationalign.attribution.store import PriorStore, compute_priors
from rationalign.attribution.words import (
    WORD_PATTERN,
    WordAlignment,
    align_offsets,
    encode_with_words,
    join_words,
    pool_to_words,
    split_words,
    token_word_index,
    word_spans,
)


def __getattr__(name: str):
    # shap is optional and slow to import: load ShapPrior only when asked for.
    if name == "ShapPrior":
        from rationalign.attribution.shap_prior import ShapPrior

        return ShapPrior
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "WORD_PATTERN",
    "AttentionPrior",
    "Attributor",
    "CAPPrior",
    "GradientXInput",
    "HybridPrior",
    "IntegratedGradients",
    "LimePrior",
    "PriorStore",
    "ShapPrior",
    "WordAlignment",
    "WordAttribution",
    "align_offsets",
    "compute_priors",
    "encode_with_words",
    "fuse",
    "gradient_x_input_tokens",
    "join_words",
    "normalise",
    "path_integrated_gradients",
    "pool_to_words",
    "split_words",
    "token_word_index",
    "word_spans",
]
