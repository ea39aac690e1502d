"""Every prior method a distill config can name maps to its own attributor, and the scores it gives are
that method's own (a config that says shap must not silently get attention)."""

from types import SimpleNamespace

import pytest

from rationalign.attribution import AttentionPrior, CAPPrior, GradientXInput, IntegratedGradients, LimePrior
from rationalign.data.types import LabelSpace
from rationalign.errors import ConfigError
from rationalign.models.classifier import IntentClassifier
from rationalign.pipeline import PriorsConfig, _attributor
from rationalign.teachers.cache import CachedTeacher
from rationalign.teachers.classifier import ClassifierTeacher

TEXTS = ["my card has not arrived yet", "block my lost card please"]


@pytest.fixture(scope="module")
def teacher():
    clf = IntentClassifier.tiny(LabelSpace(["card_arrival", "lost_card"]), seed=0)
    return CachedTeacher(ClassifierTeacher(clf))


@pytest.mark.parametrize(
    "method, kind",
    [
        ("cap", CAPPrior),
        ("lime", LimePrior),
        ("ig", IntegratedGradients),
        ("gxi", GradientXInput),
        ("attention", AttentionPrior),
    ],
)
def test_each_method_gets_its_attributor(teacher, method, kind):
    cfg = PriorsConfig(methods=[method], n_masks=8, lime_samples=8, ig_steps=2)
    attributor = _attributor(method, cfg, teacher, SimpleNamespace(label_space=teacher.label_space))
    assert isinstance(attributor, kind)
    result = attributor.attribute(TEXTS, [0, 1])
    assert [len(r.scores) for r in result] == [6, 5]


def test_shap_is_a_distill_prior(teacher):
    pytest.importorskip("shap")
    from rationalign.attribution.shap_prior import ShapPrior

    cfg = PriorsConfig(methods=["shap"], shap_max_evals=16)
    attributor = _attributor("shap", cfg, teacher, SimpleNamespace(label_space=teacher.label_space))
    assert isinstance(attributor, ShapPrior) and attributor.max_evals == 16
    result = attributor.attribute(TEXTS, [0, 1])
    assert [r.method for r in result] == ["shap", "shap"]
    assert [len(r.scores) for r in result] == [6, 5]


def test_an_unknown_method_is_a_config_error(teacher):
    cfg = PriorsConfig.model_construct(methods=["nope"])
    with pytest.raises(ConfigError, match="unknown method"):
        _attributor("nope", cfg, teacher, SimpleNamespace(label_space=teacher.label_space))
