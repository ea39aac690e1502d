"""YAML configs with command-line overrides, validated by pydantic into one-line errors."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from rationalign.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; fix: pass an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"{path}{line}: invalid YAML ({getattr(err, 'problem', err)}); fix: correct the syntax"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; fix: save the config as UTF-8") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping; fix: write `key: value` lines")
    return data


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    node = config
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section; fix: check the key path")
        node = child
    node[parts[-1]] = value


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings; values are parsed as YAML scalars (``3e-5``, ``true``, ``[1,2]``)."""
    out = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected key=value; fix: e.g. --set train.lr=3e-5")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        set_dotted(out, key.strip(), value)
    return out


def build(model_cls: type[M], data: dict[str, Any], source: str = "config") -> M:
    try:
        return model_cls.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        raise ConfigError(f"{source}: {where}: {first['msg']}{more}; fix: correct this field") from None


def dump_yaml(model: BaseModel) -> str:
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``Model``, ``Model | None``), else None."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _type_name(annotation: Any) -> str:
    import re

    name = getattr(annotation, "__name__", None)
    text = name if name and not getattr(annotation, "__args__", None) else repr(annotation)
    text = re.sub(r"\b(?:[a-z_]\w*\.)+(?=[A-Za-z_])", "", text)  # rationalign.x.TrainConfig -> TrainConfig
    return text.replace("NoneType", "None")


def describe_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """Every field of a config model, nested sections flattened to dotted keys (the keys ``--set`` takes):
    ``(key, type, default, description)``."""
    from pydantic_core import PydanticUndefined

    rows: list[tuple[str, str, str, str]] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _nested_model(info.annotation)
        if info.default is not PydanticUndefined:
            default = repr(info.default)
        elif info.default_factory is not None:
            default = "(section)" if nested else repr(info.default_factory())  # type: ignore[call-arg]
        else:
            default = "(required)"
        rows.append((key, _type_name(info.annotation), default, info.description or ""))
        if nested is not None:
            rows.extend(describe_fields(nested, key + "."))
    return rows
