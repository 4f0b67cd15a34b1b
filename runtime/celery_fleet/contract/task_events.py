"""The task-event line: one JSON object per task outcome, written by the worker and read by the ingest Lambda.

Version 1. A worker writes each line to its stdout (the container's log stream); a CloudWatch Logs
subscription filter with `SUBSCRIPTION_FILTER_PATTERN` sends only these lines to the Lambda. Every
line is a JSON object with:

| key | type | always | meaning |
|---|---|---|---|
| `celery_fleet` | str | yes | `MARKER_VALUE`: what the subscription filter selects on |
| `v` | int | yes | `SCHEMA_VERSION` |
| `event` | str | yes | one of `EventType` |
| `task_id` | str | yes | Celery task id ("" for a message without one) |
| `task` | str | yes | task name ("" when unknown) |
| `queue` | str or null | yes | the delivery's routing key: the queue name on Redis |
| `worker` | str or null | yes | the worker's node name (`celery@host`) |
| `retries` | int | yes | `task.request.retries` of this attempt |
| `ts` | str | yes | ISO 8601 UTC time of the outcome, millisecond precision |
| `runtime_s` | float or null | yes | seconds from the task's start to its outcome |
| `queue_wait_s` | float or null | yes | seconds from the send stamp (or the ETA, if later) to the start |
| `exc_type` | str | failures, retries | exception class name |
| `exc_message` | str | failures, retries | `str(exception)`, bounded |
| `traceback` | str | failures | the traceback's last characters, bounded |
| `args`, `kwargs` | str | failures | bounded reprs, after the worker's redaction hook |

Standard library only: the worker package and the Lambda both import it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

SCHEMA_VERSION: Final = 1

MARKER_KEY: Final = "celery_fleet"
MARKER_VALUE: Final = "task_event"

# The CloudWatch Logs subscription filter on each worker log group. A JSON filter pattern only
# matches log events that parse as JSON objects, so Celery's own log lines and anything else the
# application prints never reach the Lambda. It selects every schema version on purpose: a line
# of a version the Lambda does not know is counted as malformed rather than silently dropped.
SUBSCRIPTION_FILTER_PATTERN: Final = '{ $.celery_fleet = "task_event" }'


class EventType(StrEnum):
    """The outcome a line reports. Exactly one line per outcome of one attempt."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # The attempt ended in `Task.retry` (or `autoretry_for`): another attempt is queued.
    RETRIED = "retried"
    # Revoked or expired before it ran, or terminated while running.
    REVOKED = "revoked"
    # The task raised `Reject`, or the worker received a message for a task it does not know.
    REJECTED = "rejected"
    # Hard limit (the pool killed the child) or an uncaught `SoftTimeLimitExceeded`.
    TIME_LIMIT_EXCEEDED = "time_limit_exceeded"
    # The pool child died while running the task (OOM kill, segfault, `os._exit`).
    WORKER_LOST = "worker_lost"


# Outcomes the Lambda writes as records to the failed-tasks log group, with their arguments and
# traceback. Revocations are deliberate (an operator or the app asked for them) and only counted.
FAILURE_EVENTS: Final = frozenset(
    {EventType.FAILED, EventType.TIME_LIMIT_EXCEEDED, EventType.WORKER_LOST, EventType.REJECTED}
)

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
F_TRACEBACK: Final = "traceback"
F_ARGS: Final = "args"
F_KWARGS: Final = "kwargs"

# A line is at most PIPE_BUF bytes (4,096 on Linux) including its newline: POSIX makes a write of
# that size to a pipe atomic, so lines from several pool children never interleave. Docker's log
# drivers also split lines longer than 16 KiB. The worker shortens the traceback first to fit.
MAX_LINE_BYTES: Final = 4096
MAX_NAME_CHARS: Final = 200
MAX_EXC_TYPE_CHARS: Final = 200
MAX_EXC_MESSAGE_CHARS: Final = 512
MAX_REPR_CHARS: Final = 512
MAX_TRACEBACK_CHARS: Final = 4096

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
