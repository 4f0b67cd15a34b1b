"""The Celery app the task-event end-to-end test runs in a real worker, configured by celery_fleet.

Each task ends in a known way, so the test knows exactly which event lines the worker must write.
"""

from __future__ import annotations

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
    raise PermissionError(f"login refused for {user}")


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
