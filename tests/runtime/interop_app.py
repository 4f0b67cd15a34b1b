"""One Celery app, with or without celery_fleet, for the message interop tests.

`INTEROP_MODE=fleet` configures it with `celery_fleet.configure` (slim messages, task events);
anything else leaves it as stock Celery, as a worker or web app that never installed celery_fleet.
Run as a module it publishes (`python -m tests.runtime.interop_app publish`), so a stock producer
runs in its own process: configure's publish handler is process-wide and would slim its messages.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import redis
from celery import Celery, chain

MODE = os.environ.get("INTEROP_MODE", "plain")
QUEUE = "interop"
# Arguments that exercise the JSON body where base64 hid it: quotes, backslashes, non-ASCII.
TRICKY_ARGS: list[Any] = ['naïve "quoted" \\ ✓', {"nested": [1, 2.5, None, True], "empty": {}}]

app = Celery("interop_app", set_as_current=False)
if MODE == "fleet":
    import celery_fleet

    celery_fleet.configure(
        app,
        max_task_runtime_s=30,
        max_countdown_s=10,
        visibility_margin_s=5,
        stop_timeout_s=5,
        shutdown_margin_s=2,
        healthcheck=False,
        task_default_queue=QUEUE,
    )
else:
    app.conf.update(
        broker_url=os.environ.get("CELERY_FLEET_BROKER_URL"),
        task_default_queue=QUEUE,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
    )

_ledgers: dict[int, redis.Redis] = {}


def ledger() -> redis.Redis:
    pid = os.getpid()
    if pid not in _ledgers:
        _ledgers[pid] = redis.Redis.from_url(os.environ["FLEET_TEST_LEDGER_URL"])
    return _ledgers[pid]


def _record(request: Any, args: Any, kwargs: Any) -> None:
    ledger().rpush(
        f"ran:{request.id}",
        json.dumps(
            {
                "worker": MODE,
                "args": args,
                "kwargs": kwargs,
                "retries": request.retries,
                "root_id": request.root_id,
                "parent_id": request.parent_id,
                "eta": request.eta,
            }
        ),
    )


@app.task(name="interop.record", bind=True)  # type: ignore[untyped-decorator]  # Celery has no type hints
def record(self: Any, *args: Any, **kwargs: Any) -> None:
    """Writes what the worker decoded from the message to the ledger."""
    _record(self.request, list(args), kwargs)


@app.task(name="interop.retry_once", bind=True, max_retries=2)  # type: ignore[untyped-decorator]
def retry_once(self: Any, token: str) -> None:
    """Retries once (its first run sees retries=0 even when the header was left out), then records."""
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    _record(self.request, [token], {})


def publish() -> dict[str, str]:
    """Publishes one of each message kind the tests check; returns their task ids by kind."""
    plain = record.apply_async(args=TRICKY_ARGS, kwargs={"url": "https://example.com/a?b=1"})
    later = record.apply_async(args=["later"], countdown=1)
    retried = retry_once.apply_async(args=[f"{MODE}-token"])
    steps = chain(record.si("step-1"), record.si("step-2")).apply_async()
    return {
        "plain": plain.id,
        "countdown": later.id,
        "retried": retried.id,
        "chain_first": steps.parent.id,
        "chain_second": steps.id,
    }


if __name__ == "__main__" and sys.argv[1:] == ["publish"]:
    print(json.dumps(publish()))
