"""The keeper in a real worker: only final failures are kept, and a failing store costs the task nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery_fleet import configure, keep
from celery_fleet.contract import kept_messages as km

from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow


class ListStore:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.puts: list[tuple[str, bytes]] = []

    def put(self, key: str, data: bytes) -> None:
        if self.fail:
            raise ConnectionError("S3 unreachable")
        self.puts.append((key, data))


@pytest.fixture(autouse=True)
def _keeper_disconnected_after() -> Iterator[None]:
    yield
    keep.uninstall()


def _app(server: RedisServer, store: ListStore) -> Celery:
    app = Celery("keep_test", set_as_current=False)
    configure(
        app,
        broker_url=server.url,
        max_task_runtime_s=30,
        max_countdown_s=5,
        stop_timeout_s=4,
        shutdown_margin_s=2,
        healthcheck=False,
        task_events=False,
        failed_message_store=store,
        task_default_queue="keep",
    )
    return app


def _wait(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_only_the_final_failure_of_a_retried_task_is_kept(redis_server: RedisServer) -> None:
    store = ListStore()
    app = _app(redis_server, store)
    attempts: list[int] = []

    def flaky(self: Any) -> None:
        attempts.append(self.request.retries)
        raise ConnectionError("down")

    app.task(
        name="keep.flaky", bind=True, autoretry_for=(ConnectionError,), max_retries=2, default_retry_delay=0
    )(flaky)
    result = app.send_task("keep.flaky")

    with start_worker(app, pool="threads", concurrency=1, perform_ping_check=False, shutdown_timeout=5):
        _wait(lambda: len(attempts) == 3 and bool(store.puts))
        time.sleep(0.3)

    ((key, data),) = store.puts
    kept = json.loads(json.loads(data)["message"])
    assert key == km.message_key(result.id)
    assert kept["headers"]["retries"] == 2


def test_a_store_that_fails_leaves_the_task_failing_as_before(redis_server: RedisServer) -> None:
    store = ListStore(fail=True)
    app = _app(redis_server, store)
    client = redis_server.client()

    def boom() -> None:
        raise ValueError("bad input")

    app.task(name="keep.boom")(boom)
    app.send_task("keep.boom")

    with start_worker(app, pool="threads", concurrency=1, perform_ping_check=False, shutdown_timeout=5):
        _wait(lambda: keep._INSTALLED[0].errors == 1 and client.hlen("unacked") == 0)

    assert (keep._INSTALLED[0].kept, client.llen("keep")) == (0, 0)
