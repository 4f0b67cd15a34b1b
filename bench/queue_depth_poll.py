"""Cost of one queue-depth poll: round trips, wall time and memory, broker-side scripts versus one
command per key.

The queue-depth publisher runs, in one pipeline (one round trip), one script per queue that reads on
the broker the depth and both ends' send stamps of the bare list and of each priority sibling, and one
script that reads HLEN and the routing keys of `unacked` (queue_depth.scripts): only figures come
back. The naive way sends each command on its own and reads whole messages. This benchmark measures
both on the same broker:

* starts a throwaway redis-server on loopback (tests.support.redis_server.RedisServer);
* fills `--queues` queues (50) with real Celery messages (`apply_async`, stamped with a send time
  by a `before_task_publish` handler), `--per-priority` messages (30) at each of kombu's default
  priorities 0, 3, 6 and 9, and has a real kombu consumer hold `--in-flight` (25) of them unacked,
  taken from the queues in turn;
* runs `--polls` polls (200) of each approach after a few warm-up polls, counting round trips (a
  counting redis-py connection) and commands (`INFO commandstats` deltas), timing each poll;
* also polls with only kombu's default steps (0, 3, 6, 9) to show what reading all ten possible
  sibling lists costs;
* reports the bytes of `unacked` entries a naive poll reads and whether the publisher's read was
  whole (the per-queue in-flight figures are published only then);
* with `--heavy`, adds a 30 MB message at the head of a queue and 2,000 in-flight 100 KB messages and
  prints each approach's peak Python memory for one poll (tracemalloc), the figures they read, and
  the publisher's time per poll on that broker;
* builds the PutMetricData requests of one poll and serializes them as boto3 would send them
  (botocore's serializer for the client's protocol, no network) to report the payload size.

No AWS call is made. Run from the repository root: `python bench/queue_depth_poll.py [--json]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as a script from the repository root: the Lambda package and the test helpers live there.
REPO_ROOT = Path(__file__).resolve().parents[1]
for path in (REPO_ROOT, REPO_ROOT / "lambdas"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import botocore.session  # noqa: E402
import redis  # noqa: E402
from botocore.serialize import create_serializer  # noqa: E402
from celery import Celery  # noqa: E402
from celery.signals import before_task_publish  # noqa: E402
from celery_fleet.contract.queue_metrics import SENT_AT_HEADER  # noqa: E402
from queue_depth.logic import (  # noqa: E402
    MAX_UNACKED_READ,
    UNACKED_KEY,
    QueueStats,
    batches,
    metric_data,
    read_queue_stats,
    sibling_keys,
)

from tests.lambdas.queue_depth.hostile import QUEUES as HOSTILE_QUEUES  # noqa: E402
from tests.lambdas.queue_depth.hostile import WRONG_QUEUE as HOSTILE_WRONG_QUEUE  # noqa: E402
from tests.lambdas.queue_depth.hostile import fill as fill_hostile  # noqa: E402
from tests.lambdas.queue_depth.hostile import hostile_app  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

TASK_NAME = "bench.queue_depth.work"
KOMBU_DEFAULT_STEPS = (0, 3, 6, 9)
WARM_UP_POLLS = 5
# Commands the client sends: the publisher's scripts; the naive reads.
SCRIPT_COMMANDS = ("evalsha",)
NAIVE_COMMANDS = ("llen", "lindex", "hlen", "hscan")


class CountingConnection(redis.Connection):
    """A real connection that counts the requests it writes: one per round trip."""

    requests = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.requests += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


def sent_at(raw_message: bytes | str | None) -> float | None:
    """The send stamp of a whole message read into Python, as the publisher once did."""
    if raw_message is None:
        return None
    try:
        message = json.loads(raw_message)
    except (ValueError, RecursionError):
        return None
    headers = message.get("headers") if isinstance(message, dict) else None
    stamp = headers.get(SENT_AT_HEADER) if isinstance(headers, dict) else None
    return float(stamp) if isinstance(stamp, int | float) and not isinstance(stamp, bool) else None


def in_flight_by_queue(queues: Sequence[str], entries: Any) -> dict[str, int]:
    counts = dict.fromkeys(queues, 0)
    for entry in entries:
        try:
            delivery = json.loads(entry)
        except (ValueError, RecursionError):
            continue
        if isinstance(delivery, list) and len(delivery) == 3 and delivery[2] in counts:
            counts[delivery[2]] += 1
    return counts


def naive_read(client: redis.Redis, queues: Sequence[str], now: float) -> QueueStats:
    """The same figures as read_queue_stats, each command in its own round trip, messages read whole."""
    waiting: dict[str, int] = {}
    ages: dict[str, float] = {}
    for queue in queues:
        depth = 0
        stamps: list[float] = []
        for key in sibling_keys(queue):
            depth += int(client.llen(key))
            for index in (0, -1):
                stamp = sent_at(client.lindex(key, index))
                if stamp is not None:
                    stamps.append(stamp)
        waiting[queue] = depth
        if stamps:
            ages[queue] = max(0.0, now - min(stamps))
    in_flight = int(client.hlen(UNACKED_KEY))
    cursor, entries = client.hscan(UNACKED_KEY, 0, count=MAX_UNACKED_READ)
    assert isinstance(entries, dict)
    return QueueStats(
        polled_at=now,
        waiting=waiting,
        oldest_age_s=ages,
        in_flight=in_flight,
        in_flight_by_queue=in_flight_by_queue(queues, entries.values()) if cursor == 0 else None,
    )


@dataclass(frozen=True)
class Figures:
    approach: str
    round_trips_per_poll: float
    commands_per_poll: float
    median_ms: float
    p95_ms: float


def commands_processed(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = client.info("commandstats")
    return {name: int(values["calls"]) for name, values in stats.items()}


def measure(
    approach: str,
    client: redis.Redis,
    polls: int,
    poll: Callable[[float], QueueStats],
    commands: Sequence[str],
) -> tuple[Figures, QueueStats]:
    for _ in range(WARM_UP_POLLS):
        poll(time.time())
    before = commands_processed(client)
    CountingConnection.requests = 0
    durations: list[float] = []
    stats = None
    for _ in range(polls):
        start = time.perf_counter()
        stats = poll(time.time())
        durations.append(time.perf_counter() - start)
    round_trips = CountingConnection.requests
    after = commands_processed(client)
    assert stats is not None
    read_commands = sum(
        after.get(f"cmdstat_{name}", 0) - before.get(f"cmdstat_{name}", 0) for name in commands
    )
    figures = Figures(
        approach=approach,
        round_trips_per_poll=round_trips / polls,
        commands_per_poll=read_commands / polls,
        median_ms=statistics.median(durations) * 1000,
        p95_ms=statistics.quantiles(durations, n=20)[-1] * 1000,
    )
    return figures, stats


def work(item: int) -> int:
    """The benchmark's task: published, never run."""
    return item


def fill(app: Celery, queues: Sequence[str], per_priority: int) -> float:
    """Publish the messages with apply_async, stamped with a send time an hour ago; returns it."""
    sent = time.time() - 3600

    def stamp(sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
        if headers is not None and sender == TASK_NAME:
            headers[SENT_AT_HEADER] = sent

    before_task_publish.connect(stamp, weak=False)
    try:
        task = app.tasks[TASK_NAME]
        for queue in queues:
            for priority in KOMBU_DEFAULT_STEPS:
                for item in range(per_priority):
                    task.apply_async((item,), queue=queue, priority=priority)
    finally:
        before_task_publish.disconnect(stamp)
    return sent


def payload_bytes(data: list[dict[str, Any]]) -> list[int]:
    """Body size of each PutMetricData request as botocore would serialize it (nothing is sent)."""
    model = botocore.session.get_session().get_service_model("cloudwatch")
    operation = model.operation_model("PutMetricData")
    serializer = create_serializer(model.resolved_protocol)
    sizes = []
    for batch in batches(data):
        request = serializer.serialize_to_request(
            {"Namespace": "CeleryFleet/bench", "MetricData": batch}, operation
        )
        body = request["body"]
        sizes.append(len(body if isinstance(body, bytes) else str(body).encode()))
    return sizes


def run(queue_count: int, per_priority: int, in_flight: int, polls: int) -> dict[str, Any]:
    queues = [f"bench-queue-{n:02d}" for n in range(queue_count)]
    with RedisServer() as server:
        app = Celery("queue-depth-bench", broker=server.url, set_as_current=False)
        app.task(name=TASK_NAME, shared=False)(work)
        publish_start = time.perf_counter()
        fill(app, queues, per_priority)
        publish_s = time.perf_counter() - publish_start
        pool = redis.ConnectionPool(connection_class=CountingConnection, host="127.0.0.1", port=server.port)
        client = redis.Redis(connection_pool=pool)
        with app.connection_for_read() as consumer:
            channel: Any = consumer.default_channel
            # A real consumer's deliveries (kombu's basic_get) left unacknowledged: kept in `unacked`.
            held = [channel.basic_get(queues[n % queue_count], no_ack=False) for n in range(in_flight)]
            assert all(message is not None for message in held)
            _, entries = client.hscan(UNACKED_KEY, 0, count=MAX_UNACKED_READ)
            assert isinstance(entries, dict)
            unacked_bytes = sum(len(field) + len(value) for field, value in entries.items())

            pipelined, pipelined_stats = measure(
                "scripts, 10 sibling lists (publisher)",
                client,
                polls,
                lambda now: read_queue_stats(client, queues, now),
                SCRIPT_COMMANDS,
            )
            default_steps, _ = measure(
                "scripts, kombu default 4 lists",
                client,
                polls,
                lambda now: read_queue_stats(client, queues, now, priority_steps=KOMBU_DEFAULT_STEPS),
                SCRIPT_COMMANDS,
            )
            naive, naive_stats = measure(
                "one command per key, 10 lists",
                client,
                polls,
                lambda now: naive_read(client, queues, now),
                NAIVE_COMMANDS,
            )
        pool.disconnect()
        app.close()

    assert pipelined_stats.waiting == naive_stats.waiting, "both approaches must read the same depths"
    assert pipelined_stats.in_flight == naive_stats.in_flight == in_flight
    assert pipelined_stats.in_flight_by_queue == naive_stats.in_flight_by_queue
    if pipelined_stats.in_flight_by_queue is not None:
        assert sum(pipelined_stats.in_flight_by_queue.values()) == in_flight
    data = metric_data(pipelined_stats, storage_resolution=60)
    sizes = payload_bytes(data)
    stored_messages = sum(pipelined_stats.waiting.values())
    return {
        "queues": queue_count,
        "lists_per_queue_read": len(sibling_keys("q")),
        "messages_waiting": stored_messages,
        "messages_in_flight": pipelined_stats.in_flight,
        "unacked_bytes_read_per_poll": unacked_bytes,
        "in_flight_by_queue_published": pipelined_stats.in_flight_by_queue is not None,
        "publish_s": round(publish_s, 2),
        "polls": polls,
        "figures": [asdict(figures) for figures in (pipelined, default_steps, naive)],
        "naive_over_pipelined_round_trips": naive.round_trips_per_poll / pipelined.round_trips_per_poll,
        "naive_over_pipelined_median_time": naive.median_ms / pipelined.median_ms,
        "metric_data_items": len(data),
        "put_metric_data_calls": len(sizes),
        "put_metric_data_body_bytes": sizes,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def peak_python_bytes(poll: Callable[[], QueueStats]) -> tuple[QueueStats, int]:
    tracemalloc.start()
    try:
        stats = poll()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return stats, peak


def run_heavy(polls: int) -> dict[str, Any]:
    """The hostile broker of the publisher's tests: peak memory and time per poll, both approaches."""
    queues = list(HOSTILE_QUEUES)
    with RedisServer() as server:
        app = hostile_app(server.url)
        client = server.client()
        with app.connection_for_read() as consumer:
            hostile = fill_hostile(app, client, consumer.default_channel, now=time.time())
            read_queue_stats(client, queues, time.time())
            stats, publisher_peak = peak_python_bytes(lambda: read_queue_stats(client, queues, time.time()))
            durations = []
            for _ in range(polls):
                start = time.perf_counter()
                read_queue_stats(client, queues, time.time())
                durations.append(time.perf_counter() - start)
            # The naive read fails on the wrongly typed key (WRONGTYPE): measured without that queue.
            naive_queues = [queue for queue in queues if queue != HOSTILE_WRONG_QUEUE]
            naive_stats, naive_peak = peak_python_bytes(lambda: naive_read(client, naive_queues, time.time()))
        app.close()
    return {
        "big_message_bytes": hostile.big_message_bytes,
        "in_flight_messages": hostile.in_flight,
        "in_flight_entry_bytes": hostile.in_flight_entry_bytes,
        "publisher_peak_python_bytes": publisher_peak,
        "naive_peak_python_bytes": naive_peak,
        "naive_over_publisher_peak": naive_peak / max(1, publisher_peak),
        "publisher_median_ms": statistics.median(durations) * 1000,
        "publisher_waiting": dict(stats.waiting),
        "naive_waiting": dict(naive_stats.waiting),
        "publisher_in_flight_by_queue_published": stats.in_flight_by_queue is not None,
        "publisher_problems": [problem.describe() for problem in stats.problems],
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def print_heavy(report: dict[str, Any]) -> None:
    mib = 1024 * 1024
    print(
        f"hostile broker: one {report['big_message_bytes'] / mib:.1f} MiB message, "
        f"{report['in_flight_messages']} in flight of {report['in_flight_entry_bytes'] / 1024:.0f} KiB, "
        "a message nested 100,000 deep, a key of the wrong type"
    )
    print(
        f"peak Python memory of one poll: publisher {report['publisher_peak_python_bytes'] / 1024:.0f} KiB, "
        f"naive {report['naive_peak_python_bytes'] / mib:.0f} MiB "
        f"({report['naive_over_publisher_peak']:.0f}x)"
    )
    print(f"publisher time per poll on this broker: median {report['publisher_median_ms']:.1f} ms")
    print(
        f"publisher figures: waiting {report['publisher_waiting']}; problems {report['publisher_problems']}"
    )


def print_table(report: dict[str, Any]) -> None:
    print(
        f"{report['queues']} queues x {report['lists_per_queue_read']} lists read, "
        f"{report['messages_waiting']} messages waiting, {report['messages_in_flight']} in flight "
        f"(published with apply_async in {report['publish_s']} s); {report['polls']} polls per approach"
    )
    print(
        f"unacked entries a naive poll reads: {report['unacked_bytes_read_per_poll']} bytes; per-queue in "
        f"flight published: {report['in_flight_by_queue_published']} (reads up to {MAX_UNACKED_READ} entries)"
    )
    header = (
        f"{'approach':<42} {'round trips/poll':>16} {'commands/poll':>14} {'median ms':>10} {'p95 ms':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in report["figures"]:
        print(
            f"{row['approach']:<42} {row['round_trips_per_poll']:>16.0f} {row['commands_per_poll']:>14.0f} "
            f"{row['median_ms']:>10.3f} {row['p95_ms']:>8.3f}"
        )
    print(
        f"naive / pipelined: {report['naive_over_pipelined_round_trips']:.0f}x round trips, "
        f"{report['naive_over_pipelined_median_time']:.1f}x median wall time"
    )
    print(
        f"metric payload per poll: {report['metric_data_items']} items in {report['put_metric_data_calls']} "
        f"PutMetricData call(s), body bytes {report['put_metric_data_body_bytes']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--queues", type=int, default=50)
    parser.add_argument("--per-priority", type=int, default=30, help="messages per queue and priority")
    parser.add_argument("--in-flight", type=int, default=25, help="messages held unacked by a consumer")
    parser.add_argument("--polls", type=int, default=200, help="timed polls per approach")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--heavy",
        action="store_true",
        help="also poll a hostile broker (30 MB message, 2,000 x 100 KB in flight)",
    )
    args = parser.parse_args(argv)
    if args.in_flight > 4 * args.per_priority * args.queues:
        parser.error("--in-flight cannot exceed the messages published (4 x --per-priority x --queues)")
    report = run(args.queues, args.per_priority, args.in_flight, args.polls)
    if args.heavy:
        report["heavy"] = run_heavy(min(args.polls, 20))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
        if args.heavy:
            print_heavy(report["heavy"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
