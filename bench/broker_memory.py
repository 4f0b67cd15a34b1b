"""Broker memory per queued Celery task, with Redis defaults and with the stack's list settings.

The ElastiCache node size for the fleet's broker is chosen from one number: how many bytes Redis
holds for each task that sits in a queue.  A backlog of a million tasks has to fit in the node's
memory with head-room, so this benchmark measures that number instead of guessing it from the size
of a message.

What it does:

* starts throwaway ``redis-server`` processes on loopback (free port, no RDB, no AOF), one per list
  setting: Redis defaults, the stack's settings (:data:`STACK_LIST_SETTINGS`, from the parameter
  group module), and 64 KB list nodes on top (not settable on ElastiCache; shown for comparison);
* builds real Celery messages with ``Task.apply_async`` on a real ``celery.Celery`` app whose
  broker is one of those servers; the task is never executed, only published;
* puts the same N messages, byte for byte, on a queue in each server and reads
  ``used_memory`` (``INFO memory``) before and after, and ``MEMORY USAGE`` of the queue's list;
* does all of that twice: with Celery's headers as they are, and with a ``before_task_publish``
  handler that drops the ``argsrepr``/``kwargsrepr`` headers (a copy of the arguments, kept only
  for logs and monitoring).

Run from the repository root: ``python -m bench.broker_memory [--tasks N] [--sample S] [--json]``.

``apply_async`` costs about 0.4 ms of CPU per call (2,300-2,500 tasks/s here), so pushing
2 x 200,000 tasks through it would take close to three minutes.  By default the first ``--sample``
tasks (20,000) of each header variant go through ``apply_async``; the queue is then filled up to N
with those same stored messages again, in the same order.  Redis compresses list nodes with LZF,
whose back-references reach only 8 KiB, so a copy that comes back 20,000 messages (about 25 MB)
later cannot compress better than the original did: the bytes per task are those of N distinct
messages.  ``--sample N`` (or more) sends every task through ``apply_async``; the JSON and the
table say which was done and how long publishing took.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import redis
from celery import Celery
from celery.signals import before_task_publish

from infra.broker.parameters import LIST_COMPRESS_DEPTH
from tests.support.redis_server import RedisServer

# The stack's list settings, from the module that writes them into the ElastiCache parameter group.
STACK_LIST_SETTINGS: dict[str, int] = {"list-compress-depth": LIST_COMPRESS_DEPTH}

# 64 KB list nodes on top: ElastiCache does not expose the node size (infra/broker/parameters.py), so
# this row shows what the stack leaves on the table, not what it deploys.
LARGE_NODE_LIST_SETTINGS: dict[str, int] = {**STACK_LIST_SETTINGS, "list-max-listpack-size": -5}

# Name -> settings passed to redis-server.  "defaults" passes nothing, so whatever the installed
# Redis ships with is the baseline; the effective values are read back and reported.
LIST_SETTING_VARIANTS: dict[str, dict[str, int]] = {
    "defaults": {},
    "stack": STACK_LIST_SETTINGS,
    "large_nodes": LARGE_NODE_LIST_SETTINGS,
}

HEADER_VARIANTS: tuple[str, ...] = ("full_headers", "no_argsrepr")
HEADER_VARIANT_LABELS: dict[str, str] = {
    "full_headers": "Celery headers as sent (argsrepr/kwargsrepr included)",
    "no_argsrepr": "before_task_publish handler drops argsrepr/kwargsrepr",
}

DEFAULT_TASKS = 200_000
DEFAULT_SAMPLE = 20_000
PROJECTION_TASKS = 1_000_000
SEED = 20_240_611
QUEUE = "fleet-items"
TASK_NAME = "fleet.process_item"
MESSAGE_SIZE_SAMPLES = 500
# Values per LPUSH when refilling: big enough to keep the client busy rather than the socket,
# small enough that Redis's query buffer for one command stays around a megabyte.
PUSH_BATCH = 1_000
LIST_CONFIG_KEYS = ("list-compress-depth", "list-max-listpack-size")

_HOSTS = ("example.com", "shop.example.org", "api.example.net", "img.example.io")
_SECTIONS = ("catalog", "p", "articles", "assets", "v2/items", "feeds")
_WORDS = ("alpine", "harbor", "copper", "meadow", "signal", "orbit", "willow", "ember", "delta", "quartz")
_LOCALES = ("en-GB", "en-US", "de-DE", "fr-FR", "es-ES", "ja-JP", "pt-BR")


@dataclass(frozen=True)
class PublishTiming:
    """How long the real ``apply_async`` calls of one header variant took."""

    tasks: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else float("inf")


def make_arguments(rng: random.Random) -> tuple[int, str, dict[str, Any]]:
    """Arguments shaped like the fleet's real ones; sizes and values vary from task to task."""
    item_id = rng.randrange(1_000_000, 2_000_000_000)
    slug = "-".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 2)))
    url = f"https://{rng.choice(_HOSTS)}/{rng.choice(_SECTIONS)}/{slug}?page={rng.randint(1, 400)}"
    options: dict[str, Any] = {
        # uuid4 from the seeded generator rather than os.urandom, so runs are comparable.
        "request_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "attempt": rng.randint(0, 3),
        "locale": rng.choice(_LOCALES),
    }
    return item_id, url, options


def build_app(broker_url: str) -> tuple[Any, Any]:
    """A Celery app and the task the benchmark publishes (the task body never runs)."""
    app = Celery("celery-fleet-bench", broker=broker_url, set_as_current=False)
    app.conf.update(task_default_queue=QUEUE, broker_connection_retry_on_startup=False)

    return app, app.task(name=TASK_NAME)(process_item)


def process_item(item_id: int, url: str, options: dict[str, Any]) -> None:  # pragma: no cover
    """The fleet task's signature; the benchmark only publishes it, no worker ever runs it."""
    raise RuntimeError("the broker memory benchmark only publishes this task")


def drop_repr_headers(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """``before_task_publish`` handler: drop the argument copies Celery adds to every message.

    Workers fall back to ``repr(args)`` themselves when these headers are missing, so only logs and
    monitoring that read them off the broker lose anything.
    """
    if headers is not None and headers.get("task") == TASK_NAME:
        headers.pop("argsrepr", None)
        headers.pop("kwargsrepr", None)


@contextmanager
def redis_server(binary: str, settings: Mapping[str, int]) -> Iterator[redis.Redis]:
    """A throwaway redis-server on loopback with nothing persisted, stopped on exit."""
    with RedisServer({name: str(value) for name, value in settings.items()}, binary=binary) as server:
        client = server.client()
        try:
            yield client
        finally:
            client.close()


def publish_with_apply_async(client: redis.Redis, count: int, header_variant: str) -> PublishTiming:
    """Publish ``count`` tasks through ``apply_async`` into the server behind ``client``."""
    kwargs = client.connection_pool.connection_kwargs
    app, task = build_app(f"redis://{kwargs['host']}:{kwargs['port']}/0")
    # Same seed for both header variants: the handler is the only difference between them.
    rng = random.Random(SEED)
    arguments = [make_arguments(rng) for _ in range(count)]
    if header_variant == "no_argsrepr":
        before_task_publish.connect(drop_repr_headers, weak=False)
    try:
        started = time.perf_counter()
        with app.producer_or_acquire() as producer:
            # A kombu publish batch only pipelines the LPUSHes that apply_async issues; the message
            # bytes are the same as without it, it just saves a round trip per task.  A kombu without
            # Producer.batch publishes one by one.
            batch = producer.batch(max_size=PUSH_BATCH) if hasattr(producer, "batch") else _no_batch()
            with batch:
                for args in arguments:
                    task.apply_async(args=args, queue=QUEUE, producer=producer)
        seconds = time.perf_counter() - started
    finally:
        if header_variant == "no_argsrepr":
            before_task_publish.disconnect(drop_repr_headers)
        app.close()
    return PublishTiming(tasks=count, seconds=seconds)


@contextmanager
def _no_batch() -> Iterator[None]:
    yield


def read_queue_oldest_first(client: redis.Redis) -> list[bytes]:
    """The queued messages as Redis stores them, in the order they were pushed."""
    length = int(client.llen(QUEUE))
    messages: list[bytes] = []
    # kombu LPUSHes, so the oldest message sits at the tail; walk from the tail in chunks to keep
    # each reply small.
    chunk = 10_000
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
        if len(pipe) >= 20:
            pipe.execute()
    pipe.execute()


def used_memory(client: redis.Redis) -> int:
    info = client.info("memory")
    return int(info["used_memory"])


def average_message_bytes(client: redis.Redis, samples: int = MESSAGE_SIZE_SAMPLES) -> float:
    """Mean length of a list element, read with LINDEX at evenly spread positions."""
    length = int(client.llen(QUEUE))
    if length == 0:
        return 0.0
    positions = sorted({(i * length) // samples for i in range(min(samples, length))})
    pipe = client.pipeline(transaction=False)
    for position in positions:
        pipe.lindex(QUEUE, position)
    values: list[bytes] = pipe.execute()
    return sum(len(value) for value in values) / len(values)


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
    # SAMPLES 0 walks every list node; the default (5) samples only head nodes, which
    # list-compress-depth leaves uncompressed, and would overstate a compressed list.
    memory_usage = client.memory_usage(QUEUE, samples=0)
    delta = after - before
    return {
        "used_memory_before": before,
        "used_memory_after": after,
        "used_memory_delta": delta,
        "bytes_per_task": delta / tasks,
        "memory_usage_bytes": int(memory_usage or 0),
        "memory_usage_per_task": int(memory_usage or 0) / tasks,
        "projected_gib": delta / tasks * PROJECTION_TASKS / 2**30,
        "llen": int(client.llen(QUEUE)),
    }


def run_benchmark(
    tasks: int = DEFAULT_TASKS, sample: int = DEFAULT_SAMPLE, redis_binary: str | None = None
) -> dict[str, Any]:
    """Run every header variant against every list setting; return the figures as a dict."""
    if tasks <= 0:
        raise ValueError("tasks must be positive")
    binary = redis_binary or shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(binary, os.X_OK):
        raise FileNotFoundError(f"redis-server not found or not executable: {binary}")
    published = min(max(sample, 1), tasks)
    started = time.perf_counter()

    # Build each variant's messages once on a scratch server, so every list setting is measured on
    # byte-identical input and the ratios compare the settings only.
    messages: dict[str, list[bytes]] = {}
    publish: dict[str, dict[str, float]] = {}
    message_bytes: dict[str, float] = {}
    with redis_server(binary, {}) as scratch:
        server_info = scratch.info("server")
        redis_version = str(server_info["redis_version"])
        for variant in HEADER_VARIANTS:
            scratch.flushall()
            timing = publish_with_apply_async(scratch, published, variant)
            message_bytes[variant] = average_message_bytes(scratch)
            messages[variant] = read_queue_oldest_first(scratch)
            if len(messages[variant]) != published:
                raise RuntimeError(f"expected {published} queued messages, found {len(messages[variant])}")
            publish[variant] = {
                "tasks": timing.tasks,
                "seconds": round(timing.seconds, 3),
                "per_second": round(timing.per_second, 1),
            }
        scratch.flushall()

    results: dict[str, dict[str, dict[str, float]]] = {variant: {} for variant in HEADER_VARIANTS}
    effective_config: dict[str, dict[str, str]] = {}
    for setting, values in LIST_SETTING_VARIANTS.items():
        with redis_server(binary, values) as server:
            config = cast("dict[str, str]", server.config_get("list-*"))
            effective_config[setting] = {key: config[key] for key in LIST_CONFIG_KEYS}
            for variant in HEADER_VARIANTS:
                results[variant][setting] = measure_queue(server, messages[variant], tasks)
                if results[variant][setting]["llen"] != tasks:
                    raise RuntimeError(f"{setting}/{variant}: queue holds the wrong number of tasks")
            server.flushall()

    baseline = results["full_headers"]["defaults"]["bytes_per_task"]
    for variant in HEADER_VARIANTS:
        defaults = results[variant]["defaults"]["bytes_per_task"]
        for figures in results[variant].values():
            figures["ratio_vs_defaults"] = figures["bytes_per_task"] / defaults
            figures["ratio_vs_full_headers_defaults"] = figures["bytes_per_task"] / baseline

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
        "publish": publish,
        "message_bytes": message_bytes,
        "results": results,
        "elapsed_seconds": round(time.perf_counter() - started, 3),
    }


def _setting_label(name: str, config: Mapping[str, str]) -> str:
    return (
        f"{name} (compress-depth {config['list-compress-depth']}, "
        f"listpack-size {config['list-max-listpack-size']})"
    )


def format_report(report: Mapping[str, Any]) -> str:
    lines = [
        f"celery-fleet broker memory per queued task: redis-server {report['redis_version']}, "
        f"{report['tasks']:,} tasks on queue '{report['queue']}', seed {report['seed']}",
    ]
    for variant, timing in report["publish"].items():
        lines.append(
            f"  {variant}: {timing['tasks']:,} tasks through apply_async in {timing['seconds']:.1f} s "
            f"({timing['per_second']:,.0f} tasks/s)"
        )
    if report["replayed_tasks"]:
        lines.append(
            f"  the other {report['replayed_tasks']:,} tasks per queue repeat those stored messages in order"
        )
    lines.append(
        "  average message as stored (LINDEX length, "
        f"{MESSAGE_SIZE_SAMPLES} samples): "
        + ", ".join(f"{variant} {size:,.0f} B" for variant, size in report["message_bytes"].items())
    )
    header = (
        f"{'setting':<52} {'bytes/task':>11} {'MEMORY USAGE/task':>18} {'vs defaults':>12} "
        f"{'vs full/defaults':>17} {'GiB per 1M':>11}"
    )
    for variant in HEADER_VARIANTS:
        lines += ["", f"{HEADER_VARIANT_LABELS[variant]}:", header, "-" * len(header)]
        for setting, figures in report["results"][variant].items():
            label = _setting_label(setting, report["effective_config"][setting])
            lines.append(
                f"{label:<52} {figures['bytes_per_task']:>11,.1f} {figures['memory_usage_per_task']:>18,.1f} "
                f"{figures['ratio_vs_defaults']:>11.3f}x {figures['ratio_vs_full_headers_defaults']:>16.3f}x "
                f"{figures['projected_gib']:>11.3f}"
            )
    lines += [
        "",
        "bytes/task = (used_memory after - used_memory before) / tasks, from INFO memory; "
        "GiB per 1M = bytes/task x 1,000,000 / 2^30",
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
        help="tasks per header variant sent through apply_async; the rest repeat them "
        "(use a value >= --tasks to send every task through apply_async)",
    )
    parser.add_argument("--redis-server", default=None, help="redis-server binary (default: from PATH)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.tasks <= 0 or args.sample <= 0:
        parser.error("--tasks and --sample must be positive")
    report = run_benchmark(tasks=args.tasks, sample=args.sample, redis_binary=args.redis_server)
    print(json.dumps(report, indent=2, sort_keys=True) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
