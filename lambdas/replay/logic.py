"""Replay: put kept failed messages back on their original queues. Knows nothing of Lambda.

A message goes back as kombu would have published it: `LPUSH` of its JSON text onto the list of
its queue and priority (`<queue>\\x06\\x16<3|6|9>`, priority 0 on the bare name). Its body (the
task's arguments, base64 as sent) is not touched; the replay changes only what makes it a new
delivery of a new task: the task id (headers `id`, properties `correlation_id`), the delivery tag,
the send stamp (the queue-age metric would otherwise see a message as old as the failure), and
the `celery_fleet_replay_of` header naming the task it replays.

At most once: before pushing, the replay writes a marker object beside the kept message with
`If-None-Match: *`; a marker already there means replayed before, and the message is skipped
unless `force`. A marker written for a push that then fails is removed again.
"""

from __future__ import annotations

import json
import time
import uuid
from bisect import bisect
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from celery_fleet.contract import kept_messages as km
from celery_fleet.contract.queue_metrics import SENT_AT_HEADER

# kombu's Redis transport (kombu/transport/redis.py): priority sibling lists and binding tables.
PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEP = "\x06\x16"
BINDING_KEY = "_kombu.binding.{}"
MIN_PRIORITY, MAX_PRIORITY, DEFAULT_PRIORITY = 0, 9, 0


class Store(Protocol):
    """The failed-messages bucket as replay uses it."""

    def get(self, key: str) -> bytes | None: ...

    def exists(self, key: str) -> bool: ...

    def put_marker(self, key: str, data: bytes, *, overwrite: bool) -> bool:
        """Write the marker; False when one exists and `overwrite` is false."""
        ...

    def delete(self, key: str) -> None: ...


class Broker(Protocol):
    """The two Redis commands replay needs (a redis.Redis fits)."""

    def smembers(self, name: str) -> Any: ...

    def lpush(self, name: str, *values: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class Candidate:
    """One failure chosen for replay: the failed task's id and the key of its kept message."""

    task_id: str
    kept_key: str


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    dry_run: bool = False
    force: bool = False
    # Messages pushed per second at most; protects the broker and the dependency that failed.
    rate_per_s: float = 10.0
    requested_by: str = ""
    replay_id: str = ""


@dataclass(slots=True)
class ReplayReport:
    """What one replay call did (or, dry, would do)."""

    dry_run: bool
    # (task name, queue) -> messages replayed (or that would be).
    by_task_and_queue: Counter[tuple[str, str]] = field(default_factory=Counter)
    already_replayed: list[str] = field(default_factory=list)
    not_kept: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    # original task id -> the replayed task's id.
    replayed: dict[str, str] = field(default_factory=dict)
    # Candidates not looked at because the time budget ran out; the caller sends them again.
    remaining: list[Candidate] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(self.by_task_and_queue.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "count": self.count,
            "by_task_and_queue": [
                {"task": task, "queue": queue, "count": count}
                for (task, queue), count in sorted(self.by_task_and_queue.items())
            ],
            "already_replayed": self.already_replayed,
            "not_kept": self.not_kept,
            "invalid": self.invalid,
            "failed": self.failed,
            "replayed": self.replayed,
            "remaining": [{"task_id": c.task_id, "kept_key": c.kept_key} for c in self.remaining],
        }


@dataclass(frozen=True, slots=True)
class KeptMessage:
    task_id: str
    task: str
    queue: str
    list_key: str
    message: dict[str, Any]


class InvalidKeptMessageError(ValueError):
    """The object is not a kept message this replay understands."""


def replay(
    candidates: Iterable[Candidate],
    *,
    store: Store,
    broker: Broker,
    options: ReplayOptions,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    deadline: float | None = None,
    new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> ReplayReport:
    """Replay `candidates` in order, at most `options.rate_per_s` a second, until `deadline` (clock)."""
    report = ReplayReport(dry_run=options.dry_run)
    interval_s = 1.0 / options.rate_per_s if options.rate_per_s > 0 else 0.0
    next_push = clock()
    queues: dict[tuple[str, str], str] = {}
    pending = list(candidates)
    for index, candidate in enumerate(pending):
        if deadline is not None and clock() >= deadline:
            report.remaining = pending[index:]
            break
        if not candidate.kept_key.startswith(km.MESSAGES_PREFIX):
            report.invalid.append(candidate.task_id)
            continue
        data = store.get(candidate.kept_key)
        if data is None:
            # Not kept (keeping was off, the store failed), or past the retention.
            report.not_kept.append(candidate.task_id)
            continue
        try:
            kept = parse_kept(data, broker=broker, queues=queues)
        except InvalidKeptMessageError:
            report.invalid.append(candidate.task_id)
            continue
        marker_key = km.replay_marker_key(candidate.kept_key)
        if options.dry_run:
            if not options.force and store.exists(marker_key):
                report.already_replayed.append(kept.task_id)
            else:
                report.by_task_and_queue[(kept.task, kept.queue)] += 1
            continue
        wait_s = next_push - clock()
        if wait_s > 0:
            sleep(wait_s)
        next_push = max(next_push, clock()) + interval_s
        replay_task_id = new_id()
        marker = json.dumps(
            {
                "task_id": kept.task_id,
                "replayed_as": replay_task_id,
                "replayed_at": round(wall_clock(), 3),
                "requested_by": options.requested_by,
                "replay_id": options.replay_id,
            }
        ).encode()
        if not store.put_marker(marker_key, marker, overwrite=options.force):
            report.already_replayed.append(kept.task_id)
            continue
        text = replayed_message(kept.message, replay_task_id, original_id=kept.task_id, now=wall_clock())
        try:
            broker.lpush(kept.list_key, text)
        except Exception:
            # Not pushed: the marker must not claim it was, or no replay could put it back.
            store.delete(marker_key)
            report.failed.append(kept.task_id)
            continue
        report.by_task_and_queue[(kept.task, kept.queue)] += 1
        report.replayed[kept.task_id] = replay_task_id
    return report


def parse_kept(data: bytes, *, broker: Broker, queues: dict[tuple[str, str], str]) -> KeptMessage:
    """The kept message in `data`, with the Redis list it goes back to."""
    try:
        envelope = json.loads(data)
        message = json.loads(envelope["message"])
        task_id, exchange, routing_key = envelope["task_id"], envelope["exchange"], envelope["routing_key"]
        headers, properties = message["headers"], message["properties"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidKeptMessageError(str(exc)) from None
    if (
        envelope.get("v") != km.FORMAT_VERSION
        or not all(isinstance(v, str) for v in (task_id, exchange, routing_key))
        or not isinstance(headers, dict)
        or not isinstance(properties, dict)
        or not isinstance(message.get("body"), str)
    ):
        raise InvalidKeptMessageError("not a version 1 kept message")
    if (exchange, routing_key) not in queues:
        queues[(exchange, routing_key)] = resolve_queue(broker, exchange, routing_key)
    queue = queues[(exchange, routing_key)]
    task = headers.get("task")
    return KeptMessage(
        task_id=task_id,
        task=task if isinstance(task, str) else "",
        queue=queue,
        list_key=priority_list(queue, properties.get("priority")),
        message=message,
    )


def resolve_queue(broker: Broker, exchange: str, routing_key: str) -> str:
    """The queue a (exchange, routing key) delivers to, as kombu's direct exchange looks it up.

    The default exchange ("") routes by queue name; a named one by its binding table. With no
    binding (or several queues bound to one routing key), the routing key itself: Celery's default
    routing, where a queue's routing key is its name.
    """
    if not exchange:
        return routing_key
    bound = []
    for member in broker.smembers(BINDING_KEY.format(exchange)) or ():
        text = member.decode("utf-8", "replace") if isinstance(member, bytes) else str(member)
        parts = text.split(PRIORITY_SEP)
        if len(parts) == 3 and parts[0] == routing_key:
            bound.append(parts[2])
    return bound[0] if len(bound) == 1 else routing_key


def priority_list(queue: str, priority: Any) -> str:
    """kombu's `_q_for_pri(queue, _get_message_priority(message))`."""
    try:
        value = max(min(int(priority), MAX_PRIORITY), MIN_PRIORITY)
    except (TypeError, ValueError):
        value = DEFAULT_PRIORITY
    step = PRIORITY_STEPS[bisect(PRIORITY_STEPS, value) - 1]
    return f"{queue}{PRIORITY_SEP}{step}" if step else queue


def replayed_message(message: Mapping[str, Any], task_id: str, *, original_id: str, now: float) -> str:
    """The JSON text of `message` as a new task `task_id` that replays `original_id`."""
    replayed = dict(message)
    headers = dict(message["headers"])
    properties = dict(message["properties"])
    headers["id"] = task_id
    headers[km.REPLAY_OF_HEADER] = original_id
    if SENT_AT_HEADER in headers:
        headers[SENT_AT_HEADER] = now
    properties["correlation_id"] = task_id
    properties["delivery_tag"] = str(uuid.uuid4())
    replayed["headers"] = headers
    replayed["properties"] = properties
    # kombu.utils.json.dumps: the standard library's defaults, as the message was first written.
    return json.dumps(replayed)
