"""The poison guard, in one process: each worker death republishes the message with its count, the
last allowed one fails it, and every death is one task event however close together they come.

The message is real (published by Celery to a real redis-server, fetched with kombu, acknowledged
there), and so is the `Request` and its `on_failure` (Celery's own, behind the guard and the task
event emitter); the pool's error callback is called as billiard calls it when a child dies.
`tests/runtime/test_worker_lost.py` shows the same with a real worker whose children really die.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import celery_fleet
import pytest
from billiard.einfo import ExceptionInfo
from celery import Celery, signals
from celery.exceptions import WorkerLostError
from celery.worker.request import Request
from celery_fleet import events
from celery_fleet.worker_lost import DEATHS_HEADER, uninstall_poison_guard

from tests.support.redis_server import RedisServer

QUEUE = "celery"


class ConsumerStandIn:
    """Celery's consumer sends task_received; the receivers only ask it for the app."""

    def __init__(self, app: Celery) -> None:
        self.app = app


def crash() -> None:
    """Never runs here: the tests play the pool's part."""


@pytest.fixture
def app(redis_server: RedisServer) -> Iterator[Celery]:
    celery_app = Celery("poison-test", set_as_current=False)
    celery_fleet.configure(
        celery_app, broker_url=redis_server.url, task_events=False, healthcheck=False, max_worker_deaths=3
    )

    celery_app.task(name="poison_test.crash")(crash)
    yield celery_app
    uninstall_poison_guard()
    celery_app.close()


@pytest.fixture
def lines(app: Celery) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    events.install(app, stream=stream, key=b"k" * 32)
    yield stream
    events.uninstall()


def deliver_and_lose_the_child(app: Celery) -> dict[str, Any]:
    """Take the next message off the queue as a worker does and report its child dead; its headers."""
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        message = channel.message_to_python(channel.basic_get(QUEUE))
        request = Request(
            message, app=app, task=app.tasks["poison_test.crash"], on_ack=lambda *_: message.ack()
        )
        signals.task_received.send(sender=ConsumerStandIn(app), request=request)
        try:
            raise WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL) Job: 1.")
        except WorkerLostError:
            request.on_failure(ExceptionInfo())
        return dict(message.headers)


def stored(redis_server: RedisServer) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in redis_server.client().lrange(QUEUE, 0, -1)]


def written(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["event"] for line in stream.getvalue().splitlines()]


def test_each_death_republishes_the_message_with_its_count(
    app: Celery, redis_server: RedisServer, lines: io.StringIO
) -> None:
    task_id = app.send_task("poison_test.crash").id
    assert DEATHS_HEADER not in deliver_and_lose_the_child(app)
    [again] = stored(redis_server)
    assert again["headers"]["id"] == task_id
    assert again["headers"][DEATHS_HEADER] == 1
    assert redis_server.client().hlen("unacked") == 0, "the delivery that died is acknowledged"

    assert deliver_and_lose_the_child(app)[DEATHS_HEADER] == 1
    assert [m["headers"][DEATHS_HEADER] for m in stored(redis_server)] == [2]
    # Two deaths of one task within milliseconds: two lines.
    assert written(lines) == ["worker_lost", "worker_lost"]


def test_the_last_allowed_death_fails_the_task_as_a_poison_message(
    app: Celery, redis_server: RedisServer, lines: io.StringIO
) -> None:
    app.send_task("poison_test.crash", args=[7])
    for _ in range(3):
        deliver_and_lose_the_child(app)
    assert stored(redis_server) == []
    assert redis_server.client().hlen("unacked") == 0
    assert written(lines) == ["worker_lost", "worker_lost", "poison_message"]
    record = json.loads(lines.getvalue().splitlines()[-1])
    assert record["exc_type"] == "PoisonMessageError"
    assert record["exc_message"].startswith(
        "worker process died under this task 3 times (max_worker_deaths=3)"
    )
    assert record["args"] == "[7]"


def test_max_worker_deaths_none_leaves_celerys_endless_requeue(
    redis_server: RedisServer, lines: io.StringIO, app: Celery
) -> None:
    celery_fleet.configure(
        app, broker_url=redis_server.url, task_events=False, healthcheck=False, max_worker_deaths=None
    )
    events.install(app, stream=lines, key=b"k" * 32)
    app.send_task("poison_test.crash")
    for _ in range(4):
        deliver_and_lose_the_child(app)
    [requeued] = stored(redis_server)
    assert DEATHS_HEADER not in requeued["headers"]
    assert written(lines) == ["worker_lost"] * 4


def test_max_worker_deaths_below_one_is_refused(app: Celery, redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match=r"max_worker_deaths=0 must be 1 or more \(None requeues"):
        celery_fleet.configure(app, broker_url=redis_server.url, task_events=False, max_worker_deaths=0)
