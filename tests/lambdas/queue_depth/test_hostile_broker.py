"""The publisher against broker contents nobody here wrote: real redis-server, real Celery messages.

A 30 MB message, 2,000 in-flight 100 KB messages, a message nested 100,000 deep and a key of the
wrong type, side by side with an ordinary queue: each affects its own figures only, and one poll's
peak Python memory (tracemalloc) stays far under the function's 128 MB goal.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from queue_depth.logic import MAX_UNACKED_BYTES, UNACKED_KEY, KeyProblem, QueueStats, read_queue_stats

from tests.lambdas.queue_depth.hostile import (
    BIG_QUEUE,
    CALM_QUEUE,
    QUEUES,
    WRONG_KEY,
    WRONG_QUEUE,
    Hostile,
    fill,
    hostile_app,
)
from tests.support.redis_server import RedisServer

NOW = 1_800_000_000.0
MEMORY_GOAL_BYTES = 128 * 1024 * 1024


@pytest.fixture
def app(redis_server: RedisServer) -> Iterator[Celery]:
    application = hostile_app(redis_server.url)
    yield application
    application.close()


def poll_with_peak(client: redis.Redis) -> tuple[QueueStats, int]:
    """One poll, and the most Python memory it held at once."""
    tracemalloc.start()
    try:
        stats = read_queue_stats(client, QUEUES, NOW)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return stats, peak


@pytest.fixture(scope="module")
def heavy() -> Iterator[tuple[Hostile, QueueStats, int]]:
    """The full hostile broker, written once for this module's read-only checks (about 10 s)."""
    with RedisServer() as server:
        application = hostile_app(server.url)
        client = server.client()
        with application.connection_for_read() as consumer:
            hostile = fill(application, client, consumer.default_channel, now=NOW)
            read_queue_stats(client, QUEUES, NOW)  # loads the scripts: the measured poll is a steady one
            stats, peak = poll_with_peak(client)
            yield hostile, stats, peak
        application.close()


def test_the_hostile_contents_are_what_the_test_claims(heavy: tuple[Hostile, QueueStats, int]) -> None:
    hostile, _, _ = heavy
    assert hostile.big_message_bytes > 30_000_000
    assert hostile.in_flight_entry_bytes > 100_000
    assert hostile.in_flight * hostile.in_flight_entry_bytes > MAX_UNACKED_BYTES


def test_each_readable_queue_keeps_its_exact_depth_and_age(heavy: tuple[Hostile, QueueStats, int]) -> None:
    hostile, stats, _ = heavy

    assert stats.waiting == hostile.waiting
    assert stats.oldest_age_s == hostile.oldest_age_s


def test_a_key_of_the_wrong_type_leaves_out_its_own_queue_and_says_what_it_is(
    heavy: tuple[Hostile, QueueStats, int],
) -> None:
    _, stats, _ = heavy

    assert WRONG_QUEUE not in stats.waiting
    assert stats.problems == (KeyProblem(key=WRONG_KEY, found="a string", queue=WRONG_QUEUE),)
    assert stats.problems[0].describe() == (
        "'wrong\\x06\\x163' is a string, not a list: queue 'wrong' left out of this poll"
    )


def test_in_flight_past_the_byte_budget_is_counted_broker_wide_and_left_out_per_queue(
    heavy: tuple[Hostile, QueueStats, int],
) -> None:
    hostile, stats, _ = heavy

    assert stats.in_flight == hostile.in_flight
    assert stats.in_flight_by_queue is None


def test_one_poll_of_the_hostile_broker_holds_under_128_mb(heavy: tuple[Hostile, QueueStats, int]) -> None:
    _, _, peak = heavy

    assert peak < MEMORY_GOAL_BYTES
    # Not a timing: what reaches the function is figures, a few bytes per queue, never messages.
    assert peak < 1024 * 1024


def test_in_flight_within_the_byte_budget_is_exact_per_queue(redis_server: RedisServer, app: Celery) -> None:
    client = redis_server.client()
    with app.connection_for_read() as consumer:
        hostile = fill(app, client, consumer.default_channel, now=NOW, big_message_mb=1, in_flight=200)
        stats = read_queue_stats(client, QUEUES, NOW)

    assert stats.in_flight_by_queue == hostile.in_flight_by_queue
    assert stats.waiting == hostile.waiting


def test_an_unacked_key_that_is_not_a_hash_leaves_out_only_the_in_flight_figures(
    redis_server: RedisServer, app: Celery
) -> None:
    client = redis_server.client()
    app.tasks["tests.queue_depth.hostile"].apply_async(("calm",), queue=CALM_QUEUE)
    client.rpush(UNACKED_KEY, "a list where kombu keeps a hash")

    stats = read_queue_stats(client, [CALM_QUEUE, BIG_QUEUE], NOW)

    assert stats.waiting == {CALM_QUEUE: 1, BIG_QUEUE: 0}
    assert (stats.in_flight, stats.in_flight_by_queue) == (None, None)
    assert stats.problems == (KeyProblem(key=UNACKED_KEY, found="a list", queue=None),)


def test_every_key_type_redis_has_is_reported_by_name(redis_server: RedisServer) -> None:
    client = redis_server.client()
    writers: dict[str, Any] = {
        "string": lambda key: client.set(key, "x"),
        "hash": lambda key: client.hset(key, "f", "v"),
        "set": lambda key: client.sadd(key, "m"),
        "zset": lambda key: client.zadd(key, {"m": 1}),
        "stream": lambda key: client.xadd(key, {"f": "v"}),
    }
    for kind, write in writers.items():
        write(f"q-{kind}")

    stats = read_queue_stats(client, [f"q-{kind}" for kind in writers], NOW)

    assert stats.waiting == {}
    assert [problem.found for problem in stats.problems] == [f"a {kind}" for kind in writers]
