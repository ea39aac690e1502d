"""Teachers: anything that gives a distribution over the full label space (the student's soft labels).

* :class:`ClassifierTeacher` - a trained :class:`~rationalign.models.classifier.IntentClassifier`;
* :class:`LLMTeacher` - a local causal LM prompted with the label list (codes mode: one forward pass per
  text over a cached prefix; label_text mode: label names scored as continuations);
* :class:`HTTPLLMTeacher` - the same prompt against an OpenAI-compatible ``/v1/completions`` server;
* :class:`EnsembleTeacher` - weighted mixture + :class:`RuleSet` overrides + adjudicator for close calls;
* :func:`load_teacher` - build one of the above from a spec string (``llm:smollm2-135m?shots=1``).

Heavy or optional modules (transformers, httpx, fastapi) are imported on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import Any

from rationalign.teachers.base import Teacher
from rationalign.teachers.errors import (
    TeacherConnectionError,
    TeacherError,
    TeacherHTTPError,
    TeacherResponseError,
    TeacherSpecError,
)

_LAZY = {
    "ClassifierTeacher": "rationalign.teachers.classifier",
    "module_weights_hash": "rationalign.teachers.classifier",
    "LLMTeacher": "rationalign.teachers.llm",
    "TeacherCost": "rationalign.teachers.llm",
    "HTTPLLMTeacher": "rationalign.teachers.http",
    "HTTPCost": "rationalign.teachers.http",
    "EnsembleTeacher": "rationalign.teachers.ensemble",
    "EnsembleStats": "rationalign.teachers.ensemble",
    "RuleSet": "rationalign.teachers.rules",
    "Rule": "rationalign.teachers.rules",
    "PromptBuilder": "rationalign.teachers.prompt",
    "BuiltPrompt": "rationalign.teachers.prompt",
    "LabelCodes": "rationalign.teachers.prompt",
    "readable_label": "rationalign.teachers.prompt",
    "select_examples": "rationalign.teachers.prompt",
    "load_teacher": "rationalign.teachers.spec",
    "create_app": "rationalign.teachers.server",
    "serve_in_thread": "rationalign.teachers.server",
    "FaultInjectingServer": "rationalign.teachers.server",
}

__all__ = [
    "Teacher",
    "TeacherConnectionError",
    "TeacherError",
    "TeacherHTTPError",
    "TeacherResponseError",
    "TeacherSpecError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rationalign.teachers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
