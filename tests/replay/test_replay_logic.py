"""Replay's rules, against a real redis-server and moto's S3: queues, priorities, limits, at-most-once."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import redis
from celery_fleet.contract import kept_messages as km
from celery_fleet.contract.queue_metrics import SENT_AT_HEADER
from replay.logic import Candidate, ReplayOptions, priority_list, replay
from replay.store import S3Store

from tests.replay.conftest import BUCKET
from tests.support.redis_server import RedisServer


def _keep(
    s3: Any,
    task_id: str,
    *,
    task: str = "t.a",
    queue: str = "q",
    priority: int | None = None,
    exchange: str = "",
) -> Candidate:
    message = {
        "body": json.dumps([[task_id], {}, {}]),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"task": task, "id": task_id, SENT_AT_HEADER: 1.0},
        "properties": {
            "correlation_id": task_id,
            "priority": priority,
            "delivery_tag": "tag-" + task_id,
            "delivery_info": {"exchange": exchange, "routing_key": queue},
        },
    }
    envelope = {
        "v": 1,
        "task_id": task_id,
        "task": task,
        "exchange": exchange,
        "routing_key": queue,
        "kept_at": 1.0,
        "message": json.dumps(message),
    }
    key = km.message_key(task_id)
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(envelope).encode())
    return Candidate(task_id, key)


@pytest.fixture
def broker(redis_server: RedisServer) -> redis.Redis:
    return redis_server.client()


def test_priorities_go_to_kombus_sibling_lists() -> None:
    assert [priority_list("q", p) for p in (None, 0, 2, 3, 5, 6, 9, 12, "x")] == [
        "q",
        "q",
        "q",
        "q\x06\x163",
        "q\x06\x163",
        "q\x06\x166",
        "q\x06\x169",
        "q\x06\x169",
        "q",
    ]


def test_a_message_goes_back_to_its_priority_list_as_a_new_task_linked_to_its_original(
    s3: Any, broker: redis.Redis
) -> None:
    candidate = _keep(s3, "orig-1", priority=6)

    report = replay(
        [candidate],
        store=S3Store(s3, BUCKET),
        broker=broker,
        options=ReplayOptions(),
        wall_clock=lambda: 500.0,
        new_id=lambda: "new-1",
    )

    (raw,) = broker.lrange("q\x06\x166", 0, -1)
    message = json.loads(raw)
    assert report.replayed == {"orig-1": "new-1"}
    assert message["headers"] == {
        "task": "t.a",
        "id": "new-1",
        SENT_AT_HEADER: 500.0,
        km.REPLAY_OF_HEADER: "orig-1",
    }
    assert message["properties"]["correlation_id"] == "new-1"
    assert message["properties"]["delivery_tag"] != "tag-orig-1"
    assert message["body"] == json.dumps([["orig-1"], {}, {}])


def test_a_named_exchange_routes_by_its_binding_table(s3: Any, broker: redis.Redis) -> None:
    broker.sadd("_kombu.binding.tasks", "rk\x06\x16\x06\x16real-queue")
    candidate = _keep(s3, "orig-2", queue="rk", exchange="tasks")

    replay([candidate], store=S3Store(s3, BUCKET), broker=broker, options=ReplayOptions())

    assert broker.llen("real-queue") == 1


def test_dry_run_counts_per_task_and_queue_and_pushes_nothing(s3: Any, broker: redis.Redis) -> None:
    candidates = [_keep(s3, "a1"), _keep(s3, "a2"), _keep(s3, "b1", task="t.b", queue="other")]
    missing = Candidate("gone", km.message_key("gone"))

    report = replay(
        [*candidates, missing], store=S3Store(s3, BUCKET), broker=broker, options=ReplayOptions(dry_run=True)
    )

    assert report.by_task_and_queue == Counter({("t.a", "q"): 2, ("t.b", "other"): 1})
    assert report.not_kept == ["gone"]
    assert broker.llen("q") == broker.llen("other") == 0
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=km.REPLAYS_PREFIX)["KeyCount"] == 0


def test_a_message_is_replayed_once_unless_forced(s3: Any, broker: redis.Redis) -> None:
    candidate = _keep(s3, "once")
    store = S3Store(s3, BUCKET)

    runs = [
        replay([candidate], store=store, broker=broker, options=options)
        for options in (
            ReplayOptions(),
            ReplayOptions(),
            ReplayOptions(dry_run=True),
            ReplayOptions(force=True),
        )
    ]

    assert [run.count for run in runs] == [1, 0, 0, 1]
    assert runs[1].already_replayed == runs[2].already_replayed == ["once"]
    assert broker.llen("q") == 2


def test_the_rate_limit_spaces_pushes(s3: Any, broker: redis.Redis) -> None:
    candidates = [_keep(s3, f"r{i}") for i in range(4)]
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(round(seconds, 6))
        now[0] += seconds

    replay(
        candidates,
        store=S3Store(s3, BUCKET),
        broker=broker,
        options=ReplayOptions(rate_per_s=2),
        clock=lambda: now[0],
        sleep=sleep,
    )

    assert sleeps == [0.5, 0.5, 0.5]


def test_candidates_past_the_deadline_are_handed_back(s3: Any, broker: redis.Redis) -> None:
    candidates = [_keep(s3, f"d{i}") for i in range(3)]
    ticks = iter([0.0, 0.0, 0.0, 0.0, 10.0, 10.0])

    report = replay(
        candidates,
        store=S3Store(s3, BUCKET),
        broker=broker,
        options=ReplayOptions(),
        clock=lambda: next(ticks),
        deadline=5.0,
    )

    assert (report.count, [c.task_id for c in report.remaining]) == (1, ["d1", "d2"])


def test_a_push_that_fails_leaves_no_marker(s3: Any, redis_server: RedisServer) -> None:
    candidate = _keep(s3, "unpushed")
    dead = redis.Redis(host="127.0.0.1", port=redis_server.port)
    redis_server.stop()

    report = replay([candidate], store=S3Store(s3, BUCKET), broker=dead, options=ReplayOptions())

    assert report.failed == ["unpushed"]
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=km.REPLAYS_PREFIX)["KeyCount"] == 0


def test_an_object_that_is_not_a_kept_message_is_refused(s3: Any, broker: redis.Redis) -> None:
    s3.put_object(Bucket=BUCKET, Key=km.message_key("junk"), Body=b'{"v": 1, "message": "{}"}')
    outside = Candidate("elsewhere", "replays/elsewhere.json")

    report = replay(
        [Candidate("junk", km.message_key("junk")), outside],
        store=S3Store(s3, BUCKET),
        broker=broker,
        options=ReplayOptions(),
    )

    assert sorted(report.invalid) == ["elsewhere", "junk"]
