"""A broker nobody here wrote: huge, deep and wrongly typed contents beside ordinary queues.

Shared by the publisher's tests and bench/queue_depth_poll.py --heavy. Every message is a real
Celery message (apply_async), every in-flight one a real kombu delivery left unacknowledged, except
the deeply nested one and the wrongly typed key, which no Celery producer could write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from celery.signals import before_task_publish
from celery_fleet.contract.queue_metrics import SENT_AT_HEADER
from queue_depth.logic import UNACKED_KEY

TASK_NAME = "tests.queue_depth.hostile"
CALM_QUEUE = "calm"
BIG_QUEUE = "big"
NESTED_QUEUE = "nested"
WRONG_QUEUE = "wrong"
IN_FLIGHT_QUEUE = "inflight"
QUEUES = (CALM_QUEUE, BIG_QUEUE, NESTED_QUEUE, WRONG_QUEUE, IN_FLIGHT_QUEUE)
WRONG_KEY = f"{WRONG_QUEUE}\x06\x163"
# A JSON document nested far past Python's recursion limit (1,000): json.loads raises RecursionError.
NESTING = 100_000


@dataclass(frozen=True)
class Hostile:
    """What was written, and the figures an exact poll reports for each queue."""

    now: float
    waiting: dict[str, int]
    oldest_age_s: dict[str, float]
    # Exact per-queue counts of `unacked`, as a poll that reads it whole reports them.
    in_flight_by_queue: dict[str, int]
    in_flight: int
    big_message_bytes: int
    in_flight_entry_bytes: int


def work(payload: str) -> str:
    """The hostile tasks: published, never run."""
    return payload


def hostile_app(broker_url: str) -> Celery:
    app = Celery("queue-depth-hostile", broker=broker_url, set_as_current=False)
    app.task(name=TASK_NAME, shared=False)(work)
    return app


def fill(
    app: Celery,
    client: redis.Redis,
    consumer_channel: Any,
    *,
    now: float,
    big_message_mb: int = 30,
    in_flight: int = 2000,
    in_flight_kb: int = 100,
) -> Hostile:
    """Write the hostile broker; `consumer_channel` keeps the in-flight deliveries unacknowledged."""
    stamp: dict[str, float] = {"at": now}

    def stamper(sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
        if headers is not None and sender == TASK_NAME:
            headers[SENT_AT_HEADER] = stamp["at"]

    before_task_publish.connect(stamper, weak=False)
    task = app.tasks[TASK_NAME]
    try:
        stamp["at"] = now - 30
        for _ in range(5):
            task.apply_async(("calm",), queue=CALM_QUEUE)
        # kombu base64-encodes the body: 3 bytes of argument become 4 stored.
        stamp["at"] = now - 600
        task.apply_async(("x" * (big_message_mb * 1024 * 1024 * 3 // 4),), queue=BIG_QUEUE)
        stamp["at"] = now - 60
        task.apply_async(("small",), queue=BIG_QUEUE)
        stamp["at"] = now - 90
        task.apply_async(("nested neighbour",), queue=NESTED_QUEUE)
        stamp["at"] = now - 45
        task.apply_async(("wrong neighbour",), queue=WRONG_QUEUE, priority=0)
        stamp["at"] = now - 10
        for _ in range(in_flight):
            task.apply_async(("y" * (in_flight_kb * 1024 * 3 // 4),), queue=IN_FLIGHT_QUEUE)
        task.apply_async(("left waiting",), queue=IN_FLIGHT_QUEUE)
    finally:
        before_task_publish.disconnect(stamper)
    # Next out of NESTED_QUEUE, and a string where a priority list of WRONG_QUEUE belongs.
    client.rpush(NESTED_QUEUE, "[" * NESTING + "]" * NESTING)
    client.set(WRONG_KEY, "not a list")
    for _ in range(in_flight):
        assert consumer_channel.basic_get(IN_FLIGHT_QUEUE, no_ack=False) is not None
    big = client.lindex(BIG_QUEUE, -1)
    _, entries = client.hscan(UNACKED_KEY, 0, count=1)
    assert isinstance(entries, dict)
    entry = next(iter(entries.values()))
    return Hostile(
        now=now,
        waiting={CALM_QUEUE: 5, BIG_QUEUE: 2, NESTED_QUEUE: 2, IN_FLIGHT_QUEUE: 1},
        oldest_age_s={CALM_QUEUE: 30.0, BIG_QUEUE: 600.0, NESTED_QUEUE: 90.0, IN_FLIGHT_QUEUE: 10.0},
        in_flight_by_queue={queue: (in_flight if queue == IN_FLIGHT_QUEUE else 0) for queue in QUEUES},
        in_flight=in_flight,
        big_message_bytes=len(big) if isinstance(big, bytes) else 0,
        in_flight_entry_bytes=len(entry),
    )
