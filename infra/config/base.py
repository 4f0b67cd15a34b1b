"""The base of every configuration model and the error users see when a stage file is wrong."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigModel(BaseModel):
    """A strict, immutable section of the stage configuration.

    Unknown keys are errors: a misspelt key that was silently ignored would deploy a default the
    user believed they had changed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, validate_default=True)


class ConfigError(Exception):
    """A stage configuration that cannot be deployed, with one line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: invalid configuration:\n{lines}")


def describe_validation_error(model: type[BaseModel], error: ValidationError) -> list[str]:
    """Turn pydantic's errors into lines naming the field path, the bad value and what is allowed."""
    return [_describe(model, err) for err in error.errors(include_url=False)]


def _describe(model: type[BaseModel], err: Any) -> str:
    loc = tuple(err["loc"])
    path = _dotted(loc) or "(top level)"
    kind = err["type"]
    value = err.get("input")
    message = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        allowed = ", ".join(sorted(parent.model_fields)) if parent else "see the config reference"
        return f"{path}: unknown key (value {value!r}); allowed keys here: {allowed}"
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind in {"model_type", "dict_type"}:
        return f"{path}: expected a table of settings, got {value!r}"
    if kind.startswith("value_error") or kind == "assertion_error":
        # Our own validators already name the values involved.
        return f"{path}: {message}"
    return f"{path}: {value!r} is not allowed: {_lower_first(message)}"


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that owns the key at `loc`, followed through nested models, lists and dicts."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            current = _inner_model(current)
            if isinstance(part, int):
                continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            # A dict keyed by user-chosen names (worker groups): the value type is the model.
            current = _inner_model(current)
            continue
        current = _inner_model(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    """The BaseModel inside `X`, `X | None`, `list[X]` or `dict[str, X]`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
