"""What the Lambda reads: its environment, and one task-event line, derived from the contract.

`LINE` validates a line's JSON into a plain dict keyed by the contract's field keys. It is built from
`celery_fleet.contract.task_events.FIELDS` and nothing else: a field added to the contract is read,
bounded and copied into failure records without an edit here (tests/lambdas/task_events checks it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring_ascii
from typing import Annotated, Any, Literal, NotRequired, Self

from celery_fleet.contract import task_events as te
from celery_fleet.contract import task_events_env as env
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

# typing_extensions' TypedDict: pydantic reads typing's only from Python 3.12 on.
from typing_extensions import TypedDict

_TIMESTAMP = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$"


def _byte_cap(max_bytes: int) -> Callable[[str], str]:
    """A validator holding a string to `max_bytes` of JSON encoding, as the emitter counts them."""

    def check(value: str) -> str:
        # Twelve bytes is the most one character takes escaped (an astral one, as a surrogate pair).
        if len(value) * 12 > max_bytes and len(encode_basestring_ascii(value)) - 2 > max_bytes:
            raise ValueError(f"over {max_bytes} bytes encoded")
        return value

    return check


def _annotation(spec: te.FieldSpec, *, byte_caps: bool = True) -> Any:
    """The pydantic type of one contract field, with its bounds."""
    if spec.constant is not None:
        annotation: Any = Literal[spec.constant]
    elif spec.type is str:
        # The character cap is checked first, in pydantic's core: characters never exceed bytes.
        pattern = _TIMESTAMP if spec.key == te.F_TIMESTAMP else None
        annotation = Annotated[str, Field(strict=True, max_length=spec.max_bytes, pattern=pattern)]
        if spec.max_bytes is not None and byte_caps:
            annotation = Annotated[annotation, AfterValidator(_byte_cap(spec.max_bytes))]
    elif spec.type is int:
        annotation = Annotated[int, Field(strict=True, ge=spec.minimum, le=spec.maximum)]
    elif spec.type is float:
        annotation = Annotated[float, Field(allow_inf_nan=False, ge=spec.minimum, le=spec.maximum)]
    else:
        annotation = spec.type
    if spec.nullable:
        annotation = annotation | None
    if spec.presence is not te.Presence.ALWAYS:
        annotation = NotRequired[annotation]
    return annotation


def line_type(*, byte_caps: bool = True) -> Any:
    """A TypedDict of every contract field (built anew: tests build it from an edited contract).

    Without `byte_caps`, strings are held to `max_bytes` characters only: enough for a line with no
    escape in it (no backslash), where every character of a string is one byte of the line.
    """
    fields = {spec.key: _annotation(spec, byte_caps=byte_caps) for spec in te.FIELDS}
    line: Any = TypedDict("TaskEventLine", fields)  # type: ignore[misc]
    # Keys the contract does not define are dropped; every key it defines is read.
    line.__pydantic_config__ = ConfigDict(extra="ignore", cache_strings="keys")  # type: ignore[attr-defined]
    return line


TaskEventLine = line_type()
LINE: TypeAdapter[dict[str, Any]] = TypeAdapter(TaskEventLine)
# Most lines (successes) hold no escape: their byte caps are their character caps, checked in
# pydantic's core without a Python call per field.
_PLAIN_LINE: TypeAdapter[dict[str, Any]] = TypeAdapter(line_type(byte_caps=False))


_PLAIN_TYPE: Any = line_type(byte_caps=False)
_PLAIN_LINES: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(list[_PLAIN_TYPE])


def validate_line(body: str) -> dict[str, Any]:
    """`body` (a verified line's JSON, ASCII) validated against the contract; ValidationError if not."""
    return (LINE if "\\" in body else _PLAIN_LINE).validate_json(body)


_ARRAY_LINES = 1000


def validate_lines(bodies: list[str]) -> list[dict[str, Any] | ValidationError]:
    """Each of `bodies` validated (as `validate_line`), or the ValidationError that refused it.

    The lines without escapes go through pydantic in one call, as one JSON array: most of a
    line's cost is the call. A body can only merge with its neighbour, never add to their number,
    so an array that does not parse into exactly one value per body, or any error, sends every one
    of them through `validate_line` alone.
    """
    results: list[dict[str, Any] | ValidationError | None] = [None] * len(bodies)
    plain = [i for i, body in enumerate(bodies) if "\\" not in body]
    # Arrays of a thousand: past that, the one large string costs more than the calls saved.
    for start in range(0, len(plain), _ARRAY_LINES):
        chunk = plain[start : start + _ARRAY_LINES]
        try:
            lines = _PLAIN_LINES.validate_json("[" + ",".join(bodies[i] for i in chunk) + "]")
        except ValidationError:
            continue
        if len(lines) == len(chunk):
            for i, line in zip(chunk, lines, strict=True):
                results[i] = line
    return [_alone(body) if result is None else result for body, result in zip(bodies, results, strict=True)]


def _alone(body: str) -> dict[str, Any] | ValidationError:
    try:
        return validate_line(body)
    except ValidationError as exc:
        return exc


# Each Settings field, and the variable it is read from.
VARIABLES: Mapping[str, str] = {
    "metric_namespace": env.METRIC_NAMESPACE,
    "failed_tasks_log_group": env.FAILED_TASKS_LOG_GROUP,
    "queues": env.QUEUES,
    "event_key_secret_arn": env.EVENT_KEY_SECRET_ARN,
    "powertools_metrics_namespace": env.POWERTOOLS_METRICS_NAMESPACE,
}


class Settings(BaseModel):
    """The Lambda's environment (task_events.environment), validated once at cold start."""

    model_config = ConfigDict(frozen=True)

    metric_namespace: str = Field(min_length=1, max_length=255)
    # CloudWatch Logs log group names: 1-512 of [.-_/#A-Za-z0-9].
    failed_tasks_log_group: str = Field(min_length=1, max_length=512, pattern=r"^[.\-_/#A-Za-z0-9]+$")
    queues: frozenset[str]
    event_key_secret_arn: str = Field(min_length=20, max_length=2048, pattern=r"^arn:[a-z-]+:secretsmanager:")
    # Powertools' Metrics reads it for the pipeline counts; read here only to hold it to metric_namespace.
    powertools_metrics_namespace: str

    @field_validator("queues", mode="before")
    @classmethod
    def _queue_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            names = [name.strip() for name in value.split(",")]
            if not all(names) or not all(re.fullmatch(r"[\x21-\x7e]{1,200}", name) for name in names):
                raise ValueError("a comma-separated list of queue names (printable ASCII, no spaces)")
            return frozenset(names)
        return value

    @model_validator(mode="after")
    def _one_namespace(self) -> Self:
        # The alarms read the pipeline counts (MalformedEvents...) in the stage's namespace, beside
        # the task metrics.
        if self.powertools_metrics_namespace != self.metric_namespace:
            raise ValueError(
                f"{env.POWERTOOLS_METRICS_NAMESPACE}={self.powertools_metrics_namespace!r} differs from "
                f"{env.METRIC_NAMESPACE}={self.metric_namespace!r}: the pipeline counts and the task "
                "metrics go to the stage's one namespace"
            )
        return self

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """The settings from `environ`, or a ValueError naming each missing or invalid variable."""
        missing = [name for name in VARIABLES.values() if not environ.get(name)]
        if missing:
            raise ValueError(f"task_events: environment variable(s) {', '.join(missing)} must be set")
        try:
            return cls.model_validate({field: environ[name] for field, name in VARIABLES.items()})
        except ValidationError as exc:
            problems = "; ".join(_describe(error) for error in exc.errors())
            raise ValueError(f"task_events: invalid environment: {problems}") from None


def _describe(error: Mapping[str, Any]) -> str:
    if not error["loc"]:
        # A check across variables: its message names them and their values.
        return str(error["ctx"]["error"])
    field = str(error["loc"][0])
    return f"{VARIABLES.get(field, field)}={error['input']!r}: {error['msg']}"
