"""Read Celery's queues on Redis and turn them into CloudWatch metric data. Knows nothing of Lambda.

Key layout (kombu 5.7, `kombu/transport/redis.py`): a queue is a list named after it; a message of
priority step N > 0 goes to the sibling list `<queue>\\x06\\x16<N>`. Producers LPUSH (`Channel._put`)
and consumers BRPOP/RPOP the other end, so the next message out is the last element (index -1).
A message given back goes to either end (`Channel._do_restore_message`): restoring what a consumer
left unacked (channel close, warm shutdown, visibility timeout: `QoS.restore_by_tag`) RPUSHes it to
index -1, but a reject with requeue (`QoS.reject(requeue=True)` calls `restore_by_tag(leftmost=True)`)
LPUSHes it to index 0, behind the newest message. Celery 5.7's worker requeues so for
`task_reject_on_worker_lost` (with `task_acks_late`) and for a task raising `Reject(requeue=True)`.
So the oldest message waiting is at index -1, or at index 0 after a requeue.

Delivered, unacknowledged messages sit in the broker-wide hash `unacked`: delivery tag to the JSON
`[message, exchange, routing_key]` (`QoS.append`). An entry's queue is taken to be its routing key,
as Celery's default routing makes it (a queue's routing key is its name).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from celery_fleet.contract.queue_metrics import (
    IN_FLIGHT_TASKS,
    OLDEST_TASK_AGE,
    QUEUE_DIMENSION,
    SENT_AT_HEADER,
    WAITING_TASKS,
)

# kombu's Redis `Channel.sep` and `Channel.unacked_key` defaults.
PRIORITY_SEPARATOR = "\x06\x16"
UNACKED_KEY = "unacked"
# kombu clamps a message's priority to 0-9 and files it under the largest step of `priority_steps`
# not above it, so these are all the lists any `priority_steps` setting can produce. kombu's default
# steps (0, 3, 6, 9) use four of them; reading the other six costs a few O(1) commands in the same
# round trip and keeps the depth right for apps that set `priority_steps=list(range(10))`.
PRIORITY_STEPS: tuple[int, ...] = tuple(range(10))
# The most `unacked` entries one poll reads (HSCAN's COUNT). The fleet's size does not bound the
# hash: besides each worker process's prefetch it holds every ETA/countdown task a worker keeps
# until its time, retries with back-off included (Celery raises the prefetch count for each, without
# limit unless `worker_eta_task_limit` is set). At about 1.3 kB an entry this is about 2.6 MB read
# per poll at most; past it the per-queue figures are left out rather than guessed.
MAX_UNACKED_READ = 2000

STANDARD_RESOLUTION_S = 60
HIGH_RESOLUTION_S = 1
# PutMetricData accepts at most 1000 metric data items and 1 MB per request.
MAX_ITEMS_PER_CALL = 1000
MAX_REQUEST_BYTES = 1_000_000
# Upper bound on one item's share of the encoded request, its dimension value aside: about 200 bytes
# as boto3 sends it (JSON; bench/queue_depth_poll.py), about 400 in the older query protocol.
_ITEM_OVERHEAD_BYTES = 600


@dataclass(frozen=True)
class QueueStats:
    """What one poll saw: waiting tasks per queue, oldest waiting task's age, tasks in flight."""

    polled_at: float
    waiting: Mapping[str, int]
    # Only queues whose oldest waiting message carries a send-time stamp.
    oldest_age_s: Mapping[str, float]
    # Broker-wide: every entry of `unacked`, whatever its queue and whether or not it can be read.
    in_flight: int
    # Every configured queue (0 included), by routing key; None when `unacked` held more entries
    # than one poll reads.
    in_flight_by_queue: Mapping[str, int] | None


def sibling_keys(
    queue: str, priority_steps: Sequence[int] = PRIORITY_STEPS, sep: str = PRIORITY_SEPARATOR
) -> list[str]:
    """The Redis lists that hold `queue`'s messages: the bare name (step 0) and one per other step."""
    return [queue if step == 0 else f"{queue}{sep}{step}" for step in sorted(set(priority_steps) | {0})]


def sent_at(raw_message: bytes | str | None) -> float | None:
    """The send-time stamp of a stored kombu message, or None if it is absent or unreadable."""
    if raw_message is None:
        return None
    try:
        message = json.loads(raw_message)
    except ValueError:
        # Not a kombu JSON envelope (another producer shares the list): its age is unknown.
        return None
    headers = message.get("headers") if isinstance(message, dict) else None
    stamp = headers.get(SENT_AT_HEADER) if isinstance(headers, dict) else None
    if isinstance(stamp, bool) or not isinstance(stamp, int | float) or not math.isfinite(stamp):
        return None
    return float(stamp)


def unacked_routing_key(entry: bytes | str) -> str | None:
    """The routing key of one `unacked` hash value, or None if it is not kombu's JSON
    `[message, exchange, routing_key]`."""
    try:
        delivery = json.loads(entry)
    except (ValueError, RecursionError):
        # Not kombu's (UnicodeDecodeError is a ValueError too): never a reason to fail the poll.
        return None
    if isinstance(delivery, list) and len(delivery) == 3 and isinstance(delivery[2], str):
        return delivery[2]
    return None


def in_flight_by_queue(queues: Sequence[str], entries: Iterable[bytes | str]) -> dict[str, int]:
    """How many `unacked` entries belong to each of `queues` (0 included), by routing key.

    Assumes Celery's default routing, where a task sent to a queue carries the queue's name as its
    routing key. An entry whose routing key names no configured queue (custom exchanges or routing
    keys, another app's queue) or that cannot be read counts in no queue: only in the broker-wide
    figure.
    """
    counts = dict.fromkeys(queues, 0)
    for entry in entries:
        routing_key = unacked_routing_key(entry)
        if routing_key in counts:
            counts[routing_key] += 1
    return counts


def read_queue_stats(
    redis_client: redis.Redis,
    queues: Sequence[str],
    now: float,
    *,
    priority_steps: Sequence[int] = PRIORITY_STEPS,
    unacked_key: str = UNACKED_KEY,
    max_unacked_read: int = MAX_UNACKED_READ,
) -> QueueStats:
    """Read every queue's depth, oldest message and tasks in flight in one round trip.

    `now` (Unix seconds) is the poll time the ages are measured from. A missing list counts as
    empty. The oldest message of a queue is the one with the smallest stamp among the first and
    last elements of its lists: the last is the next out, the first a message just requeued by a
    reject (see the module docstring). A requeued message stays first only until the next publish
    to its list; from then until it is next out again, no poll sees its age. Unstamped messages are
    skipped, and a queue with no stamped one gets no age. A stamp in the future (producer clock
    ahead of ours) gives an age of 0.

    In flight: broker-wide, `HLEN unacked`; per queue, the entries of `unacked` by routing key (see
    `in_flight_by_queue`), or None when the hash holds more than about `max_unacked_read` entries.
    """
    keys = {queue: sibling_keys(queue, priority_steps) for queue in queues}
    # Not a MULTI: the figures need no atomic snapshot, only one round trip. A delivery or ack
    # between HLEN and HSCAN can put the two in-flight figures one apart for a poll.
    pipe = redis_client.pipeline(transaction=False)
    for queue in queues:
        for key in keys[queue]:
            pipe.llen(key)
            pipe.lindex(key, 0)
            pipe.lindex(key, -1)
    pipe.hlen(unacked_key)
    # HSCAN from cursor 0 returns the whole hash (cursor back to 0) while it holds fewer entries
    # than COUNT, and about COUNT of them otherwise: the reply stays bounded however much is held,
    # where HVALS would return all of it. The scan's further cursors would cost more round trips.
    pipe.hscan(unacked_key, 0, count=max_unacked_read)
    replies: list[Any] = pipe.execute()

    waiting: dict[str, int] = {}
    oldest_age_s: dict[str, float] = {}
    position = 0
    for queue in queues:
        depth = 0
        stamps: list[float] = []
        for _ in keys[queue]:
            length, head, tail = replies[position : position + 3]
            position += 3
            depth += int(length)
            for end in (head, tail):
                stamp = sent_at(end)
                if stamp is not None:
                    stamps.append(stamp)
        waiting[queue] = depth
        if stamps:
            oldest_age_s[queue] = max(0.0, now - min(stamps))
    in_flight = int(replies[position])
    cursor, entries = replies[position + 1]
    by_queue = in_flight_by_queue(queues, entries.values()) if int(cursor) == 0 else None
    return QueueStats(
        polled_at=now,
        waiting=waiting,
        oldest_age_s=oldest_age_s,
        in_flight=in_flight,
        in_flight_by_queue=by_queue,
    )


def metric_data(
    stats: QueueStats, *, storage_resolution: int = STANDARD_RESOLUTION_S
) -> list[dict[str, Any]]:
    """PutMetricData items for one poll, all stamped with the poll time.

    Per queue: waiting tasks, the oldest task's age when known (never a made-up 0), and tasks in
    flight when the poll could attribute them. Once more without the queue dimension: tasks in
    flight broker-wide, every entry of the `unacked` hash.
    """
    timestamp = datetime.fromtimestamp(stats.polled_at, tz=UTC)

    def item(name: str, value: float, unit: str, queue: str | None = None) -> dict[str, Any]:
        datum: dict[str, Any] = {
            "MetricName": name,
            "Timestamp": timestamp,
            "Value": value,
            "Unit": unit,
            "StorageResolution": storage_resolution,
        }
        if queue is not None:
            datum["Dimensions"] = [{"Name": QUEUE_DIMENSION, "Value": queue}]
        return datum

    data: list[dict[str, Any]] = []
    for queue, depth in stats.waiting.items():
        data.append(item(WAITING_TASKS, float(depth), "Count", queue))
        if queue in stats.oldest_age_s:
            data.append(item(OLDEST_TASK_AGE, stats.oldest_age_s[queue], "Seconds", queue))
        if stats.in_flight_by_queue is not None:
            data.append(item(IN_FLIGHT_TASKS, float(stats.in_flight_by_queue[queue]), "Count", queue))
    data.append(item(IN_FLIGHT_TASKS, float(stats.in_flight), "Count"))
    return data


def _item_bytes(datum: Mapping[str, Any]) -> int:
    # URL-encoding can triple a dimension value's UTF-8 bytes.
    dimension_bytes = sum(3 * len(str(d["Value"]).encode()) for d in datum.get("Dimensions", ()))
    return _ITEM_OVERHEAD_BYTES + dimension_bytes


def batches(
    data: Sequence[dict[str, Any]],
    *,
    max_items: int = MAX_ITEMS_PER_CALL,
    max_bytes: int = MAX_REQUEST_BYTES,
) -> Iterator[list[dict[str, Any]]]:
    """Split `data` into as few PutMetricData requests as the per-request limits allow, in order."""
    batch: list[dict[str, Any]] = []
    size = 0
    for datum in data:
        datum_bytes = _item_bytes(datum)
        if batch and (len(batch) == max_items or size + datum_bytes > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(datum)
        size += datum_bytes
    if batch:
        yield batch


PutMetricData = Callable[..., object]


def publish(put_metric_data: PutMetricData, namespace: str, data: Sequence[dict[str, Any]]) -> int:
    """Send `data` to CloudWatch in as few calls as the limits allow; returns the number of calls."""
    calls = 0
    for batch in batches(data):
        put_metric_data(Namespace=namespace, MetricData=batch)
        calls += 1
    return calls


def poll_times(start: float, interval_s: int) -> list[float]:
    """When one invocation polls: at `start`, then on each following multiple of `interval_s` on the
    wall clock, one poll per period over the minute that begins with `start`'s period.

    With `interval_s` = 10 that is six polls, each in its own 10-second period, the last at most 50 s
    after `start`. The schedule invokes once a minute at a steady second (an EventBridge rate fires
    at the second the rule was created, give or take a few), so the next invocation's first poll
    falls in the period after this one's last: every period gets a data point whatever that second
    is. With 60 there is one poll.
    """
    first_period = math.floor(start / interval_s) * interval_s
    times = [start]
    boundary = first_period + interval_s
    while boundary < first_period + 60:
        times.append(float(boundary))
        boundary += interval_s
    return times


@dataclass
class InvocationReport:
    """What one invocation did: polls published, polls failed, polls skipped for lack of time."""

    published_polls: int = 0
    failed_polls: int = 0
    skipped_polls: int = 0
    put_metric_data_calls: int = 0
    data_points: int = 0
    errors: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "published_polls": self.published_polls,
            "failed_polls": self.failed_polls,
            "skipped_polls": self.skipped_polls,
            "put_metric_data_calls": self.put_metric_data_calls,
            "data_points": self.data_points,
        }


def run_polls(
    *,
    redis_client: redis.Redis,
    queues: Sequence[str],
    put_metric_data: PutMetricData,
    namespace: str,
    interval_s: int,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    deadline: float,
    on_broker_error: Callable[[float, redis.RedisError], None],
) -> InvocationReport:
    """Poll at `poll_times(clock(), interval_s)` and publish each poll's metrics as it is taken.

    A poll planned after `deadline` (Unix seconds), or whose interval has already passed, is skipped;
    the first is always taken. A poll that cannot read the broker publishes nothing (missing data,
    never a zero) and is reported to `on_broker_error`; the next poll tries again. CloudWatch errors
    are raised.
    """
    resolution = STANDARD_RESOLUTION_S if interval_s >= STANDARD_RESOLUTION_S else HIGH_RESOLUTION_S
    report = InvocationReport()
    planned = poll_times(clock(), interval_s)
    for index, planned_at in enumerate(planned):
        if index > 0 and planned_at > deadline:
            report.skipped_polls += len(planned) - index
            break
        if index > 0 and clock() >= planned_at + interval_s:
            # An earlier poll overran this one's whole bucket (a broker timing out): a late poll
            # would put a second point in a later bucket.
            report.skipped_polls += 1
            continue
        sleep(max(0.0, planned_at - clock()))
        polled_at = clock()
        try:
            stats = read_queue_stats(redis_client, queues, polled_at)
        except redis.RedisError as error:
            report.failed_polls += 1
            report.errors.append(f"{type(error).__name__}: {error}")
            on_broker_error(polled_at, error)
            continue
        data = metric_data(stats, storage_resolution=resolution)
        report.put_metric_data_calls += publish(put_metric_data, namespace, data)
        report.data_points += len(data)
        report.published_polls += 1
    return report
