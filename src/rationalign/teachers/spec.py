"""``load_teacher(spec, label_space)``: build a teacher from a one-string spec (for the CLI and configs).

========================================================  ===================================================
``model:runs/x/model``                                    a trained :class:`IntentClassifier` folder
``classifier:runs/x/model``                               the same
``model:runs/x/model?precision=bfloat16``                 options after ``?``: ``precision``, ``batch_size``
``llm:smollm2-135m``                                      local LLM, codes mode, zero-shot
``llm:smollm2-135m?mode=label_text&shots=2``              options after ``?`` (``&``-separated)
``http:http://127.0.0.1:8080/v1?model=x``                 OpenAI-compatible server (``model`` required)
========================================================  ===================================================

``llm:`` options: ``mode`` (codes | label_text), ``shots`` (per label), ``budget`` (examples in all),
``examples`` (data file or name, e.g. ``banking77/train_10``; default: the ``examples`` argument),
``seed``, ``format`` (auto | chat | plain), ``codes`` (mnemonic | sequential), ``batch_size``, ``device``,
``normalise`` (label_text length normalisation), ``cache`` (prefix KV cache on/off).
``http:`` options: ``model``, ``tokenizer``, ``timeout``, ``retries``, ``concurrency``, ``batch_size``,
``api_key_env`` (name of the environment variable holding the key; keys never go in specs), ``bias``
(logit bias on codes, 0 = off), ``top_logprobs``, and ``shots``/``budget``/``examples``/``seed``/``format``/
``codes`` as above.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from rationalign.data.types import IntentDataset, LabelSpace
from rationalign.errors import ConfigError
from rationalign.precision import PRECISIONS
from rationalign.teachers.base import Teacher
from rationalign.teachers.errors import TeacherSpecError

KINDS = ("model", "classifier", "llm", "http")  # classifier: an alias of model
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _fail(spec: str, problem: str, fix: str) -> TeacherSpecError:
    return TeacherSpecError(f"teacher spec {spec!r}: {problem}; fix: {fix}")


def _as_int(v: str) -> int:
    return int(v)


def _as_bool(v: str) -> bool:
    low = v.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(v)


def _as_choice(*choices: str) -> Callable[[str], str]:
    def convert(v: str) -> str:
        if v not in choices:
            raise ValueError(v)
        return v

    convert.__name__ = " | ".join(choices)
    return convert


def _as_device(v: str) -> str:
    """``auto`` becomes cuda or cpu here, so an LLM or a model teacher gets a device torch knows. A bad
    name raises the resolver's own ``ConfigError`` (``problem; fix: ...``), which ``_options`` prefixes."""
    from rationalign.device import resolve_device

    return str(resolve_device(v))


_COMMON: dict[str, tuple[str, Callable[[str], Any]]] = {
    "shots": ("shots", _as_int),
    "budget": ("example_budget", _as_int),
    "seed": ("seed", _as_int),
    "format": ("format", _as_choice("auto", "chat", "plain")),
    "codes": ("code_style", _as_choice("mnemonic", "sequential")),
    "batch_size": ("batch_size", _as_int),
}
LLM_OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    **_COMMON,
    "mode": ("mode", _as_choice("codes", "label_text")),
    "device": ("device", _as_device),
    "normalise": ("length_normalise", _as_bool),
    "cache": ("use_prefix_cache", _as_bool),
}
MODEL_OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "precision": ("precision", _as_choice(*PRECISIONS)),
    "batch_size": ("batch_size", _as_int),
    "device": ("device", _as_device),
}
HTTP_OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    **_COMMON,
    "model": ("model", str),
    "tokenizer": ("tokenizer", str),
    "timeout": ("timeout", float),
    "retries": ("max_retries", _as_int),
    "concurrency": ("concurrency", _as_int),
    "bias": ("code_bias", float),
    "top_logprobs": ("top_logprobs", _as_int),
    "api_key_env": ("api_key_env", str),
}
_TYPE_NAMES = {_as_int: "an integer", float: "a number", _as_bool: "true or false", str: "a string"}


def _options(
    spec: str, query: str, table: dict[str, tuple[str, Callable[[str], Any]]]
) -> tuple[dict, str | None]:
    kwargs: dict[str, Any] = {}
    examples: str | None = None
    if not query:
        return kwargs, examples
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise _fail(
            spec, f"cannot parse the options {query!r}", "write key=value pairs joined by '&'"
        ) from None
    for key, value in pairs:
        if key == "examples":
            examples = value
            continue
        if key not in table:
            raise _fail(spec, f"unknown option {key!r}", f"use one of {sorted([*table, 'examples'])}")
        name, convert = table[key]
        try:
            kwargs[name] = convert(value)
        except ConfigError as err:  # a converter's own "problem; fix: ..." (the device resolver's)
            raise TeacherSpecError(f"teacher spec {spec!r}: option {key}: {err}") from None
        except ValueError:
            expected = _TYPE_NAMES.get(convert, getattr(convert, "__name__", "valid"))
            raise _fail(
                spec, f"option {key}={value!r} is not {expected}", f"give {key} as {expected}"
            ) from None
    return kwargs, examples


def _load_examples(spec: str, source: str) -> IntentDataset:
    from rationalign.data.io import load_dataset, load_splits, resolve_data

    path = resolve_data(source)
    if Path(path).is_dir():
        return load_splits(path)["train"]
    return load_dataset(path)


def _check_space(spec: str, teacher: Any, label_space: LabelSpace | None) -> None:
    if label_space is not None and teacher.label_space != label_space:
        raise _fail(
            spec,
            f"the teacher's label space ({len(teacher.label_space)} labels) differs from the data's "
            f"({len(label_space)} labels, or another order)",
            "use a teacher trained on this data set's labels",
        )


def load_teacher(
    spec: str, label_space: LabelSpace | None = None, *, examples: IntentDataset | None = None
) -> Teacher:
    """Build the teacher a spec names (see the module docstring). ``label_space`` is required for LLM
    teachers and checked against a trained model's. ``examples``: the pool for ``shots``/``budget``."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in KINDS or not rest:
        raise _fail(spec, "expected <kind>:<target>", f"kind is one of {list(KINDS)}, e.g. llm:smollm2-135m")
    if kind in ("model", "classifier"):
        from rationalign.teachers.classifier import ClassifierTeacher

        folder, _, query = rest.partition("?")
        kwargs, _ = _options(spec, query, MODEL_OPTIONS)
        try:
            teacher: Any = ClassifierTeacher(folder, **kwargs)
        except OSError as err:
            raise _fail(
                spec, f"cannot load the model ({err})", "pass a folder written by `rationalign train`"
            ) from None
        _check_space(spec, teacher, label_space)
        return teacher

    target, _, query = rest.partition("?")
    if label_space is None:
        raise _fail(
            spec, "an LLM teacher needs the label space", "load the data first and pass its LabelSpace"
        )
    table = LLM_OPTIONS if kind == "llm" else HTTP_OPTIONS
    kwargs, examples_source = _options(spec, query, table)
    pool = _load_examples(spec, examples_source) if examples_source else examples
    wants_examples = "shots" in kwargs or "example_budget" in kwargs
    if wants_examples and pool is None:
        raise _fail(
            spec,
            "shots/budget given but no examples to draw from",
            "add examples=<data file or name> to the spec, e.g. &examples=banking77/train_10",
        )
    if pool is not None and wants_examples:
        kwargs["examples"] = pool
    if kind == "llm":
        from rationalign.teachers.llm import LLMTeacher

        return LLMTeacher(target, label_space, **kwargs)

    from rationalign.teachers.http import HTTPLLMTeacher

    model = kwargs.pop("model", None)
    if not model:
        raise _fail(
            spec, "no model id", "add ?model=<id the server serves> (GET <base_url>/models lists them)"
        )
    env = kwargs.pop("api_key_env", None)
    if env is not None:
        if env not in os.environ:
            raise _fail(spec, f"environment variable {env} is not set", f"export {env}=<key>")
        kwargs["api_key"] = os.environ[env]
    return HTTPLLMTeacher(target, model, label_space, **kwargs)
