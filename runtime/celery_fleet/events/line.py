"""One outcome's line: the values the contract defines, each within its bounds, cut to fit in PIPE_BUF,
signed.

`outcome_line` gathers the values from what Celery knows of the attempt (its context, exception and
arguments); `build_record` holds them to the contract (`celery_fleet.contract.task_events.FIELDS`)
and `encode_line` turns the record into the bytes a worker writes. The last two know nothing of
Celery: benchmarks and tests build lines with them directly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any

from celery_fleet import keep
from celery_fleet.contract import task_events as te
from celery_fleet.contract.kept_messages import REPLAY_OF_HEADER
from celery_fleet.contract.task_events import EventType
from celery_fleet.events.context import lookup
from celery_fleet.events.redaction import Redact, shown_arguments
from celery_fleet.events.tracebacks import Chain, render_traceback, safe_str

# Outcomes whose line reports an exception (a retry's too, without arguments or traceback).
EXCEPTION_EVENTS = te.FAILURE_EVENTS | {EventType.RETRIED}

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)
# Encoded bytes each of the exception message, args and kwargs may keep when a line is too long.
_FIELD_SHARE_BYTES = 512


def outcome_line(
    event: EventType,
    *,
    name: str,
    task_id: str,
    context: Any,
    runtime_s: float | None = None,
    queue_wait_s: float | None = None,
    exc: BaseException | None = None,
    traceback: str | None = None,
    chain: Chain | None = None,
    frame: str = "",
    args: Any = None,
    kwargs: Any = None,
    redact: Redact | None,
    key: bytes | None,
    on_error: Callable[[BaseException], None],
) -> bytes:
    """The line of one outcome of task `name`, signed with `key` when given.

    `context` is the attempt's request context; a failure's arguments pass through `redact` first
    (`on_error` hears of a hook that raised), and its traceback is rendered from `chain` when the
    exception was caught with its frames, else taken from the `traceback` text.
    """
    delivery_info = lookup(context, "delivery_info") or {}
    queue = delivery_info.get("routing_key") if isinstance(delivery_info, Mapping) else None
    worker = lookup(context, "hostname")
    values: dict[str, Any] = {
        te.F_EVENT: event,
        te.F_TASK_ID: task_id,
        te.F_TASK: name,
        te.F_QUEUE: queue if isinstance(queue, str) else None,
        te.F_WORKER: worker if isinstance(worker, str) else None,
        te.F_RETRIES: lookup(context, "retries"),
        te.F_TIMESTAMP: datetime.now(UTC).isoformat(timespec="milliseconds"),
        te.F_RUNTIME: runtime_s,
        te.F_QUEUE_WAIT: queue_wait_s,
    }
    replay_of = lookup(context, REPLAY_OF_HEADER)
    if isinstance(replay_of, str) and replay_of:
        values[te.F_REPLAY_OF] = replay_of
    if event in EXCEPTION_EVENTS:
        shown = shown_arguments(redact, name, args, kwargs, on_error=on_error)
        if exc is not None:
            values[te.F_EXC_TYPE] = type(exc).__name__
            values[te.F_EXC_MESSAGE] = shown.scrub(safe_str(exc))
        if event in te.FAILURE_EVENTS:
            values[te.F_EXC_FRAME] = frame
            values[te.F_TRACEBACK] = (
                render_traceback(chain, shown.scrub) if chain else shown.scrub(traceback or "")
            )
            values[te.F_ARGS] = shown.args
            values[te.F_KWARGS] = shown.kwargs
            # The keeper ran first on the same failure (celery_fleet.keep): its key, if any.
            kept = keep.kept_key(task_id)
            if kept is not None:
                values[te.F_KEPT_MESSAGE] = kept
    return encode_line(build_record(values), key=key)


def build_record(values: Mapping[str, Any]) -> dict[str, Any]:
    """The line's fields from `values` (by field key), in the contract's order, each within its bounds.

    Constant fields (marker, version) are filled in; an `always` field missing from `values`, or a
    key the contract does not define, is a ValueError.
    """
    event = EventType(values[te.F_EVENT])
    exception = event in EXCEPTION_EVENTS
    failure = event in te.FAILURE_EVENTS
    record: dict[str, Any] = {}
    for key, presence, constant, bound in _plan():
        if constant is not None:
            record[key] = constant
        elif key in values:
            if (presence is te.Presence.EXCEPTION and not exception) or (
                presence is te.Presence.FAILURE and not failure
            ):
                continue
            record[key] = bound(values[key])
        elif presence is te.Presence.ALWAYS:
            raise ValueError(f"task event field {key!r} has no value")
    if len(values) + 2 > len(record):
        unknown = set(values) - te.FIELD_BY_KEY.keys()
        if unknown:
            raise ValueError(f"task event fields {sorted(unknown)} are not in the contract")
    return record


_Plan = tuple[tuple[str, te.Presence, object, Callable[[Any], Any]], ...]
_PLANS: list[tuple[tuple[te.FieldSpec, ...], _Plan]] = []


def _plan() -> _Plan:
    """Per contract field: its key, presence, constant and a function bounding a value for it
    (made once: the common values, short ASCII strings and numbers in range, pass at C speed)."""
    if not _PLANS or _PLANS[0][0] is not te.FIELDS:
        _PLANS[:] = [(te.FIELDS, tuple((s.key, s.presence, s.constant, _bounder(s)) for s in te.FIELDS))]
    return _PLANS[0][1]


def _bounder(spec: te.FieldSpec) -> Callable[[Any], Any]:
    def slow(value: Any) -> Any:
        return _bounded(spec, value)

    if spec.type is str and spec.max_bytes is not None:
        cap = spec.max_bytes + 2  # with the quotes

        def text(value: Any) -> Any:
            if type(value) is str and value.isascii() and len(encode_basestring_ascii(value)) <= cap:
                return value
            return slow(value)

        return text
    if spec.type in (int, float) and spec.minimum is not None and spec.maximum is not None:
        low, high, kind = spec.minimum, spec.maximum, spec.type

        def number(value: Any) -> Any:
            # NaN fails both comparisons, infinities one: they take the slow path.
            if type(value) is kind and low <= value <= high:
                return value if kind is int else round(value, 6)
            return slow(value)

        return number
    return slow


def _bounded(spec: te.FieldSpec, value: Any) -> Any:  # noqa: PLR0911 (one return per type)
    if value is None and spec.nullable:
        return None
    if spec.type is str:
        text = value if isinstance(value, str) else ("" if value is None else str(value))
        if not text.isascii():
            # A lone surrogate is valid in a Python str, not in JSON: it would void the line.
            text = text.encode("utf-8", "replace").decode("utf-8")
        return _fit(text, spec.max_bytes, keep_end=spec.keep_end) if spec.max_bytes is not None else text
    if spec.type is int:
        number = value if isinstance(value, int) and not isinstance(value, bool) else 0
        low = int(spec.minimum) if spec.minimum is not None else number
        high = int(spec.maximum) if spec.maximum is not None else number
        return min(max(number, low), high)
    if spec.type is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return None if spec.nullable else 0.0
        seconds = round(float(value), 6)
        if (spec.minimum is not None and seconds < spec.minimum) or (
            spec.maximum is not None and seconds > spec.maximum
        ):
            # Out of any real range: a clock jump, never a measurement.
            return None if spec.nullable else 0.0
        return seconds
    return spec.type(value).value


def encode_line(record: dict[str, Any], *, key: bytes | None = None) -> bytes:
    """`record` as one JSON line of at most `MAX_LINE_BYTES` bytes, signed with `key` when given,
    shortening its long fields.

    The exception message and the argument reprs are held to their share first; the traceback
    then gets what room is left, keeping its end.
    """
    limit = te.MAX_LINE_BYTES - 1 - (_SIGNATURE_BYTES if key is not None else 0)
    data = _dumps(record)
    if len(data) > limit:
        for name in (te.F_EXC_MESSAGE, te.F_ARGS, te.F_KWARGS):
            value = record.get(name)
            if isinstance(value, str):
                record[name] = _fit(value, _FIELD_SHARE_BYTES, keep_end=False)
        traceback = record.get(te.F_TRACEBACK)
        if isinstance(traceback, str):
            record[te.F_TRACEBACK] = ""
            room = limit - len(_dumps(record))
            record[te.F_TRACEBACK] = _fit(traceback, max(0, room), keep_end=True)
        data = _dumps(record)
        if len(data) > limit:
            raise ValueError(f"task event line of {len(data)} bytes exceeds {limit} with its fields cut")
    if key is not None:
        data = te.sign(data, key)
    return data + b"\n"


# `,"mac":"` + 64 hex digits + `"`: what signing adds to a line.
_SIGNATURE_BYTES = len(te.sign(b"{}", b"k")) - len(b"{}")


def _fit(value: str, max_bytes: int, *, keep_end: bool) -> str:
    """`value` cut (with a mark) to the longest piece whose JSON encoding takes at most `max_bytes`."""

    def cut(chars: int) -> str:
        return te.truncate_head(value, chars) if keep_end else te.truncate(value, chars)

    # 12 bytes a character at most: an astral one is escaped as a surrogate pair.
    if len(value) * 12 <= max_bytes or _encoded_len(value) <= max_bytes:
        return value
    low, high = 0, min(len(value), max_bytes)
    while low < high:
        middle = (low + high + 1) // 2
        if _encoded_len(cut(middle)) <= max_bytes:
            low = middle
        else:
            high = middle - 1
    return cut(low)


def _encoded_len(value: str) -> int:
    return len(encode_basestring_ascii(value)) - 2


def _dumps(record: Mapping[str, Any]) -> bytes:
    # ASCII escapes: the line's byte length is then known exactly and no encoding can fail.
    return _ENCODER.encode(record).encode("ascii")
