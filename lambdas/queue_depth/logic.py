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

Nothing of a message reaches this function: the broker-side scripts of `queue_depth.scripts` read
the stamps and routing keys and reply with figures, so a poll's memory does not grow with what
producers send, nor can a message's shape (size, nesting) fail it.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from celery_fleet.contract.queue_metrics import (
    DESIRED_WORKERS,
    GROUP_DIMENSION,
    IN_FLIGHT_TASKS,
    OLDEST_TASK_AGE,
    QUEUE_DIMENSION,
    RUNNING_WORKERS,
    WAITING_TASKS,
)

from .deadline import Deadline
from .scripts import QUEUE_SCRIPT, QUEUE_SCRIPT_SHA, UNACKED_SCRIPT, UNACKED_SCRIPT_SHA

# kombu's Redis `Channel.sep` and `Channel.unacked_key` defaults.
PRIORITY_SEPARATOR = "\x06\x16"
UNACKED_KEY = "unacked"
# kombu clamps a message's priority to 0-9 and files it under the largest step of `priority_steps`
# not above it, so these are all the lists any `priority_steps` setting can produce. kombu's default
# steps (0, 3, 6, 9) use four of them; reading the other six costs a few O(1) commands in the same
# round trip and keeps the depth right for apps that set `priority_steps=list(range(10))`.
PRIORITY_STEPS: tuple[int, ...] = tuple(range(10))
# The most `unacked` entries the broker-side script reads in one poll. The fleet's size does not
# bound the hash: besides each worker process's prefetch it holds every ETA/countdown task a worker
# keeps until its time, retries with back-off included (Celery raises the prefetch count for each,
# without limit unless `worker_eta_task_limit` is set). Past it the per-queue figures are left out
# rather than guessed; the broker-wide count (HLEN) is always published.
MAX_UNACKED_READ = 2000
# The most bytes of `unacked` entries the broker-side script reads in one poll (it must copy each
# entry to find its routing key). Measured on redis-server 7.0 here: 200 MB of entries take the
# script about 0.5 s, during which the broker serves no one; 32 MiB keeps that near 80 ms. Past it
# the per-queue figures are left out, as past MAX_UNACKED_READ.
MAX_UNACKED_BYTES = 32 * 1024 * 1024
# Bytes looked at from each end of a message for its send stamp; kombu writes the headers after the
# body, so for any body size they sit within this of the end (argsrepr and kwargsrepr, Celery's
# display copies of the arguments, are cut to 1,024 characters each).
STAMP_WINDOW_BYTES = 64 * 1024
# Bytes looked at from the end of an `unacked` entry for its routing key: a queue name is at most
# 1,024 characters (a CloudWatch dimension value), twice that JSON-escaped.
ROUTING_KEY_WINDOW_BYTES = 4096

STANDARD_RESOLUTION_S = 60
HIGH_RESOLUTION_S = 1
# PutMetricData accepts at most 1000 metric data items and 1 MB per request.
MAX_ITEMS_PER_CALL = 1000
MAX_REQUEST_BYTES = 1_000_000
# Upper bound on one item's share of the encoded request, its dimension value aside: about 200 bytes
# as boto3 sends it (JSON; bench/queue_depth_poll.py), about 400 in the older query protocol.
_ITEM_OVERHEAD_BYTES = 600


@dataclass(frozen=True)
class KeyProblem:
    """A broker key the poll could not read as kombu writes it, and whose figures it left out."""

    key: str
    # What the key held instead (Redis's TYPE: string, hash, set, zset, stream), or the broker's error.
    found: str
    # The configured queue the key belongs to; None for `unacked` (every queue's in-flight figures).
    queue: str | None

    def describe(self) -> str:
        if self.queue is None:
            return (
                f"{self.key!r} is {self.found}, not kombu's hash of unacknowledged messages: "
                "no in-flight figures in this poll"
            )
        return f"{self.key!r} is {self.found}, not a list: queue {self.queue!r} left out of this poll"


@dataclass(frozen=True)
class QueueStats:
    """What one poll saw: waiting tasks per queue, oldest waiting task's age, tasks in flight."""

    polled_at: float
    # Every configured queue whose lists could all be read.
    waiting: Mapping[str, int]
    # Only queues whose oldest waiting message carries a send-time stamp.
    oldest_age_s: Mapping[str, float]
    # Broker-wide: every entry of `unacked`, whatever its queue and whether or not it can be read;
    # None when `unacked` is not a hash.
    in_flight: int | None
    # Every configured queue (0 included), by routing key; None when `unacked` held more entries
    # or bytes than one poll reads, or is not a hash.
    in_flight_by_queue: Mapping[str, int] | None
    # Keys of the wrong type (or that the broker refused to read): only their own figures are missing.
    problems: tuple[KeyProblem, ...] = ()


def sibling_keys(
    queue: str, priority_steps: Sequence[int] = PRIORITY_STEPS, sep: str = PRIORITY_SEPARATOR
) -> list[str]:
    """The Redis lists that hold `queue`'s messages: the bare name (step 0) and one per other step."""
    return [queue if step == 0 else f"{queue}{sep}{step}" for step in sorted(set(priority_steps) | {0})]


def parse_stamp(raw: bytes | str | None) -> float | None:
    """A send stamp as the queue script returns it (the number's text), or None if not a finite number."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _queue_figures(queue: str, reply: Any, now: float) -> tuple[int | None, float | None, list[KeyProblem]]:
    """(depth, oldest age, problems) of one queue from its script reply; depth None if left out."""
    if isinstance(reply, redis.ResponseError):
        return None, None, [KeyProblem(key=queue, found=f"unreadable ({reply})", queue=queue)]
    depth, stamp_text, *wrong = reply
    problems = [
        KeyProblem(key=_text(key), found=f"a {_text(kind)}", queue=queue)
        for key, kind in zip(wrong[::2], wrong[1::2], strict=True)
    ]
    if problems:
        return None, None, problems
    stamp = parse_stamp(stamp_text)
    return int(depth), (None if stamp is None else max(0.0, now - stamp)), []


def _in_flight_figures(
    queues: Sequence[str], reply: Any
) -> tuple[int | None, dict[str, int] | None, list[KeyProblem]]:
    """(broker-wide, per queue, problems) from the `unacked` script's reply."""
    if isinstance(reply, redis.ResponseError):
        return None, None, [KeyProblem(key=UNACKED_KEY, found=f"unreadable ({reply})", queue=None)]
    total, complete, *counts = reply
    if int(total) < 0:
        return None, None, [KeyProblem(key=UNACKED_KEY, found=f"a {_text(complete)}", queue=None)]
    by_queue = dict(zip(queues, (int(count) for count in counts), strict=True)) if int(complete) else None
    return int(total), by_queue, []


def _evalsha(pipe: Any, sha: str, keys: Sequence[str], args: Sequence[object]) -> None:
    pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)


def read_queue_stats(
    redis_client: redis.Redis,
    queues: Sequence[str],
    now: float,
    *,
    priority_steps: Sequence[int] = PRIORITY_STEPS,
    unacked_key: str = UNACKED_KEY,
    max_unacked_read: int = MAX_UNACKED_READ,
    max_unacked_bytes: int = MAX_UNACKED_BYTES,
) -> QueueStats:
    """Read every queue's depth, oldest message and tasks in flight in one round trip.

    `now` (Unix seconds) is the poll time the ages are measured from. Everything is read on the
    broker by the scripts of `queue_depth.scripts`, which reply with figures only: what this
    function receives is a few bytes per queue, whatever the messages hold.

    A missing list counts as empty. The oldest message of a queue is the one with the smallest
    stamp among the first and last elements of its lists: the last is the next out, the first a
    message just requeued by a reject (see the module docstring). A requeued message stays first
    only until the next publish to its list; from then until it is next out again, no poll sees its
    age. Unstamped messages are skipped, and a queue with no stamped one gets no age. A stamp in the
    future (producer clock ahead of ours) gives an age of 0. A stamp more than STAMP_WINDOW_BYTES
    from both ends of its message is not seen.

    A key of the wrong type leaves out only what it feeds: a list of a queue that is not a list,
    that queue's depth and age; `unacked` not a hash, the in-flight figures. Each is a KeyProblem.

    In flight: broker-wide, `HLEN unacked`; per queue, the entries of `unacked` by routing key
    (Celery's default routing: a queue's routing key is its name), or None when the hash holds more
    than `max_unacked_read` entries or `max_unacked_bytes` bytes. An entry whose routing key names
    no configured queue, or that is not kombu's JSON, counts only broker-wide.
    """
    keys = {queue: sibling_keys(queue, priority_steps) for queue in queues}
    unacked_args: list[object] = [max_unacked_read, max_unacked_bytes, ROUTING_KEY_WINDOW_BYTES]
    # kombu writes routing keys with json.dumps; configured queue names are printable ASCII.
    unacked_args += [json.dumps(queue) for queue in queues]

    def execute() -> list[Any]:
        # Not a MULTI: the figures need no atomic snapshot, only one round trip. A delivery or ack
        # between two scripts can put the in-flight and waiting figures one apart for a poll.
        pipe = redis_client.pipeline(transaction=False)
        for queue in queues:
            _evalsha(pipe, QUEUE_SCRIPT_SHA, keys[queue], [STAMP_WINDOW_BYTES])
        _evalsha(pipe, UNACKED_SCRIPT_SHA, [unacked_key], unacked_args)
        return list(pipe.execute(raise_on_error=False))

    replies = execute()
    if any(isinstance(reply, redis.exceptions.NoScriptError) for reply in replies):
        # A new or restarted broker (a failover) has not cached the scripts yet: two more round trips.
        redis_client.script_load(QUEUE_SCRIPT)
        redis_client.script_load(UNACKED_SCRIPT)
        replies = execute()

    waiting: dict[str, int] = {}
    oldest_age_s: dict[str, float] = {}
    problems: list[KeyProblem] = []
    for queue, reply in zip(queues, replies, strict=False):
        depth, age, wrong = _queue_figures(queue, reply, now)
        problems += wrong
        if depth is not None:
            waiting[queue] = depth
        if age is not None:
            oldest_age_s[queue] = age
    in_flight, by_queue, wrong = _in_flight_figures(queues, replies[len(queues)])
    problems += wrong
    return QueueStats(
        polled_at=now,
        waiting=waiting,
        oldest_age_s=oldest_age_s,
        in_flight=in_flight,
        in_flight_by_queue=by_queue,
        problems=tuple(problems),
    )


def metric_data(
    stats: QueueStats,
    *,
    storage_resolution: int = STANDARD_RESOLUTION_S,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> list[dict[str, Any]]:
    """PutMetricData items for one poll, all stamped with the poll time.

    Per queue: waiting tasks, the oldest task's age when known (never a made-up 0), and tasks in
    flight when the poll could attribute them. Once more without the queue dimension: tasks in
    flight broker-wide, every entry of the `unacked` hash. What the poll left out (a queue with a
    key of the wrong type, in flight while `unacked` is not a hash) gets no point: missing data.
    Per worker group of `groups` (name -> queues): waiting and in flight summed over its queues,
    when every one of them has the figure.
    """
    timestamp = datetime.fromtimestamp(stats.polled_at, tz=UTC)

    def item(
        name: str, value: float, unit: str, queue: str | None = None, *, dimension: str = QUEUE_DIMENSION
    ) -> dict[str, Any]:
        datum: dict[str, Any] = {
            "MetricName": name,
            "Timestamp": timestamp,
            "Value": value,
            "Unit": unit,
            "StorageResolution": storage_resolution,
        }
        if queue is not None:
            datum["Dimensions"] = [{"Name": dimension, "Value": queue}]
        return datum

    data: list[dict[str, Any]] = []
    queues = list(stats.waiting)
    queues += [queue for queue in stats.in_flight_by_queue or {} if queue not in stats.waiting]
    for queue in queues:
        if queue in stats.waiting:
            data.append(item(WAITING_TASKS, float(stats.waiting[queue]), "Count", queue))
        if queue in stats.oldest_age_s:
            data.append(item(OLDEST_TASK_AGE, stats.oldest_age_s[queue], "Seconds", queue))
        if stats.in_flight_by_queue is not None:
            data.append(item(IN_FLIGHT_TASKS, float(stats.in_flight_by_queue[queue]), "Count", queue))
    if stats.in_flight is not None:
        data.append(item(IN_FLIGHT_TASKS, float(stats.in_flight), "Count"))
    for group, members in (groups or {}).items():
        if all(queue in stats.waiting for queue in members):
            waiting = float(sum(stats.waiting[queue] for queue in members))
            data.append(item(WAITING_TASKS, waiting, "Count", group, dimension=GROUP_DIMENSION))
        if stats.in_flight_by_queue is not None:
            flying = float(sum(stats.in_flight_by_queue[queue] for queue in members))
            data.append(item(IN_FLIGHT_TASKS, flying, "Count", group, dimension=GROUP_DIMENSION))
    return data


def worker_metric_data(
    counts: Mapping[str, tuple[int, int]], polled_at: float, *, storage_resolution: int
) -> list[dict[str, Any]]:
    """PutMetricData items of the worker groups' (desired, running) ECS counts at `polled_at`.

    A group missing from `counts` (ECS did not describe its service) gets no point: missing data.
    """
    timestamp = datetime.fromtimestamp(polled_at, tz=UTC)
    return [
        {
            "MetricName": name,
            "Dimensions": [{"Name": GROUP_DIMENSION, "Value": group}],
            "Timestamp": timestamp,
            "Value": float(value),
            "Unit": "Count",
            "StorageResolution": storage_resolution,
        }
        for group, (desired, running) in counts.items()
        for name, value in ((DESIRED_WORKERS, desired), (RUNNING_WORKERS, running))
    ]


def storage_resolution(interval_s: int) -> int:
    """The StorageResolution of metrics polled every `interval_s`: high resolution below a minute."""
    return STANDARD_RESOLUTION_S if interval_s >= STANDARD_RESOLUTION_S else HIGH_RESOLUTION_S


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
    """What one invocation did: polls published (wholly or in part), failed, skipped for lack of time."""

    published_polls: int = 0
    failed_polls: int = 0
    skipped_polls: int = 0
    # Published polls that left some figures out because of keys of the wrong type.
    partial_polls: int = 0
    put_metric_data_calls: int = 0
    data_points: int = 0
    errors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "published_polls": self.published_polls,
            "partial_polls": self.partial_polls,
            "failed_polls": self.failed_polls,
            "skipped_polls": self.skipped_polls,
            "put_metric_data_calls": self.put_metric_data_calls,
            "data_points": self.data_points,
        }


# Time kept from each poll's slot for its PutMetricData call (tens of milliseconds as a rule).
PUBLISH_MARGIN_S = 1.0
# A poll always gets at least this long with the broker, even when the invocation's time is short.
MIN_POLL_BUDGET_S = 0.5


def poll_budget_s(planned_at: float, polled_at: float, interval_s: int, deadline: float) -> float:
    """Seconds the broker gets for the poll planned at `planned_at`: until its slot ends (the next
    poll's time), less the time to publish, and never past the invocation's `deadline`."""
    slot_end = min(planned_at + interval_s - min(PUBLISH_MARGIN_S, interval_s / 2), deadline)
    return max(MIN_POLL_BUDGET_S, slot_end - polled_at)


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
    on_key_problems: Callable[[float, Sequence[KeyProblem]], None] | None = None,
    broker_deadline: Deadline | None = None,
    after_poll: Callable[[QueueStats], None] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> InvocationReport:
    """Poll at `poll_times(clock(), interval_s)` and publish each poll's metrics as it is taken.

    A poll planned after `deadline` (Unix seconds), or whose interval has already passed, is skipped;
    the first is always taken. A poll that cannot read the broker publishes nothing (missing data,
    never a zero) and is reported to `on_broker_error`; the next poll tries again. With
    `broker_deadline` (the one the client's connections obey), a poll's broker I/O ends within
    `poll_budget_s`, so a slow broker costs its own slot and no more. Keys of the wrong type leave
    out their own figures (see read_queue_stats) and go to `on_key_problems`; the rest is published.
    `after_poll` sees each poll's figures after they are published; `groups` adds per-group sums
    (see metric_data). CloudWatch errors are raised.
    """
    resolution = storage_resolution(interval_s)
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
        if broker_deadline is not None:
            broker_deadline.expire_in(poll_budget_s(planned_at, polled_at, interval_s, deadline))
        try:
            stats = read_queue_stats(redis_client, queues, polled_at)
        except redis.RedisError as error:
            report.failed_polls += 1
            report.errors.append(f"{type(error).__name__}: {error}")
            on_broker_error(polled_at, error)
            continue
        finally:
            if broker_deadline is not None:
                broker_deadline.clear()
        if stats.problems:
            report.partial_polls += 1
            report.problems = [problem.describe() for problem in stats.problems]
            if on_key_problems is not None:
                on_key_problems(polled_at, stats.problems)
        data = metric_data(stats, storage_resolution=resolution, groups=groups)
        report.put_metric_data_calls += publish(put_metric_data, namespace, data)
        report.data_points += len(data)
        report.published_polls += 1
        if after_poll is not None:
            after_poll(stats)
    return report


# One poller at a time without reserved concurrency: EventBridge may deliver a schedule's event twice,
# and an invocation that starts while another still polls would double every data point (and, with
# from-zero starts, every request to ECS). The lease lives on the broker both already read.
LEASE_KEY = "celery_fleet:queue_depth_publisher:lease"
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def acquire_lease(redis_client: redis.Redis, holder: str, ttl_s: float) -> bool | None:
    """Take the publisher's lease for `ttl_s` seconds: True if taken, False if another invocation
    holds it, None if the broker could not say (unreachable, or full and refusing writes), in which
    case the caller polls anyway: its polls report the broker's state, and a missed poll costs more
    than a doubled one."""
    try:
        return bool(redis_client.set(LEASE_KEY, holder, nx=True, px=max(1, int(ttl_s * 1000))))
    except redis.RedisError:
        return None


def release_lease(redis_client: redis.Redis, holder: str) -> None:
    """Give the lease back if `holder` still holds it (it expires by itself otherwise)."""
    # A broker that cannot be reached now lets the lease expire at the invocation's end.
    with contextlib.suppress(redis.RedisError):
        redis_client.eval(_RELEASE_SCRIPT, 1, LEASE_KEY, holder)
