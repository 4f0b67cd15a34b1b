"""read_queue_stats against a real redis-server filled by a real Celery app's apply_async."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from celery_fleet.contract.queue_metrics import SENT_AT_HEADER
from queue_depth.logic import UNACKED_KEY, read_queue_stats, sibling_keys

from tests.lambdas.queue_depth.conftest import SendStamp, deliver_without_ack, make_app, send
from tests.support.redis_server import RedisServer

NOW = 1_800_000_000.0


def sent_at(raw_message: bytes | str | None) -> float | None:
    """The send stamp of a stored message, read the plain way (the test's own check of the list)."""
    assert raw_message is not None
    stamp = json.loads(raw_message)["headers"].get(SENT_AT_HEADER)
    return None if stamp is None else float(stamp)


def test_depth_sums_the_bare_list_and_its_priority_siblings(
    redis_server: RedisServer, celery_app: Celery
) -> None:
    for priority in (None, 0, 1, 3, 5, 6, 9):
        send(celery_app, "alpha", priority=priority)
    client = redis_server.client()
    # kombu's default steps file priorities 0-2 under the bare name, 3-5 under \x06\x163, and so on.
    assert client.llen("alpha") == 3
    assert [client.llen(f"alpha\x06\x16{step}") for step in (3, 6, 9)] == [2, 1, 1]

    stats = read_queue_stats(client, ["alpha"], NOW)

    assert stats.waiting == {"alpha": 7}


def test_depth_counts_every_step_of_an_app_with_ten_priority_steps(redis_server: RedisServer) -> None:
    app = make_app(redis_server.url, priority_steps=list(range(10)), queue_order_strategy="priority")
    for priority in range(10):
        send(app, "alpha", priority=priority, count=priority + 1)
    client = redis_server.client()
    assert client.llen("alpha\x06\x167") == 8

    stats = read_queue_stats(client, ["alpha"], NOW)

    app.close()
    assert stats.waiting == {"alpha": sum(range(1, 11))}


def test_each_queue_is_counted_apart(redis_server: RedisServer, celery_app: Celery) -> None:
    send(celery_app, "alpha", count=4)
    send(celery_app, "beta", count=2, priority=6)

    stats = read_queue_stats(redis_server.client(), ["alpha", "beta"], NOW)

    assert stats.waiting == {"alpha": 4, "beta": 2}


def test_a_queue_that_never_received_a_task_has_depth_zero_and_no_age(
    redis_server: RedisServer, celery_app: Celery, stamp: SendStamp
) -> None:
    stamp.at = NOW - 30
    send(celery_app, "alpha")

    stats = read_queue_stats(redis_server.client(), ["alpha", "never-used"], NOW)

    assert stats.waiting["never-used"] == 0
    assert "never-used" not in stats.oldest_age_s


def test_age_is_measured_from_the_oldest_message_of_a_list(
    redis_server: RedisServer, celery_app: Celery, stamp: SendStamp
) -> None:
    for sent in (NOW - 500, NOW - 400, NOW - 300):
        stamp.at = sent
        send(celery_app, "alpha")

    stats = read_queue_stats(redis_server.client(), ["alpha"], NOW)

    assert stats.oldest_age_s == {"alpha": 500.0}


def test_age_is_the_oldest_among_the_priority_siblings(
    redis_server: RedisServer, celery_app: Celery, stamp: SendStamp
) -> None:
    # The oldest task waits in a low-priority sibling, behind newer high-priority ones.
    for sent, priority in ((NOW - 900, 9), (NOW - 200, 0), (NOW - 600, 3)):
        stamp.at = sent
        send(celery_app, "alpha", priority=priority)

    stats = read_queue_stats(redis_server.client(), ["alpha"], NOW)

    assert stats.oldest_age_s == {"alpha": 900.0}


def test_a_queue_of_unstamped_messages_has_no_age(
    redis_server: RedisServer, celery_app: Celery, stamp: SendStamp
) -> None:
    stamp.at = None
    send(celery_app, "alpha", count=3)

    stats = read_queue_stats(redis_server.client(), ["alpha"], NOW)

    assert stats.waiting == {"alpha": 3}
    assert stats.oldest_age_s == {}


def test_a_message_requeued_by_a_reject_to_the_head_of_its_list_is_the_oldest(
    redis_server: RedisServer, celery_app: Celery, stamp: SendStamp
) -> None:
    for sent in (NOW - 700, NOW - 100):
        stamp.at = sent
        send(celery_app, "alpha")
    client = redis_server.client()
    with celery_app.connection_for_read() as connection:
        deliver_without_ack(connection.default_channel, "alpha").reject(requeue=True)
        # kombu's QoS.reject(requeue=True) LPUSHed it: first in the list, the newer one still last.
        assert [sent_at(client.lindex("alpha", index)) for index in (0, -1)] == [NOW - 700, NOW - 100]

        stats = read_queue_stats(client, ["alpha"], NOW)

    assert (stats.waiting, stats.oldest_age_s) == ({"alpha": 2}, {"alpha": 700.0})


def test_a_newer_message_at_the_head_leaves_the_oldest_at_the_tail(
    redis_server: RedisServer, celery_app: Celery, stamp: SendStamp
) -> None:
    # The usual order, with a stamp at both ends: the head must not win because it is read too.
    for sent in (NOW - 300, NOW - 20):
        stamp.at = sent
        send(celery_app, "alpha")

    stats = read_queue_stats(redis_server.client(), ["alpha"], NOW)

    assert stats.oldest_age_s == {"alpha": 300.0}


def test_an_unstamped_oldest_message_in_one_sibling_leaves_the_stamped_ones(
    redis_server: RedisServer, celery_app: Celery, stamp: SendStamp
) -> None:
    send(celery_app, "alpha", priority=9)
    stamp.at = NOW - 45
    send(celery_app, "alpha", priority=0)

    stats = read_queue_stats(redis_server.client(), ["alpha"], NOW)

    assert stats.oldest_age_s == {"alpha": 45.0}


def test_a_stamp_from_a_clock_ahead_of_ours_gives_age_zero(
    redis_server: RedisServer, celery_app: Celery, stamp: SendStamp
) -> None:
    stamp.at = NOW + 3
    send(celery_app, "alpha")

    stats = read_queue_stats(redis_server.client(), ["alpha"], NOW)

    assert stats.oldest_age_s == {"alpha": 0.0}


@pytest.fixture
def consumer_channel(celery_app: Celery) -> Iterator[Any]:
    """A real kombu consumer channel on the app's broker; closing it returns what it did not ack."""
    with celery_app.connection_for_read() as connection:
        yield connection.default_channel


def test_messages_delivered_and_not_acked_are_in_flight_not_waiting(
    redis_server: RedisServer, celery_app: Celery, consumer_channel: Any
) -> None:
    send(celery_app, "alpha", count=3)
    send(celery_app, "beta", count=2)
    deliver_without_ack(consumer_channel, "alpha")
    deliver_without_ack(consumer_channel, "alpha")

    stats = read_queue_stats(redis_server.client(), ["alpha", "beta"], NOW)

    assert stats.in_flight == 2
    assert stats.waiting == {"alpha": 1, "beta": 2}


def test_in_flight_is_counted_per_queue_from_the_routing_key_zero_included(
    redis_server: RedisServer, celery_app: Celery, consumer_channel: Any
) -> None:
    send(celery_app, "alpha", count=3)
    send(celery_app, "beta", count=2, priority=6)
    for queue in ("alpha", "alpha", "beta"):
        deliver_without_ack(consumer_channel, queue)

    stats = read_queue_stats(redis_server.client(), ["alpha", "beta", "idle"], NOW)

    assert stats.in_flight_by_queue == {"alpha": 2, "beta": 1, "idle": 0}
    assert stats.in_flight == 3


def test_a_task_of_a_queue_not_configured_is_in_flight_only_broker_wide(
    redis_server: RedisServer, celery_app: Celery, consumer_channel: Any
) -> None:
    send(celery_app, "alpha")
    send(celery_app, "elsewhere", count=2)
    deliver_without_ack(consumer_channel, "alpha")
    deliver_without_ack(consumer_channel, "elsewhere")
    deliver_without_ack(consumer_channel, "elsewhere")

    stats = read_queue_stats(redis_server.client(), ["alpha", "beta"], NOW)

    assert stats.in_flight_by_queue == {"alpha": 1, "beta": 0}
    assert stats.in_flight == 3


def test_unreadable_unacked_entries_count_only_broker_wide(
    redis_server: RedisServer, celery_app: Celery, consumer_channel: Any
) -> None:
    send(celery_app, "alpha", count=2)
    deliver_without_ack(consumer_channel, "alpha")
    client = redis_server.client()
    # Written beside kombu's own entry, as a foreign or damaged writer might.
    client.hset(
        UNACKED_KEY,
        mapping={
            "not-json": b"\xff\xfe alpha",
            "an-object": '{"routing_key": "alpha"}',
            "routing-key-not-last": '["alpha", "amq", {}]',
            "key-not-text": '[{}, "alpha", 7]',
            "deeply-nested": "[" * 100_000 + "]" * 100_000,
        },
    )

    stats = read_queue_stats(client, ["alpha"], NOW)

    assert stats.in_flight_by_queue == {"alpha": 1}
    assert stats.in_flight == 6


def test_per_queue_in_flight_is_left_out_when_unacked_holds_more_than_one_poll_reads(
    redis_server: RedisServer, celery_app: Celery, consumer_channel: Any
) -> None:
    send(celery_app, "alpha", count=40)
    for _ in range(40):
        deliver_without_ack(consumer_channel, "alpha")
    client = redis_server.client()

    stats = read_queue_stats(client, ["alpha"], NOW, max_unacked_read=10)

    assert stats.in_flight_by_queue is None
    assert stats.in_flight == 40


def test_an_acked_message_leaves_the_in_flight_count(
    redis_server: RedisServer, celery_app: Celery, consumer_channel: Any
) -> None:
    send(celery_app, "alpha", count=2)
    first = deliver_without_ack(consumer_channel, "alpha")
    second = deliver_without_ack(consumer_channel, "alpha")
    first.ack()

    stats = read_queue_stats(redis_server.client(), ["alpha"], NOW)

    assert (stats.in_flight, stats.in_flight_by_queue) == (1, {"alpha": 1})
    second.ack()


def test_a_message_a_consumer_gave_back_is_again_the_oldest(
    redis_server: RedisServer, celery_app: Celery, stamp: SendStamp
) -> None:
    for sent in (NOW - 700, NOW - 100):
        stamp.at = sent
        send(celery_app, "alpha")
    client = redis_server.client()
    with celery_app.connection_for_read() as connection:
        deliver_without_ack(connection.default_channel, "alpha")
        assert read_queue_stats(client, ["alpha"], NOW).oldest_age_s == {"alpha": 100.0}
    # Closing the channel restored the unacked message to the consuming end of the list.

    stats = read_queue_stats(client, ["alpha"], NOW)

    assert (stats.waiting, stats.oldest_age_s, stats.in_flight) == ({"alpha": 2}, {"alpha": 700.0}, 0)
    assert stats.in_flight_by_queue == {"alpha": 0}


def test_a_queue_name_with_odd_characters_is_read_as_its_own_lists(
    redis_server: RedisServer, celery_app: Celery, stamp: SendStamp
) -> None:
    odd = "reports:eu-west/v2 (bulk) #1"
    stamp.at = NOW - 12
    send(celery_app, odd, count=2, priority=6)
    send(celery_app, "reports", count=5)

    stats = read_queue_stats(redis_server.client(), [odd], NOW)

    assert (stats.waiting, stats.oldest_age_s) == ({odd: 2}, {odd: 12.0})


class CountingConnection(redis.Connection):
    """A real connection that counts the requests it sends (one per round trip)."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


def calls(client: redis.Redis, command: str) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


READ_COMMANDS = ("evalsha", "llen", "lindex", "hlen", "hscan", "type")


def counting_client(server: RedisServer) -> redis.Redis:
    pool = redis.ConnectionPool(connection_class=CountingConnection, host="127.0.0.1", port=server.port)
    return redis.Redis(connection_pool=pool)


def test_one_poll_of_many_queues_is_one_round_trip(
    redis_server: RedisServer, celery_app: Celery, consumer_channel: Any
) -> None:
    queues = [f"queue-{n}" for n in range(30)]
    for queue in queues[::3]:
        send(celery_app, queue, count=2, priority=3)
    for queue in queues[:9:3]:
        deliver_without_ack(consumer_channel, queue)
    client = counting_client(redis_server)
    # The first poll on a broker loads the scripts; later polls find them cached.
    read_queue_stats(client, queues, NOW)
    before = {command: calls(client, command) for command in READ_COMMANDS}
    CountingConnection.sent = 0

    stats = read_queue_stats(client, queues, NOW)

    round_trips = CountingConnection.sent
    assert round_trips == 1
    # One script call per queue and one for `unacked`, each reading every list on the broker.
    lists = len(sibling_keys("any")) * len(queues)
    read = {command: calls(client, command) - before[command] for command in READ_COMMANDS}
    assert read["evalsha"] == len(queues) + 1
    assert (read["type"], read["hlen"], read["hscan"]) == (lists + 1, 1, 1)
    assert (sum(stats.waiting.values()), stats.in_flight) == (17, 3)
    assert stats.in_flight_by_queue == {queue: int(queue in queues[:9:3]) for queue in queues}
    client.connection_pool.disconnect()


def test_a_broker_that_lost_its_scripts_is_read_after_loading_them_again(
    redis_server: RedisServer, celery_app: Celery
) -> None:
    send(celery_app, "alpha", count=3)
    client = redis_server.client()
    read_queue_stats(client, ["alpha"], NOW)
    # What a failover to a replica that never ran the scripts, or a restart, looks like.
    client.script_flush()

    stats = read_queue_stats(client, ["alpha"], NOW)

    assert (stats.waiting, stats.in_flight, stats.problems) == ({"alpha": 3}, 0, ())
