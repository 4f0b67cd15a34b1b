"""Done-when: tasks with 200 KiB arguments fail on a flaky dependency, their messages are kept,
replay puts back byte-identical bodies, and a real worker runs each to success exactly once.

Real redis-server, real Celery worker (in this process, threads pool, so that moto's S3 stands in
for the bucket), real messages; the replay is the Lambda's own logic.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery_fleet import configure, events, keep
from celery_fleet.contract import kept_messages as km
from celery_fleet.contract import task_events as te
from replay.logic import Candidate, ReplayOptions, replay
from replay.store import S3Store

from tests.replay.conftest import BUCKET
from tests.support.redis_server import RedisServer

QUEUE = "replay-e2e"
TASK = "e2e.flaky_dependency"
TASKS = 3
ARGUMENT_BYTES = 200 * 1024
DEPENDENCY_UP = "e2e:dependency-up"
DONE = "e2e:done"

pytestmark = pytest.mark.slow


def _wait(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def _signals_disconnected_after() -> Iterator[None]:
    # The keeper and the emitter connect to Celery's process-wide signals.
    yield
    events.uninstall()
    keep.uninstall()


def _lines(stream: io.StringIO, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line[te.F_EVENT] == event]


def _app(server: RedisServer, s3: Any, stream: io.StringIO) -> Celery:
    app = Celery("replay_e2e", set_as_current=False)
    configure(
        app,
        broker_url=server.url,
        max_task_runtime_s=30,
        max_countdown_s=5,
        stop_timeout_s=4,
        shutdown_margin_s=2,
        healthcheck=False,
        task_events=False,
        failed_message_store=keep.S3MessageStore(BUCKET, client_factory=lambda: s3),
        task_default_queue=QUEUE,
    )
    # After the keeper, as configure installs them: the failure line carries the kept message's key.
    events.install(app, stream=stream, key=b"test-key")
    client = server.client()

    def flaky_dependency(self: Any, item: int, payload: str) -> int:
        if not client.exists(DEPENDENCY_UP):
            raise ConnectionError("dependency unavailable")
        replay_of = getattr(self.request, km.REPLAY_OF_HEADER, None)
        client.rpush(DONE, json.dumps([item, self.request.id, replay_of, len(payload)]))
        return item

    app.task(name=TASK, bind=True)(flaky_dependency)
    return app


def _kept(s3: Any) -> dict[str, dict[str, Any]]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=km.MESSAGES_PREFIX).get("Contents", [])
    envelopes = [json.loads(s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()) for o in listed]
    return {envelope["task_id"]: envelope for envelope in envelopes}


def test_failed_tasks_are_kept_then_replayed_byte_identical_and_run_once(
    redis_server: RedisServer, s3: Any
) -> None:
    stream = io.StringIO()
    app = _app(redis_server, s3, stream)
    client: redis.Redis = redis_server.client()
    payloads = {item: os.urandom(ARGUMENT_BYTES // 2).hex() for item in range(TASKS)}
    sent = {app.send_task(TASK, args=[item, payload]).id: item for item, payload in payloads.items()}
    as_queued = {json.loads(raw)["headers"]["id"]: raw for raw in client.lrange(QUEUE, 0, -1)}
    assert set(as_queued) == set(sent)

    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, shutdown_timeout=5):
        _wait(lambda: len(_kept(s3)) == TASKS)
    kept = _kept(s3)

    # Kept exactly as the broker held each message, with the delivery it came from.
    for task_id, envelope in kept.items():
        assert envelope["message"].encode() == as_queued[task_id]
        assert (envelope["task"], envelope["routing_key"]) == (TASK, QUEUE)
    store = S3Store(s3, BUCKET)
    # What the failure records point to, as the CLI reads them from CloudWatch Logs.
    failed = _lines(stream, "failed")
    assert sorted(line[te.F_TASK_ID] for line in failed) == sorted(sent)
    candidates = [Candidate(line[te.F_TASK_ID], line[te.F_KEPT_MESSAGE]) for line in failed]

    dry = replay(candidates, store=store, broker=client, options=ReplayOptions(dry_run=True))
    assert dry.by_task_and_queue == Counter({(TASK, QUEUE): TASKS})
    assert client.llen(QUEUE) == 0

    client.set(DEPENDENCY_UP, 1)
    first = replay(candidates, store=store, broker=client, options=ReplayOptions(rate_per_s=100))
    assert first.count == TASKS
    replayed = [json.loads(raw) for raw in client.lrange(QUEUE, 0, -1)]
    for message in replayed:
        original = message["headers"][km.REPLAY_OF_HEADER]
        assert message["body"] == json.loads(kept[original]["message"])["body"]
        assert message["headers"]["id"] == first.replayed[original] != original

    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, shutdown_timeout=5):
        _wait(lambda: client.llen(DONE) == TASKS and client.llen(QUEUE) == 0)
        time.sleep(0.5)
    done = [json.loads(raw) for raw in client.lrange(DONE, 0, -1)]
    assert sorted(item for item, *_ in done) == sorted(payloads)
    assert {replay_of: task_id for _, task_id, replay_of, _ in done} == first.replayed
    assert {item: size for item, _, _, size in done} == {item: len(p) for item, p in payloads.items()}
    # The replayed tasks' own events name the task each replays.
    succeeded = _lines(stream, "succeeded")
    assert {line[te.F_REPLAY_OF]: line[te.F_TASK_ID] for line in succeeded} == first.replayed

    second = replay(candidates, store=store, broker=client, options=ReplayOptions(rate_per_s=100))
    assert (second.count, sorted(second.already_replayed), client.llen(QUEUE)) == (0, sorted(sent), 0)
