"""The base of every configuration model and the error users see when a stage file is wrong."""

from __future__ import annotations

import re
from typing import Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError


class ConfigModel(BaseModel):
    """A strict, immutable section of the stage configuration.

    Unknown keys are errors: a misspelt key that was silently ignored would deploy a default the
    user believed they had changed. Types are strict: `protect_stateful = "no"` would otherwise read
    as false and `replicas = true` as 1, each the opposite of what someone meant.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, validate_default=True, allow_inf_nan=False
    )


def short(value: Any) -> str:
    """`repr(value)`, cut to a length an error line can hold (a pasted blob is still recognisable)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def matching(pattern: str, allowed: str) -> AfterValidator:
    """A string check that states what is allowed in words, never as the regular expression."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{short(value)} is not allowed: {allowed}")
        return value

    return AfterValidator(check)


def never_as_zero(value: Any) -> Any:
    """0 for an option whose unset value means "never": TOML has no null to unset a default with."""
    return None if type(value) is int and value == 0 else value


# What a TOML value of the wrong type should have looked like, by pydantic error type.
_EXPECTED = {
    "bool_type": "expected true or false (a TOML boolean, without quotes)",
    "int_type": "expected a whole number (a TOML integer without quotes, e.g. 100_000)",
    "float_type": "expected a number (e.g. 10 or 2.5)",
    "finite_number": "expected a finite number, not inf or nan",
    "string_type": "expected a string in quotes",
    "list_type": 'expected a list in brackets, e.g. ["a", "b"]',
    "tuple_type": "expected a list in brackets, e.g. [8, 2]",
    "dict_type": "expected a table of settings",
}


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
    shown = short(value)
    message = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        allowed = ", ".join(sorted(parent.model_fields)) if parent else "see the config reference"
        return f"{path}: unknown key (value {shown}); allowed keys here: {allowed}"
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind in {"model_type", "dict_type", "model_attributes_type"}:
        return f"{path}: expected a table of settings, got {shown}"
    if kind.startswith("value_error") or kind == "assertion_error":
        # Our own validators already name the values involved.
        return f"{path}: {message}"
    if kind in _EXPECTED:
        return f"{path}: {shown} is not allowed: {_EXPECTED[kind]}"
    return f"{path}: {shown} is not allowed: {_lower_first(message)}"


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
