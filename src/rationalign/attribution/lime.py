"""LIME word priors, batched: every masked text of every utterance in a batch is scored in a few large calls.

The regressed quantity is the model's probability of the target class; masks, kernel and ridge solver are
the ones shared with CAP (:mod:`rationalign.attribution.masks`). With ``design="iid"`` and the default
kernel this is the estimator of ``lime.lime_text.LimeTextExplainer(bow=False)`` with words deleted
(``mask_string=""``) and Ridge(alpha=1); ``design="balanced"`` reaches the same estimate with less noise.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rationalign.attribution.base import WordAttribution
from rationalign.attribution.masks import DEFAULT_RIDGE, DEFAULT_SIGMA, Design, MaskingExplainer


def _probability_of(probs: np.ndarray, target: int) -> np.ndarray:
    return probs[:, target]


def as_scorer(
    model: Any, batch_size: int = 64
) -> tuple[Callable[[list[str]], np.ndarray], Callable[[], str]]:
    """``(score_fn, fingerprint_fn)`` for an :class:`IntentClassifier`, a ``Teacher`` or a plain function.

    ``score_fn(texts) -> [n, C]`` probabilities. The fingerprint is computed lazily (hashing a model's
    weights takes a moment) and identifies whatever decides the scores.
    """
    # Only an already-imported IntentClassifier can be passed in: do not pay for importing transformers.
    classifier_module = sys.modules.get("rationalign.models.classifier")
    if classifier_module is not None and isinstance(model, classifier_module.IntentClassifier):

        def score(texts: list[str]) -> np.ndarray:
            return model.predict_proba(texts, batch_size=batch_size)

        def fingerprint() -> str:
            extra = f"|T={model.temperature!r}|L={model.max_length}|{model.pooling}"
            return "clf:" + hashlib.sha256((model.weights_fingerprint() + extra).encode()).hexdigest()[:32]

        return score, fingerprint
    predict = getattr(model, "predict_proba", None)
    if callable(predict):
        return (lambda texts: np.asarray(predict(texts))), (lambda: str(model.fingerprint))
    if callable(model):
        name = getattr(model, "__qualname__", type(model).__qualname__)
        return (lambda texts: np.asarray(model(texts))), (
            lambda: f"fn:{getattr(model, '__module__', '')}.{name}"
        )
    raise TypeError(
        f"cannot score texts with {type(model).__name__}: give an IntentClassifier, a Teacher or a function"
    )


class LimePrior:
    """LIME attributions: ``attribute(texts, targets)`` -> one :class:`WordAttribution` per text.

    ``model``: an ``IntentClassifier``, a ``Teacher`` or ``predict_proba(texts) -> [n, C]``.
    ``n_samples``: masks drawn per utterance (duplicates are scored once). ``batch_size``: texts per forward
    pass of an ``IntentClassifier``. ``fingerprint`` overrides the model's (required to store priors of a
    plain function across processes, where its name alone may not identify it).
    """

    name = "lime"

    def __init__(
        self,
        model: Any,
        n_samples: int = 1000,
        *,
        sigma: float = DEFAULT_SIGMA,
        ridge: float = DEFAULT_RIDGE,
        seed: int = 0,
        batch_size: int = 64,
        design: Design = "balanced",
        fingerprint: str | None = None,
        max_texts_per_call: int = 16_384,
    ):
        score_fn, self._fingerprint_fn = as_scorer(model, batch_size)
        self._fingerprint = fingerprint
        self.model = model
        self.batch_size = batch_size
        self._engine = MaskingExplainer(
            score_fn,
            _probability_of,
            n_masks=n_samples,
            sigma=sigma,
            ridge=ridge,
            seed=seed,
            design=design,
            max_texts_per_call=max_texts_per_call,
        )
        self._engine.name = self.name

    @property
    def n_samples(self) -> int:
        return self._engine.n_masks

    @property
    def cost(self):
        return self._engine.cost

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = self._fingerprint_fn()
        return self._fingerprint

    def params(self) -> dict:
        return {"target": "prob", **self._engine.params()}

    def attribute(self, texts: Sequence[str], targets: Sequence[int]) -> list[WordAttribution]:
        return self._engine.attribute(texts, targets)

    def attribute_with_probs(
        self, texts: Sequence[str], targets: Sequence[int]
    ) -> tuple[list[WordAttribution], np.ndarray]:
        """Attributions and the model's probabilities on the unmasked texts (no extra calls)."""
        return self._engine.explain(texts, targets)


# ------------------------------------------------------------------ the reference implementations
# The same estimator through the well-kept libraries, to test ours against them and to benchmark.


def lime_package_attribute(
    predict_proba: Callable[[list[str]], np.ndarray],
    text: str,
    target: int,
    n_samples: int,
    *,
    sigma: float = DEFAULT_SIGMA,
    ridge: float = DEFAULT_RIDGE,
    seed: int = 0,
) -> WordAttribution:
    """``lime.lime_text.LimeTextExplainer`` on our words: ``bow=False``, deleted words (``mask_string=""``),
    the same kernel (``kernel_width = 100 sigma / sqrt(2)``), Ridge(alpha=ridge) on every word."""
    from lime.lime_text import LimeTextExplainer
    from sklearn.linear_model import Ridge

    from rationalign.attribution.words import split_words

    words = split_words(text)
    if not words:
        return WordAttribution([], np.zeros(0), "lime-package", target)
    explainer = LimeTextExplainer(
        kernel_width=100.0 * sigma / np.sqrt(2.0),
        split_expression=split_words,
        bow=False,
        mask_string="",
        feature_selection="none",
        random_state=seed,
    )
    explanation = explainer.explain_instance(
        text,
        predict_proba,
        labels=(target,),
        num_features=len(words),
        num_samples=n_samples,
        model_regressor=Ridge(alpha=ridge, fit_intercept=True),
    )
    scores = np.zeros(len(words))
    for feature, weight in explanation.local_exp[target]:
        scores[feature] = weight
    return WordAttribution(words, scores, "lime-package", target)


def captum_lime_attribute(
    predict_proba: Callable[[list[str]], np.ndarray],
    text: str,
    target: int,
    n_samples: int,
    *,
    sigma: float = DEFAULT_SIGMA,
    ridge: float = DEFAULT_RIDGE,
    seed: int = 0,
    perturbations_per_eval: int = 256,
) -> WordAttribution:
    """``captum.attr.Lime`` over word positions: the input is the word-index vector, a removed word is the
    baseline ``-1`` and the forward function deletes it; LIME's sampling law (drop ``k ~ U{1..d-1}``), our
    kernel on the binary interpretable vector and ``SkLearnRidge(alpha=ridge)``."""
    import torch
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import Lime

    from rationalign.attribution.words import join_words, split_words

    words = split_words(text)
    d = len(words)
    if d == 0:
        return WordAttribution([], np.zeros(0), "captum-lime", target)
    generator = np.random.default_rng(seed)

    def forward(indices: torch.Tensor) -> torch.Tensor:
        texts = [join_words([words[i] for i in row if i >= 0]) for row in indices.long().tolist()]
        return torch.as_tensor(np.asarray(predict_proba(texts)), dtype=torch.float32)

    def perturb(_original, **_kwargs) -> torch.Tensor:
        keep = np.ones(d, dtype=np.int64)
        if d > 1:
            keep[generator.choice(d, size=int(generator.integers(1, d)), replace=False)] = 0
        return torch.as_tensor(keep).unsqueeze(0)

    def similarity(_original, _perturbed, interpretable, **_kwargs) -> float:
        z = interpretable.float().flatten()
        distance = 1.0 - float(z.sum().sqrt() / np.sqrt(d)) if z.sum() > 0 else 1.0
        return float(np.exp(-(distance**2) / sigma**2))

    lime = Lime(
        forward,
        interpretable_model=SkLearnRidge(alpha=ridge),
        similarity_func=similarity,
        perturb_func=perturb,
    )
    coefs = lime.attribute(
        torch.arange(d, dtype=torch.float32).unsqueeze(0),
        baselines=-1.0,
        target=target,
        n_samples=n_samples,
        perturbations_per_eval=perturbations_per_eval,
        return_input_shape=True,
    )
    return WordAttribution(words, coefs.detach().double().flatten().numpy(), "captum-lime", target)
