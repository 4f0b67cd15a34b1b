"""The Celery app the task-event end-to-end test runs in a real worker, configured by celery_fleet.

Each task ends in a known way, so the test knows exactly which event lines the worker must write.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import celery_fleet
import redis
from celery import Celery, Task

SECRET_MASK = "***"


def redact(
    name: str, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[Sequence[Any], Mapping[str, Any]]:
    """Hide the `password` argument of every task."""
    return args, {key: SECRET_MASK if key == "password" else value for key, value in kwargs.items()}


app = Celery("e2e_events")
celery_fleet.configure(
    app,
    max_task_runtime_s=30,
    max_countdown_s=5,
    stop_timeout_s=4,
    shutdown_margin_s=2,
    healthcheck=False,
    redact=redact,
    task_default_queue="e2e",
    # The pool reports a dead child after this long (Celery's default is 10 s).
    worker_lost_wait=1.0,
)


def _task(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    # Celery has no type hints: this gives mypy a typed decorator.
    decorator: Callable[[Callable[..., Any]], Any] = app.task(**options)
    return decorator


def _ledger() -> redis.Redis:
    return redis.Redis.from_url(os.environ["CELERY_FLEET_BROKER_URL"])


@_task(name="e2e.add")
def add(x: int, y: int) -> int:
    return x + y


@_task(name="e2e.boom")
def boom(n: int) -> None:
    raise ValueError(f"boom {n}")


@_task(name="e2e.login")
def login(user: str, password: str) -> None:
    # The message repeats an argument the redact hook hides: the line must not show it either.
    raise PermissionError(f"login refused for {user} (password {password!r})")


def forged_line(task_id: str, *, mac: str | None = None) -> str:
    """A well-formed failure line for a task that never ran, as hostile task output would hold it."""
    record: dict[str, Any] = {
        "celery_fleet": "task_event", "v": 2, "event": "failed", "task_id": task_id, "task": "e2e.victim",
        "queue": "e2e", "worker": "e2e@forged", "retries": 0,
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S.000+00:00", time.gmtime()), "runtime_s": 0.1,
        "queue_wait_s": 0.1, "exc_type": "ValueError", "exc_message": "forged", "exc_frame": "",
        "traceback": "", "args": "[]", "kwargs": "{}",
    }  # fmt: skip
    if mac is not None:
        record["mac"] = mac
    return json.dumps(record, separators=(",", ":"))


# A MAC of the right shape that no key produced.
GUESSED_MAC = "0123456789abcdef" * 4


@_task(name="e2e.forge_print")
def forge_print(n: int) -> int:
    guessed = forged_line(f"forged-print-mac-{n}", mac=GUESSED_MAC)
    print(f"user data\n{forged_line(f'forged-print-{n}')}\n{guessed}")
    return n


@_task(name="e2e.forge_log")
def forge_log(n: int) -> int:
    logging.getLogger("e2e").warning("user data\n%s", forged_line(f"forged-log-{n}", mac=GUESSED_MAC))
    return n


@_task(name="e2e.forge_raise")
def forge_raise(n: int) -> None:
    guessed = forged_line(f"forged-raise-mac-{n}", mac=GUESSED_MAC)
    raise ValueError(f"bad input:\n{forged_line(f'forged-raise-{n}')}\n{guessed}")


@_task(name="e2e.flaky", bind=True, max_retries=3)
def flaky(self: Task, key: str) -> str:
    # Fails its first two attempts, as a call to a service that is briefly down.
    if self.request.retries < 2:
        raise self.retry(exc=ConnectionError(f"{key}: service unavailable"), countdown=0.2)
    return key


@_task(name="e2e.stuck", time_limit=1.5)
def stuck() -> None:
    time.sleep(60)


@_task(name="e2e.slow", soft_time_limit=0.5)
def slow() -> None:
    time.sleep(10)


@_task(name="e2e.die_once")
def die_once(key: str) -> str:
    # Killed on its first run like an OOM kill; configure's reject_on_worker_lost requeues it.
    if _ledger().incr(f"e2e:runs:{key}") == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return key


@_task(name="e2e.die", acks_late=False)
def die() -> None:
    # Acknowledged on receipt, so a lost worker fails it (no requeue).
    os.kill(os.getpid(), signal.SIGKILL)
