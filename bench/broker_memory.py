"""Broker memory per queued Celery task, for realistic message shapes, stock and slim.

The ElastiCache node for the fleet's broker is chosen from how many bytes Redis holds for each task
that sits in a queue, so this benchmark measures that number on real messages instead of guessing
it from a message's size.

What it does, for each argument shape in :data:`SHAPES` (ids and URLs; a dict with a uuid and a
timestamp; the bench's own mixed shape; a nested ~1 KB payload; a 4 KB payload):

* builds real Celery messages with ``Task.apply_async`` on real ``celery.Celery`` apps whose broker
  is a throwaway ``redis-server`` on loopback, once as stock Celery sends them ("celery") and once
  from an app set up with ``celery_fleet.configure`` ("configure": slim messages, the send stamp);
  the task never runs, it is only published;
* puts the same N messages, byte for byte, on a queue of a redis-server with Redis defaults and of
  one with the stack's list settings (:data:`STACK_LIST_SETTINGS`, from the parameter group module),
  and reads ``used_memory`` (``INFO memory``) before and after;
* does the same with the message bodies alone (the serialized arguments as configure's messages
  carry them) on the stack's settings: the envelope's overhead is configure's bytes per task minus
  that figure. List compression cannot shrink moderately random payloads much, so for the larger
  shapes the overhead is the figure to compare, not the total;
* reads how many tasks share each list node (``DEBUG OBJECT``, allowed on loopback only): Redis
  compresses one node (at most 8 KB before compression) at a time, so that count explains most of
  the difference between bodies alone and whole messages.

Run from the repository root:
``python -m bench.broker_memory [--tasks N] [--sample S] [--shape NAME] [--json]``.

``apply_async`` costs about 0.4 ms of CPU per call, so by default the first ``--sample`` tasks
(5,000) of each shape and producer go through it; the queue is then filled up to N (20,000) with
those same stored messages again, in order. Redis compresses list nodes (8 KB by default) one at a
time with LZF, whose back-references reach only within the node, so a copy that comes back 5,000
messages later cannot compress better than the original did: the bytes per task are those of N
distinct messages. ``--sample N`` (or more) sends every task through ``apply_async``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import celery_fleet
import redis
from celery import Celery
from celery.signals import before_task_publish

from infra.broker.parameters import LIST_COMPRESS_DEPTH
from tests.support.redis_server import RedisServer

# The stack's list settings, from the module that writes them into the ElastiCache parameter group.
STACK_LIST_SETTINGS: dict[str, int] = {"list-compress-depth": LIST_COMPRESS_DEPTH}

# Name -> settings passed to redis-server. "defaults" passes nothing, so whatever the installed Redis
# ships with is the baseline; the effective values are read back and reported.
LIST_SETTING_VARIANTS: dict[str, dict[str, int]] = {"defaults": {}, "stack": STACK_LIST_SETTINGS}

PRODUCERS: tuple[str, ...] = ("celery", "configure")
# The rows printed per shape: (producer or "bodies", list setting).
ROWS: tuple[tuple[str, str], ...] = (
    ("celery", "defaults"),
    ("celery", "stack"),
    ("configure", "defaults"),
    ("configure", "stack"),
    ("bodies", "stack"),
)

# Issue 11's goals for configure's messages on the stack's settings.
SMALL_SHAPE_GOAL_BYTES = 300
BENCH_SHAPE_GOAL_BYTES = 250
OVERHEAD_GOAL_BYTES = 120

DEFAULT_TASKS = 20_000
DEFAULT_SAMPLE = 5_000
PROJECTION_TASKS = 1_000_000
SEED = 20_240_611
QUEUE = "fleet-items"
TASK_NAME = "fleet.process_item"
MESSAGE_SIZE_SAMPLES = 500
# Values per LPUSH when refilling: big enough to keep the client busy rather than the socket,
# small enough that Redis's query buffer for one command stays around a megabyte.
PUSH_BATCH = 500
LIST_CONFIG_KEYS = ("list-compress-depth", "list-max-listpack-size")
# configure's before_task_publish handler is process-wide (settings._PUBLISH_DISPATCH_UID): the bench
# keeps it off its stock Celery messages and puts back whatever handler the process had before.
_FLEET_PUBLISH_UID = "celery_fleet.publish"

_HOSTS = ("example.com", "shop.example.org", "api.example.net", "img.example.io")
_SECTIONS = ("catalog", "p", "articles", "assets", "v2/items", "feeds")
_WORDS = ("alpine", "harbor", "copper", "meadow", "signal", "orbit", "willow", "ember", "delta", "quartz")
_LOCALES = ("en-GB", "en-US", "de-DE", "fr-FR", "es-ES", "ja-JP", "pt-BR")
_STATUSES = ("ok", "ok", "ok", "degraded", "retrying", "stale")
_EPOCH = datetime(2026, 11, 1, tzinfo=UTC)

Arguments = tuple[tuple[Any, ...], dict[str, Any]]


def _uuid(rng: random.Random) -> str:
    # uuid4 from the seeded generator rather than os.urandom, so runs are comparable.
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _timestamp(rng: random.Random) -> str:
    return (_EPOCH + timedelta(microseconds=rng.randrange(30 * 86_400 * 10**6))).isoformat()


def _url(rng: random.Random) -> str:
    slug = "-".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 2)))
    return f"https://{rng.choice(_HOSTS)}/{rng.choice(_SECTIONS)}/{slug}?page={rng.randint(1, 400)}"


def ids_and_urls(rng: random.Random) -> Arguments:
    """A fan-out sub-task: two ids and the URL it fetches."""
    return (rng.randrange(1, 50_000), rng.randrange(1_000_000, 2_000_000_000), _url(rng)), {}


def uuid_and_timestamp(rng: random.Random) -> Arguments:
    """An id and a small dict with a request uuid and an ISO timestamp."""
    meta = {"request_id": _uuid(rng), "requested_at": _timestamp(rng), "source": rng.choice(_SECTIONS)}
    return (rng.randrange(1_000_000, 2_000_000_000), meta), {}


def bench_shape(rng: random.Random) -> Arguments:
    """The shape the sizing model was first measured on: an id, a URL, a dict with a uuid."""
    options = {"request_id": _uuid(rng), "attempt": rng.randint(0, 3), "locale": rng.choice(_LOCALES)}
    return (rng.randrange(1_000_000, 2_000_000_000), _url(rng), options), {}


def nested_1kb(rng: random.Random) -> Arguments:
    """An order: customer, address, five to seven line items; about 1 KB of JSON."""
    items = [
        {
            "sku": f"SKU-{rng.randrange(10**7):07d}",
            "name": " ".join(rng.choice(_WORDS) for _ in range(2)),
            "quantity": rng.randint(1, 12),
            "unit_price": round(rng.uniform(0.5, 400), 2),
        }
        for _ in range(rng.randint(5, 7))
    ]
    order = {
        "order_id": _uuid(rng),
        "created_at": _timestamp(rng),
        "currency": rng.choice(("EUR", "USD", "GBP")),
        "customer": {
            "id": rng.randrange(10**6, 10**8),
            "email": f"{rng.choice(_WORDS)}.{rng.randrange(10**4)}@{rng.choice(_HOSTS)}",
            "locale": rng.choice(_LOCALES),
            "address": {
                "street": f"{rng.randint(1, 250)} {rng.choice(_WORDS).title()} Street",
                "city": rng.choice(_WORDS).title(),
                "postcode": f"{rng.randrange(10**5):05d}",
            },
        },
        "items": items,
    }
    return (order,), {"notify": rng.random() < 0.5}


def payload_4kb(rng: random.Random) -> Arguments:
    """A batch of sensor readings with random floats and a small binary blob: about 4 KB."""
    rows = [
        {
            "ts": _timestamp(rng),
            "sensor": f"s-{rng.randrange(1000):03d}",
            "values": [round(rng.gauss(20, 5), 3) for _ in range(4)],
            "status": rng.choice(_STATUSES),
        }
        for _ in range(28)
    ]
    blob = base64.b64encode(rng.randbytes(240)).decode()
    return ({"batch_id": _uuid(rng), "rows": rows, "signature": blob},), {}


@dataclass(frozen=True)
class Shape:
    make: Callable[[random.Random], Arguments]
    description: str
    # Which goal configure's figure is held to: "small" (<= 300 B/task), "bench" (<= 250 B/task),
    # or "overhead" (envelope overhead <= 120 B/task).
    goal: str


SHAPES: dict[str, Shape] = {
    "ids_urls": Shape(ids_and_urls, "two ids and a URL", "small"),
    "uuid_timestamp": Shape(uuid_and_timestamp, "an id and a dict with a uuid and a timestamp", "small"),
    "bench": Shape(bench_shape, "an id, a URL and a dict with a uuid (the bench's own shape)", "bench"),
    "nested_1kb": Shape(nested_1kb, "a nested order of about 1 KB", "overhead"),
    "payload_4kb": Shape(payload_4kb, "a 4 KB batch of readings with random floats", "overhead"),
}


@dataclass(frozen=True)
class PublishTiming:
    """How long the real ``apply_async`` calls of one shape and producer took."""

    tasks: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else float("inf")


def process_item(*args: Any, **kwargs: Any) -> None:  # pragma: no cover
    """The fleet task; the benchmark only publishes it, no worker ever runs it."""
    raise RuntimeError("the broker memory benchmark only publishes this task")


def build_app(broker_url: str, producer: str) -> tuple[Celery, Any]:
    """A Celery app, stock or through configure, and the task the benchmark publishes."""
    app = Celery("celery-fleet-bench", set_as_current=False)
    if producer == "configure":
        celery_fleet.configure(
            app,
            broker_url=broker_url,
            task_events=False,
            healthcheck=False,
            task_default_queue=QUEUE,
            broker_connection_retry_on_startup=False,
        )
    else:
        app.conf.update(
            broker_url=broker_url, task_default_queue=QUEUE, broker_connection_retry_on_startup=False
        )
    return app, app.task(name=TASK_NAME)(process_item)


@contextmanager
def redis_server(binary: str, settings: Mapping[str, int]) -> Iterator[redis.Redis]:
    """A throwaway redis-server on loopback with nothing persisted, stopped on exit."""
    # DEBUG OBJECT (loopback only) reports how many tasks share each list node: Redis compresses a
    # node at a time, so that count explains most of the difference between shapes.
    directives = {name: str(value) for name, value in settings.items()} | {"enable-debug-command": "local"}
    with RedisServer(directives, binary=binary) as server:
        client = server.client()
        try:
            yield client
        finally:
            client.close()


@contextmanager
def _fleet_handler_set_aside() -> Iterator[None]:
    """No configure publish handler inside; the one connected before (if any) again on exit."""
    previous = [receiver for key, receiver in before_task_publish.receivers if key[0] == _FLEET_PUBLISH_UID]
    before_task_publish.disconnect(dispatch_uid=_FLEET_PUBLISH_UID)
    try:
        yield
    finally:
        before_task_publish.disconnect(dispatch_uid=_FLEET_PUBLISH_UID)
        for receiver in previous:
            before_task_publish.connect(receiver, weak=False, dispatch_uid=_FLEET_PUBLISH_UID)


def publish_with_apply_async(client: redis.Redis, shape: Shape, count: int, producer: str) -> PublishTiming:
    """Publish ``count`` tasks of ``shape`` through ``apply_async`` into the server behind ``client``."""
    kwargs = client.connection_pool.connection_kwargs
    # Same seed for both producers: the producer is the only difference between them.
    rng = random.Random(SEED)
    arguments = [shape.make(rng) for _ in range(count)]
    with _fleet_handler_set_aside():
        app, task = build_app(f"redis://{kwargs['host']}:{kwargs['port']}/0", producer)
        try:
            return _publish(app, task, arguments)
        finally:
            app.close()


def _publish(app: Celery, task: Any, arguments: Sequence[Arguments]) -> PublishTiming:
    started = time.perf_counter()
    # A kombu publish batch only pipelines the LPUSHes that apply_async issues; the message bytes are
    # the same as without it, it just saves a round trip per task.
    with app.producer_or_acquire() as publisher, publisher.batch(max_size=PUSH_BATCH):
        for args, task_kwargs in arguments:
            task.apply_async(args=args, kwargs=task_kwargs, queue=QUEUE, producer=publisher)
    return PublishTiming(tasks=len(arguments), seconds=time.perf_counter() - started)


def read_queue_oldest_first(client: redis.Redis) -> list[bytes]:
    """The queued messages as Redis stores them, in the order they were pushed."""
    length = int(client.llen(QUEUE))
    messages: list[bytes] = []
    # kombu LPUSHes, so the oldest message sits at the tail; walk from the tail in chunks to keep
    # each reply small.
    chunk = 5_000
    for end in range(length - 1, -1, -chunk):
        start = max(0, end - chunk + 1)
        part = cast("list[bytes]", client.lrange(QUEUE, start, end))
        messages.extend(reversed(part))
    return messages


def fill_queue(client: redis.Redis, messages: Sequence[bytes], tasks: int) -> None:
    """LPUSH ``tasks`` messages, cycling through ``messages``, exactly as kombu pushes them.

    A multi-value LPUSH inserts its values one by one at the head, so Redis ends up with the same
    list nodes as with one LPUSH per task.
    """
    pushed = 0
    pipe = client.pipeline(transaction=False)
    while pushed < tasks:
        count = min(PUSH_BATCH, tasks - pushed)
        batch = [messages[(pushed + i) % len(messages)] for i in range(count)]
        pipe.lpush(QUEUE, *batch)
        pushed += count
        if len(pipe) >= 10:
            pipe.execute()
    pipe.execute()


def used_memory(client: redis.Redis) -> int:
    info = client.info("memory")
    return int(info["used_memory"])


def measure_queue(client: redis.Redis, messages: Sequence[bytes], tasks: int) -> dict[str, float]:
    """Memory the server holds for ``tasks`` queued messages."""
    client.flushall()
    before = used_memory(client)
    kwargs = client.connection_pool.connection_kwargs
    # Fill over a separate connection and close it before measuring: Redis keeps a client's query
    # buffer (about one LPUSH batch) allocated after the command, and it would count as queue memory.
    filler = redis.Redis(host=kwargs["host"], port=kwargs["port"], socket_timeout=120)
    try:
        fill_queue(filler, messages, tasks)
    finally:
        filler.close()
        filler.connection_pool.disconnect()
    after = used_memory(client)
    length = int(client.llen(QUEUE))
    if length != tasks:
        raise RuntimeError(f"queue holds {length} messages, expected {tasks}")
    delta = after - before
    layout = cast("dict[str, Any]", client.debug_object(QUEUE))
    client.flushall()
    return {
        "used_memory_delta": delta,
        "list_nodes": int(layout["ql_nodes"]),
        "tasks_per_node": tasks / int(layout["ql_nodes"]),
        "bytes_per_task": delta / tasks,
        "projected_gib": delta / tasks * PROJECTION_TASKS / 2**30,
    }


def body_of(message: bytes) -> bytes:
    """The body a slim message carries, as the bytes it was serialized to."""
    body = json.loads(message)["body"]
    return body.encode() if isinstance(body, str) else base64.b64decode(body)


def _check_producer(producer: str, message: bytes) -> None:
    properties = json.loads(message)["properties"]
    expected = None if producer == "configure" else "base64"
    if properties.get("body_encoding") != expected:
        raise RuntimeError(f"{producer} message has body_encoding {properties.get('body_encoding')!r}")


def goal_met(shape: Shape, figures: Mapping[str, float]) -> tuple[str, float, bool]:
    """The goal this shape is held to, the figure compared with it, and whether it is met."""
    if shape.goal == "overhead":
        return (
            f"overhead <= {OVERHEAD_GOAL_BYTES} B",
            figures["overhead"],
            figures["overhead"] <= OVERHEAD_GOAL_BYTES,
        )
    limit = SMALL_SHAPE_GOAL_BYTES if shape.goal == "small" else BENCH_SHAPE_GOAL_BYTES
    return f"<= {limit} B/task", figures["configure"], figures["configure"] <= limit


def run_benchmark(
    tasks: int = DEFAULT_TASKS,
    sample: int = DEFAULT_SAMPLE,
    redis_binary: str | None = None,
    shapes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Measure every shape, producer and list setting; return the figures as a dict."""
    if tasks <= 0:
        raise ValueError("tasks must be positive")
    binary = redis_binary or shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(binary, os.X_OK):
        raise FileNotFoundError(f"redis-server not found or not executable: {binary}")
    selected = list(shapes or SHAPES)
    published = min(max(sample, 1), tasks)
    started = time.perf_counter()

    # Build each shape's messages once on a scratch server, so every list setting is measured on
    # byte-identical input and the figures compare the settings only.
    messages: dict[str, dict[str, list[bytes]]] = {name: {} for name in selected}
    publish: dict[str, dict[str, dict[str, float]]] = {name: {} for name in selected}
    with redis_server(binary, {}) as scratch:
        redis_version = str(scratch.info("server")["redis_version"])
        for producer in PRODUCERS:
            for name in selected:
                scratch.flushall()
                timing = publish_with_apply_async(scratch, SHAPES[name], published, producer)
                stored = read_queue_oldest_first(scratch)
                if len(stored) != published:
                    raise RuntimeError(f"expected {published} queued messages, found {len(stored)}")
                _check_producer(producer, stored[0])
                messages[name][producer] = stored
                publish[name][producer] = {"tasks": timing.tasks, "seconds": round(timing.seconds, 3)}
            scratch.flushall()
    for name in selected:
        messages[name]["bodies"] = [body_of(message) for message in messages[name]["configure"]]

    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {
        name: {producer: {} for producer, _ in ROWS} for name in selected
    }
    effective_config: dict[str, dict[str, str]] = {}
    for setting, values in LIST_SETTING_VARIANTS.items():
        with redis_server(binary, values) as server:
            config = cast("dict[str, str]", server.config_get("list-*"))
            effective_config[setting] = {key: config[key] for key in LIST_CONFIG_KEYS}
            for name in selected:
                for producer, row_setting in ROWS:
                    if row_setting == setting:
                        results[name][producer][setting] = measure_queue(
                            server, messages[name][producer], tasks
                        )

    report_shapes: dict[str, Any] = {}
    for name in selected:
        shape = SHAPES[name]
        sizes = {kind: sum(map(len, stored)) / len(stored) for kind, stored in messages[name].items()}
        stack = {kind: results[name][kind]["stack"]["bytes_per_task"] for kind in ("configure", "bodies")}
        figures = {"configure": stack["configure"], "overhead": stack["configure"] - stack["bodies"]}
        goal, compared, met = goal_met(shape, figures)
        report_shapes[name] = {
            "description": shape.description,
            "message_bytes": {kind: round(size, 1) for kind, size in sizes.items()},
            "results": results[name],
            "overhead_bytes": figures["overhead"],
            "goal": goal,
            "goal_figure": compared,
            "goal_met": met,
            "publish": publish[name],
        }

    return {
        "redis_version": redis_version,
        "tasks": tasks,
        "apply_async_tasks": published,
        "replayed_tasks": tasks - published,
        "seed": SEED,
        "queue": QUEUE,
        "task_name": TASK_NAME,
        "projection_tasks": PROJECTION_TASKS,
        "list_settings": {name: dict(values) for name, values in LIST_SETTING_VARIANTS.items()},
        "effective_config": effective_config,
        "shapes": report_shapes,
        "elapsed_seconds": round(time.perf_counter() - started, 3),
    }


def format_report(report: Mapping[str, Any]) -> str:
    config = report["effective_config"]
    lines = [
        f"celery-fleet broker memory per queued task: redis-server {report['redis_version']}, "
        f"{report['tasks']:,} tasks per queue, seed {report['seed']}",
        "  list settings: "
        + "; ".join(
            f"{name} = compress-depth {values['list-compress-depth']}, listpack-size "
            f"{values['list-max-listpack-size']}"
            for name, values in config.items()
        ),
        "  celery = stock Celery messages; configure = celery_fleet.configure(app) defaults; "
        "bodies = configure's message bodies alone",
    ]
    if report["replayed_tasks"]:
        lines.append(
            f"  {report['apply_async_tasks']:,} tasks per shape and producer through apply_async; "
            f"the other {report['replayed_tasks']:,} per queue repeat those stored messages in order"
        )
    row_labels = [f"{producer}/{setting}" for producer, setting in ROWS]
    header = (
        f"{'shape':<16} {'message B (celery/configure)':>29} "
        + " ".join(f"{label:>18}" for label in row_labels)
        + f" {'overhead':>9}  goal"
    )
    lines += ["", "bytes per queued task:", header, "-" * len(header)]
    for name, shape in report["shapes"].items():
        sizes = shape["message_bytes"]
        cells = [shape["results"][producer][setting]["bytes_per_task"] for producer, setting in ROWS]
        verdict = "met" if shape["goal_met"] else "NOT met"
        lines.append(
            f"{name:<16} {sizes['celery']:>14,.0f} / {sizes['configure']:>,.0f}".ljust(47)
            + " ".join(f"{cell:>18,.1f}" for cell in cells)
            + f" {shape['overhead_bytes']:>9,.1f}  {shape['goal']}: {shape['goal_figure']:,.1f} {verdict}"
        )
    lines += [
        "",
        "tasks per list node on the stack's settings (Redis compresses a node at a time, and a node "
        "holds at most 8 KB before compression):",
        f"{'shape':<16} {'celery':>8} {'configure':>10} {'bodies':>8}",
    ]
    for name, shape in report["shapes"].items():
        per_node = [
            shape["results"][kind]["stack"]["tasks_per_node"] for kind in ("celery", "configure", "bodies")
        ]
        lines.append(f"{name:<16} {per_node[0]:>8.1f} {per_node[1]:>10.1f} {per_node[2]:>8.1f}")
    lines += ["", f"GiB per {report['projection_tasks']:,} tasks:", header.rsplit(" overhead", 1)[0]]
    for name, shape in report["shapes"].items():
        cells = [shape["results"][producer][setting]["projected_gib"] for producer, setting in ROWS]
        lines.append(f"{name:<16} {'':>29} " + " ".join(f"{cell:>18.3f}" for cell in cells))
    lines += [
        "",
        "bytes/task = (used_memory after - used_memory before) / tasks, from INFO memory; overhead = "
        "configure/stack - bodies/stack",
        f"total run time {report['elapsed_seconds']:.1f} s",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=DEFAULT_TASKS, help="tasks per queue")
    parser.add_argument(
        "--sample",
        type=int,
        default=DEFAULT_SAMPLE,
        help="tasks per shape and producer sent through apply_async; the rest repeat them "
        "(use a value >= --tasks to send every task through apply_async)",
    )
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES), help="measure only these shapes")
    parser.add_argument("--redis-server", default=None, help="redis-server binary (default: from PATH)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.tasks <= 0 or args.sample <= 0:
        parser.error("--tasks and --sample must be positive")
    report = run_benchmark(
        tasks=args.tasks, sample=args.sample, redis_binary=args.redis_server, shapes=args.shape
    )
    print(json.dumps(report, indent=2, sort_keys=True) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
