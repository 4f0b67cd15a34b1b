"""Read Celery's queues on Redis and turn them into CloudWatch metric data. Knows nothing of Lambda.

Key layout (kombu 5.7, `kombu/transport/redis.py`): a queue is a list named after it; a message of
priority step N > 0 goes to the sibling list `<queue>\\x06\\x16<N>`. Producers LPUSH and consumers
BRPOP/RPOP, and a restored message is RPUSHed back, so the next message out, and the oldest one
waiting, is the last element (index -1) of each list. Delivered, unacknowledged messages sit in the
broker-wide hash `unacked`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    in_flight: int


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


def read_queue_stats(
    redis_client: redis.Redis,
    queues: Sequence[str],
    now: float,
    *,
    priority_steps: Sequence[int] = PRIORITY_STEPS,
    unacked_key: str = UNACKED_KEY,
) -> QueueStats:
    """Read every queue's depth and oldest message, and the in-flight count, in one round trip.

    `now` (Unix seconds) is the poll time the ages are measured from. A missing list counts as
    empty. The oldest message of a queue is the one with the smallest stamp among the last elements
    of its lists; unstamped ones are skipped, and a queue with no stamped one gets no age. A stamp in
    the future (producer clock ahead of ours) gives an age of 0.
    """
    keys = {queue: sibling_keys(queue, priority_steps) for queue in queues}
    # Not a MULTI: the figures need no atomic snapshot, only one round trip.
    pipe = redis_client.pipeline(transaction=False)
    for queue in queues:
        for key in keys[queue]:
            pipe.llen(key)
            pipe.lindex(key, -1)
    pipe.hlen(unacked_key)
    replies: list[Any] = pipe.execute()

    waiting: dict[str, int] = {}
    oldest_age_s: dict[str, float] = {}
    position = 0
    for queue in queues:
        depth = 0
        stamps: list[float] = []
        for _ in keys[queue]:
            length, tail = replies[position], replies[position + 1]
            position += 2
            depth += int(length)
            stamp = sent_at(tail)
            if stamp is not None:
                stamps.append(stamp)
        waiting[queue] = depth
        if stamps:
            oldest_age_s[queue] = max(0.0, now - min(stamps))
    in_flight = int(replies[position])
    return QueueStats(polled_at=now, waiting=waiting, oldest_age_s=oldest_age_s, in_flight=in_flight)


def metric_data(
    stats: QueueStats, *, storage_resolution: int = STANDARD_RESOLUTION_S
) -> list[dict[str, Any]]:
    """PutMetricData items for one poll, all stamped with the poll time.

    Per queue: waiting tasks, and the oldest task's age when known (never a made-up 0). Once,
    without the queue dimension: tasks in flight, since the `unacked` hash is broker-wide.
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
