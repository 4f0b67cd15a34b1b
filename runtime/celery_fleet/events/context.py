"""Reading what Celery's signals hand over: request contexts, messages and failure info.

A context is the task's `request` (Celery's `Context`), a worker `Request`'s `request_dict`, or a
plain dict: `lookup` reads any of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from celery_fleet.contract.queue_metrics import SENT_AT_HEADER

UNDECODABLE = "<undecodable message>"


def lookup(context: Any, key: str) -> Any:
    """`key` of `context`, None when it has none."""
    # dicts, Mappings and Celery's Context (whose get() reads an attribute) all answer get().
    if context is None:
        return None
    get = getattr(context, "get", None)
    return get(key) if get is not None else getattr(context, key, None)


def own_request(task: Any, task_id: str) -> Any:
    """The context of `task_id` for an outcome the main process reports without its `Request`."""
    # Celery pushes the request's context before firing task_failure from the main process.
    request = getattr(task, "request", None)
    return request if lookup(request, "id") == task_id else {"id": task_id}


def queue_wait(context: Any, started_at: float) -> float | None:
    """Seconds the attempt waited: from its send stamp, or its ETA if later, to `started_at`."""
    sent_at = lookup(context, SENT_AT_HEADER)
    if sent_at is None:
        headers = lookup(context, "headers")
        sent_at = headers.get(SENT_AT_HEADER) if isinstance(headers, Mapping) else None
    if isinstance(sent_at, bool) or not isinstance(sent_at, int | float):
        return None
    due = float(sent_at)
    eta = lookup(context, "eta")
    if isinstance(eta, str) and eta:
        # A countdown or ETA is not waiting: it was asked for.
        try:
            when = datetime.fromisoformat(eta)
        except ValueError:
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            due = max(due, when.timestamp())
    return max(0.0, started_at - due)


def traceback_text(einfo: Any) -> str | None:
    """The traceback text of a failure's `einfo` (billiard's ExceptionInfo), if it has one."""
    if einfo is None:
        return None
    text = getattr(einfo, "traceback", None)
    return text if isinstance(text, str) else None


def message_arguments(message: Any) -> tuple[Any, Any]:
    """The (args, kwargs) a message's body holds (task protocol 2 or 1), or text saying it has none."""
    try:
        body = message.decode()
    except Exception:
        return UNDECODABLE, UNDECODABLE
    if isinstance(body, list | tuple) and len(body) >= 2:
        return body[0], body[1]
    if isinstance(body, Mapping):
        return body.get("args", ()), body.get("kwargs", {})
    return UNDECODABLE, UNDECODABLE
