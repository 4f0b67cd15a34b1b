"""The task-event line: one signed JSON object per task outcome, from the worker to the ingest Lambda.

This module is the only definition of the line. `FIELDS` lists every field with its type, when it
is present and its bounds; the worker builds lines from it (`celery_fleet.events`), the Lambda
derives its model from it (`task_events.models`), and the field table of docs/task-events.md is
generated from it (`python -m tools.task_event_reference`, checked by a test). To add a field, add
an `F_` name and a `FieldSpec` to `FIELDS`, then give the emitter its value.

A worker writes each line to its stdout (the container's log stream); a CloudWatch Logs
subscription filter with `SUBSCRIPTION_FILTER_PATTERN` sends only lines that claim to be events to
the Lambda. Anything a task prints, logs or raises reaches the same stream, so a claim proves
nothing: every line ends with `"mac"`, an HMAC-SHA256 of the line's bytes before it (`sign`), under
a per-stage key only the worker and the Lambda hold (`worker_env.EVENT_KEY_ENV`). The Lambda counts a
line only when `verify` accepts it.

Standard library only: the worker package and the Lambda both import it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

# 2: lines carry a MAC and bounded, byte-capped fields. Version 1 lines (unsigned) are not counted.
SCHEMA_VERSION: Final = 2

MARKER_KEY: Final = "celery_fleet"
MARKER_VALUE: Final = "task_event"

# The CloudWatch Logs subscription filter on each worker log group. A JSON filter pattern only
# matches log events that parse as JSON objects, so Celery's own log lines and most of what an
# application prints never reach the Lambda. A JSON object that carries the marker does, whoever
# wrote it: the MAC, not the filter, tells the emitter's lines from the rest.
SUBSCRIPTION_FILTER_PATTERN: Final = '{ $.celery_fleet = "task_event" }'


class EventType(StrEnum):
    """The outcome a line reports. Exactly one line per outcome of one attempt."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # The attempt ended in `Task.retry` (or `autoretry_for`): another attempt is queued.
    RETRIED = "retried"
    # Revoked or expired before it ran, or terminated while running.
    REVOKED = "revoked"
    # The task raised `Reject`, or the worker could not decode a message (`task_rejected`).
    REJECTED = "rejected"
    # A message named a task the worker does not have (`task_unknown`): dropped by Celery.
    UNKNOWN_TASK = "unknown_task"
    # Hard limit (the pool killed the child) or an uncaught `SoftTimeLimitExceeded`.
    TIME_LIMIT_EXCEEDED = "time_limit_exceeded"
    # The pool child died while running the task (OOM kill, segfault, `os._exit`); the message is
    # delivered again, one line per death.
    WORKER_LOST = "worker_lost"
    # The pool child died under this task `max_worker_deaths` times: failed instead of delivered
    # again (`celery_fleet.worker_lost`). The task's last outcome.
    POISON_MESSAGE = "poison_message"


# Outcomes the Lambda writes as records to the failed-tasks log group, with their arguments and
# traceback. Revocations are deliberate (an operator or the app asked for them) and only counted.
FAILURE_EVENTS: Final = frozenset(
    {
        EventType.FAILED,
        EventType.TIME_LIMIT_EXCEEDED,
        EventType.WORKER_LOST,
        EventType.REJECTED,
        EventType.UNKNOWN_TASK,
        EventType.POISON_MESSAGE,
    }
)
# Outcomes whose task name comes from the message, not from the worker's task registry: whoever
# can publish chooses it, so it never becomes a metric dimension (task_metrics.UNKNOWN_TASK).
NAME_FROM_MESSAGE_EVENTS: Final = frozenset({EventType.REJECTED, EventType.UNKNOWN_TASK})

F_VERSION: Final = "v"
F_EVENT: Final = "event"
F_TASK_ID: Final = "task_id"
F_TASK: Final = "task"
F_QUEUE: Final = "queue"
F_WORKER: Final = "worker"
F_RETRIES: Final = "retries"
F_TIMESTAMP: Final = "ts"
F_RUNTIME: Final = "runtime_s"
F_QUEUE_WAIT: Final = "queue_wait_s"
F_EXC_TYPE: Final = "exc_type"
F_EXC_MESSAGE: Final = "exc_message"
F_EXC_FRAME: Final = "exc_frame"
F_TRACEBACK: Final = "traceback"
F_ARGS: Final = "args"
F_KWARGS: Final = "kwargs"
# Issue 9 (replay): the kept message of a failure, and the task a replayed task replays.
F_KEPT_MESSAGE: Final = "kept_message"
F_REPLAY_OF: Final = "replay_of"
F_MAC: Final = "mac"


class Presence(StrEnum):
    """Which lines carry a field. A field a line does not carry is absent, not null."""

    ALWAYS = "always"
    # Failures and retries: the lines that report an exception.
    EXCEPTION = "failures, retries"
    FAILURE = "failures"
    # Every line of a task that `celery-fleet replay` sent again.
    REPLAYS = "replayed tasks"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of the line. `max_bytes` bounds a string's JSON encoding in the line (ASCII escapes
    included), which also bounds its UTF-8 size anywhere it is copied; numbers lie in
    [`minimum`, `maximum`] and are finite."""

    key: str
    type: type
    presence: Presence
    meaning: str
    nullable: bool = False
    max_bytes: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    # The emitter cuts a long value from its start (a traceback's end says the most).
    keep_end: bool = False
    # Fixed value (the marker, the version): the emitter writes it, the Lambda insists on it.
    constant: object = None
    # A value that exists only sometimes (a kept message): absent even from lines its presence allows.
    optional: bool = False


# A line is at most PIPE_BUF bytes (4,096 on Linux) including its newline: POSIX makes a write of
# that size to a pipe atomic, so lines from several pool children never interleave. Docker's log
# drivers also split lines longer than 16 KiB. The worker shortens the traceback first to fit.
MAX_LINE_BYTES: Final = 4096
MAX_NAME_BYTES: Final = 200
MAX_EXC_TYPE_BYTES: Final = 200
MAX_EXC_MESSAGE_BYTES: Final = 512
MAX_FRAME_BYTES: Final = 300
MAX_REPR_BYTES: Final = 512
MAX_TRACEBACK_BYTES: Final = 4096
# kept_messages.message_key: "messages/" + a task id of at most 200 characters + ".json".
MAX_KEPT_KEY_BYTES: Final = 220
# Thirty days: longer than any time limit or countdown a stage allows, and than SQS-like
# retention; a larger figure is a bug or a forgery, never a measurement.
MAX_SECONDS: Final = 30 * 24 * 3600.0
MAX_RETRIES: Final = 1_000_000
# `datetime.isoformat(timespec="milliseconds")` of an aware UTC time: 2026-11-23T20:20:07.311+00:00
TIMESTAMP_BYTES: Final = 29

FIELDS: Final[tuple[FieldSpec, ...]] = (
    FieldSpec(MARKER_KEY, str, Presence.ALWAYS, f'`"{MARKER_VALUE}"`: what the filter selects on',
              max_bytes=len(MARKER_VALUE), constant=MARKER_VALUE),
    FieldSpec(F_VERSION, int, Presence.ALWAYS, "`SCHEMA_VERSION`", constant=SCHEMA_VERSION),
    FieldSpec(F_EVENT, EventType, Presence.ALWAYS, "the outcome, one of `EventType`"),
    FieldSpec(F_TASK_ID, str, Presence.ALWAYS, 'Celery task id ("" for a message without one)',
              max_bytes=MAX_NAME_BYTES),
    FieldSpec(F_TASK, str, Presence.ALWAYS, 'task name ("" when the message names none)',
              max_bytes=MAX_NAME_BYTES),
    FieldSpec(F_QUEUE, str, Presence.ALWAYS, "the delivery's routing key: the queue name on Redis",
              nullable=True, max_bytes=MAX_NAME_BYTES),
    FieldSpec(F_WORKER, str, Presence.ALWAYS, "the worker's node name (`celery@host`)",
              nullable=True, max_bytes=MAX_NAME_BYTES),
    FieldSpec(F_RETRIES, int, Presence.ALWAYS, "`task.request.retries` of this attempt",
              minimum=0, maximum=MAX_RETRIES),
    FieldSpec(F_TIMESTAMP, str, Presence.ALWAYS, "ISO 8601 UTC time of the outcome, milliseconds",
              max_bytes=TIMESTAMP_BYTES),
    FieldSpec(F_RUNTIME, float, Presence.ALWAYS, "seconds from the task's start to its outcome",
              nullable=True, minimum=0.0, maximum=MAX_SECONDS),
    FieldSpec(F_QUEUE_WAIT, float, Presence.ALWAYS,
              "seconds from the send stamp (or the ETA, if later) to the start",
              nullable=True, minimum=0.0, maximum=MAX_SECONDS),
    FieldSpec(F_EXC_TYPE, str, Presence.EXCEPTION, "exception class name", max_bytes=MAX_EXC_TYPE_BYTES),
    FieldSpec(F_EXC_MESSAGE, str, Presence.EXCEPTION, "`str(exception)` after redaction",
              max_bytes=MAX_EXC_MESSAGE_BYTES),
    FieldSpec(F_EXC_FRAME, str, Presence.FAILURE,
              "innermost frame of the traceback in the application's code: `path/file.py:function` "
              '("" when none)', max_bytes=MAX_FRAME_BYTES),
    FieldSpec(F_TRACEBACK, str, Presence.FAILURE, "the traceback's end, exception lines redacted",
              max_bytes=MAX_TRACEBACK_BYTES, keep_end=True),
    FieldSpec(F_ARGS, str, Presence.FAILURE, "bounded repr of the positional arguments, after redaction",
              max_bytes=MAX_REPR_BYTES),
    FieldSpec(F_KWARGS, str, Presence.FAILURE, "bounded repr of the keyword arguments, after redaction",
              max_bytes=MAX_REPR_BYTES),
    FieldSpec(F_KEPT_MESSAGE, str, Presence.FAILURE,
              "S3 key of the failed message kept for replay (`celery_fleet.keep`); absent when none was kept",
              max_bytes=MAX_KEPT_KEY_BYTES, optional=True),
    FieldSpec(F_REPLAY_OF, str, Presence.REPLAYS,
              "id of the task this one replays (the `celery_fleet_replay_of` header replay sets)",
              max_bytes=MAX_NAME_BYTES, optional=True),
)  # fmt: skip
FIELD_BY_KEY: Final = {spec.key: spec for spec in FIELDS}

TRUNCATED_MARK: Final = "…"


def truncate(text: str, max_chars: int) -> str:
    """`text` cut to at most `max_chars` characters, its end replaced by a mark when cut."""
    if len(text) <= max_chars:
        return text
    if max_chars <= len(TRUNCATED_MARK):
        return text[:max_chars]
    return text[: max_chars - len(TRUNCATED_MARK)] + TRUNCATED_MARK


def truncate_head(text: str, max_chars: int) -> str:
    """`text` cut to its last `max_chars` characters (a traceback's end says the most)."""
    if len(text) <= max_chars:
        return text
    if max_chars <= len(TRUNCATED_MARK):
        return text[len(text) - max_chars :] if max_chars > 0 else ""
    return TRUNCATED_MARK + text[len(text) - max_chars + len(TRUNCATED_MARK) :]


# -- the MAC -------------------------------------------------------------------------------------

# A signed line is the unsigned JSON object with one more member, last: `,"mac":"<64 hex digits>"}`.
# The MAC covers the exact bytes before that member (with the object's closing brace), so checking
# it needs no canonical re-encoding: the Lambda slices the received line.
_MAC_MEMBER_PREFIX: Final = f',"{F_MAC}":"'
MAC_HEX_DIGITS: Final = 64
_MAC_SUFFIX_CHARS: Final = len(_MAC_MEMBER_PREFIX) + MAC_HEX_DIGITS + 2
_MAC_MEMBER_PREFIX_BYTES: Final = _MAC_MEMBER_PREFIX.encode("ascii")
_HEX_DIGITS: Final = frozenset("0123456789abcdef")


def mac(key: bytes, body: bytes) -> str:
    """HMAC-SHA256 of `body` (an unsigned line, `{...}`) under `key`, as hex."""
    return hmac.digest(key, body, hashlib.sha256).hex()


def sign(body: bytes, key: bytes) -> bytes:
    """`body` (an unsigned JSON object, ASCII, no newline) with its `mac` member appended."""
    return body[:-1] + _MAC_MEMBER_PREFIX_BYTES + mac(key, body).encode("ascii") + b'"}'


def verify(line: str, keys: Iterable[bytes]) -> str | None:
    """The unsigned body of `line` when its MAC is valid under one of `keys`, else None.

    Lines are ASCII (the emitter escapes everything else): a line that is not was not written by
    it and is refused before any hashing.
    """
    if len(line) <= _MAC_SUFFIX_CHARS or not line.isascii() or not line.endswith('"}'):
        return None
    split = len(line) - _MAC_SUFFIX_CHARS
    if line[split : split + len(_MAC_MEMBER_PREFIX)] != _MAC_MEMBER_PREFIX:
        return None
    claimed = line[split + len(_MAC_MEMBER_PREFIX) : -2]
    body = line[:split] + "}"
    data = body.encode("ascii")
    for key in keys:
        if hmac.compare_digest(mac(key, data), claimed):
            return body
    return None


def key_from_secret(value: str) -> bytes:
    """The signing key held in the secret's string (the worker's env var, the Lambda's secret)."""
    return value.strip().encode("utf-8")


# -- failure fingerprints -----------------------------------------------------------------------


def fingerprint(task: str, exc_type: str | None, frame: str | None) -> str:
    """A stable id for "this task failing this way": task name, exception type and innermost frame
    in the application's code (file and function, no line number, so an edit elsewhere in the file
    keeps it). 16 hex digits."""
    text = json.dumps([task, exc_type or "", frame or ""], ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]
