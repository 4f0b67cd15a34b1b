"""Task-event monitoring at scale: the ingest Lambda's logic and the worker-side emitter, measured.

What it measures, side by side:

* **Lambda throughput**: task events per second per core through `task_events.logic.ingest` (decode,
  check each line's MAC, validate, de-duplicate, failure records, aggregate, EMF), on realistic
  subscription batches of 10, 100, 1,000 and 10,000 signed lines, about 94 % successes, 3 % failures
  with tracebacks and arguments, 2 % retries and a few time limits, lost workers and revocations,
  over 20 task names and 3 queues. CPU time, one process: one core.
* **Where the time goes**: the same batches through each stage of `ingest` on its own, as a share
  of the stages' CPU time per batch size, and in microseconds per event at 1,000 lines.
* **Peak memory** (tracemalloc) after processing `--events` / 10 and `--events` events in such
  batches: the Lambda keeps nothing across batches, so the peak must not grow with the count.
  Everything is warmed up (imports, the client, pydantic's validators) before tracing starts.
* **AWS API calls per million events**: the logic's CloudWatch Logs client is a real boto3 client
  with botocore's Stubber answering each call in process (request parameters validated against
  the service model, nothing sent), wrapped to count the calls (EMF metrics are printed, not API
  calls). moto is not used here: it keeps every object it creates until reset, which would be
  its memory in the figure, not the Lambda's. The users' old tool made one call per event.
* **The MAC's cost per line**: encoding a succeeded line with and without signing it (the worker's
  cost), HMAC-SHA256 alone, and checking one line (the Lambda's).
* **Emission overhead per task** on the worker: `Task.apply` of a real Celery task with and without
  `celery_fleet.events` installed (writing to /dev/null through a file descriptor, as to stdout),
  for a succeeding and a failing task; compared with the tracing Celery does for the task anyway.

The payloads are built once (a small set of distinct batches, cycled); each batch is processed as
Lambda would, from the base64 string on. Run `python bench/ingest.py [--events N]`. Default sizes
finish in about two minutes on 2 idle cores.
"""

from __future__ import annotations

import argparse
import base64
import gc
import gzip
import io
import json
import logging
import os
import random
import sys
import time
import tracemalloc
from collections.abc import Callable, Mapping, Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "lambdas", ROOT / "runtime"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import boto3  # noqa: E402
from billiard.einfo import ExceptionInfo  # noqa: E402
from botocore.stub import Stubber  # noqa: E402
from celery import Celery  # noqa: E402
from celery_fleet import events  # noqa: E402
from celery_fleet.contract import task_events as te  # noqa: E402
from celery_fleet.contract.queue_metrics import SENT_AT_HEADER  # noqa: E402
from task_events.logic import (  # noqa: E402
    Dimensions,
    FailureLog,
    aggregate,
    decode,
    failure_records,
    ingest,
    parse_lines,
    publish_metrics,
)

REGION = "eu-west-1"
ACCOUNT = "123456789012"
FAILED_TASKS_LOG_GROUP = "/celery-fleet/bench/failed-tasks"
NAMESPACE = "CeleryFleet/bench"
TASKS = [f"app.tasks.step_{i:02d}" for i in range(20)]
QUEUES = ["default", "io", "cpu"]
# (event, share of lines)
MIX = [
    ("succeeded", 0.94),
    ("failed", 0.03),
    ("retried", 0.02),
    ("time_limit_exceeded", 0.005),
    ("worker_lost", 0.003),
    ("revoked", 0.002),
]
DISTINCT_BATCHES = 8

TRACEBACK = (
    "Traceback (most recent call last):\n"
    + "".join(
        f'  File "/app/src/service/module_{i}.py", line {40 + i}, in handler_{i}\n'
        f"    result = client.call(endpoint, payload, timeout=timeout)\n"
        for i in range(14)
    )
    + "requests.exceptions.ConnectionError: HTTPSConnectionPool(host='api.example.com', port=443): "
    "Max retries exceeded with url: /v1/items/8812 (Caused by NewConnectionError('Failed to connect'))"
)


KEY = te.key_from_secret("bench-signing-key-" + "k" * 46)
BATCH_SIZES = (10, 100, 1_000, 10_000)


class _Keys:
    """The stage's key, as the Lambda holds it after its cold start (no Secrets Manager here)."""

    keys = (KEY,)

    def reload_if_due(self, log: Any = None) -> bool:
        return False


KEYS: Any = _Keys()


LOG = logging.getLogger("bench.ingest")
LOG.addHandler(logging.NullHandler())
LOG.propagate = False


class _Sink(io.TextIOBase):
    """Stands in for the Lambda's stdout: counts EMF documents and bytes, keeps nothing."""

    def __init__(self) -> None:
        self.documents = 0
        self.bytes = 0

    def write(self, text: str) -> int:
        self.documents += text.count('"_aws"')
        self.bytes += len(text)
        return len(text)


class CountingLogsClient:
    """A boto3 CloudWatch Logs client answered by botocore's Stubber, counting each call."""

    def __init__(self) -> None:
        self.client = boto3.client(
            "logs", region_name=REGION, aws_access_key_id="bench", aws_secret_access_key="bench"
        )
        self.stubber = Stubber(self.client)
        self.stubber.activate()
        self.calls: dict[str, int] = {}

    def create_log_stream(self, **kwargs: Any) -> Any:
        return self._call("create_log_stream", {}, kwargs)

    def put_log_events(self, **kwargs: Any) -> Any:
        return self._call("put_log_events", {"nextSequenceToken": "1"}, kwargs)

    def _call(self, method: str, response: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        self.calls[method] = self.calls.get(method, 0) + 1
        self.stubber.add_response(method, response, kwargs)
        return getattr(self.client, method)(**kwargs)


def _line(rng: random.Random, index: int, batch: int, now: float) -> str:
    event = rng.choices([e for e, _ in MIX], weights=[w for _, w in MIX])[0]
    task = rng.choice(TASKS)
    record: dict[str, Any] = {
        te.MARKER_KEY: te.MARKER_VALUE,
        te.F_VERSION: te.SCHEMA_VERSION,
        te.F_EVENT: event,
        te.F_TASK_ID: f"{batch:04x}{index:08x}-7c1e-4b7a-9d3e-{rng.getrandbits(48):012x}",
        te.F_TASK: task,
        te.F_QUEUE: QUEUES[TASKS.index(task) % len(QUEUES)],
        te.F_WORKER: f"celery@ip-10-0-{rng.randrange(4)}-{rng.randrange(250)}.ec2.internal",
        te.F_RETRIES: 0 if event != "retried" else rng.randrange(5),
        te.F_TIMESTAMP: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{index % 1000:03d}+00:00",
        te.F_RUNTIME: round(rng.lognormvariate(-1.5, 1.2), 6),
        te.F_QUEUE_WAIT: round(rng.expovariate(0.5), 6),
    }
    if event in ("failed", "retried", "time_limit_exceeded", "worker_lost"):
        record[te.F_EXC_TYPE] = "ConnectionError"
        record[te.F_EXC_MESSAGE] = (
            "HTTPSConnectionPool(host='api.example.com', port=443): Max retries exceeded"
        )
    if event in te.FAILURE_EVENTS:
        record[te.F_EXC_FRAME] = "service/module_13.py:handler_13"
        record[te.F_TRACEBACK] = TRACEBACK
        record[te.F_ARGS] = f"({rng.randrange(10**6)}, 'https://example.com/items/{rng.randrange(10**6)}')"
        record[te.F_KWARGS] = (
            "{'options': {'retries': 3, 'request_id': '5b0e0d0e-9f3c-4a57-8f5e-1f0f0b2c7d11'}}"
        )
    return events.encode_line(record, key=KEY).decode().rstrip("\n")


def build_payloads(batch_size: int, seed: int = 7) -> list[dict[str, Any]]:
    """A few distinct subscription events (base64 of gzip of JSON), as CloudWatch Logs sends them."""
    rng = random.Random(seed)
    now = time.time()
    payloads = []
    for batch in range(DISTINCT_BATCHES):
        log_events = [
            {"id": f"{batch}{i:012d}", "timestamp": int(now * 1000) + i, "message": _line(rng, i, batch, now)}
            for i in range(batch_size)
        ]
        document = {
            "messageType": "DATA_MESSAGE",
            "owner": ACCOUNT,
            "logGroup": "/celery-fleet/bench/worker",
            "logStream": f"worker/worker/{batch:032x}",
            "subscriptionFilters": ["TaskEvents"],
            "logEvents": log_events,
        }
        data = base64.b64encode(gzip.compress(json.dumps(document).encode())).decode()
        payloads.append({"awslogs": {"data": data}})
    return payloads


@dataclass
class IngestRun:
    events: int
    cpu_s: float
    calls: dict[str, int]
    documents: int
    failure_records: int
    peak_bytes: int | None


def run_ingest(payloads: Sequence[Mapping[str, Any]], total_events: int, *, trace_memory: bool) -> IngestRun:
    client = CountingLogsClient()
    # remember=0: the bench cycles a few batches, which a real instance would skip as already written.
    failures = FailureLog(client, FAILED_TASKS_LOG_GROUP, log=LOG, remember=0)
    sink = _Sink()
    dimensions = Dimensions(QUEUES)

    def run(payload: Mapping[str, Any]) -> Any:
        return ingest(
            payload, failures=failures, keys=KEYS, dimensions=dimensions, namespace=NAMESPACE, log=LOG
        )

    with redirect_stdout(sink):
        # Warm-up: what a Lambda container loads once (validators, botocore's models).
        for payload in payloads:
            run(payload)
        client.calls.clear()
        sink.documents = 0
        processed = records = 0
        if trace_memory:
            gc.collect()
            tracemalloc.start()
            baseline = tracemalloc.get_traced_memory()[0]
        started = time.process_time()
        index = 0
        while processed < total_events:
            result = run(payloads[index % len(payloads)])
            assert result.forged == result.malformed == 0
            processed += result.events
            records += result.failure_records
            index += 1
        cpu_s = time.process_time() - started
        peak = None
        if trace_memory:
            peak = tracemalloc.get_traced_memory()[1] - baseline
            tracemalloc.stop()
    return IngestRun(processed, cpu_s, dict(client.calls), sink.documents, records, peak)


@dataclass
class EmitterRun:
    tasks: int
    apply_plain_us: float
    apply_events_us: float
    success_us: float
    failure_us: float


def _succeed(item_id: int, url: str) -> int:
    return item_id


def run_emitter(tasks: int, rounds: int = 5) -> EmitterRun:
    """Per-task cost of the emitter: A/B `Task.apply`, and its receivers alone (best of `rounds` each:
    the machine is shared, and the best round is the one least disturbed)."""
    app = Celery("bench_events", set_as_current=False)
    task = app.task(name="bench.succeed")(_succeed)
    args = (123, "https://example.com/items/123")
    devnull = os.open(os.devnull, os.O_WRONLY)

    def per_task_us() -> float:
        started = time.perf_counter()
        for _ in range(tasks):
            task.apply(args)
        return (time.perf_counter() - started) / tasks * 1e6

    plain, with_events = [], []
    try:
        for _ in range(rounds):
            events.uninstall()
            plain.append(per_task_us())
            emitter = events.install(app, key=KEY)
            # install() writes to fd 1, where this report goes: the lines go to /dev/null instead.
            emitter.write = _devnull_writer(devnull)
            with_events.append(per_task_us())
        assert emitter.errors == 0
        timings = [_receivers_us(emitter, task, tasks) for _ in range(rounds)]
        success_us, failure_us = min(t[0] for t in timings), min(t[1] for t in timings)
    finally:
        events.uninstall()
        os.close(devnull)
    return EmitterRun(tasks, min(plain), min(with_events), success_us, failure_us)


def _receivers_us(emitter: events.TaskEventEmitter, task: Any, count: int) -> tuple[float, float]:
    """The emitter's own receivers for one outcome, called as a pool child's tracer calls them."""
    task.push_request(
        id="5b0e0d0e-9f3c-4a57-8f5e-1f0f0b2c7d11",
        delivery_info={"routing_key": "default"},
        hostname="celery@ip-10-0-1-17.ec2.internal",
        retries=0,
        args=[123, "https://example.com/items/123"],
        kwargs={},
        **{SENT_AT_HEADER: time.time()},
    )
    try:
        raise ConnectionError("service unavailable for https://example.com/items/123")
    except ConnectionError as exc:
        error, einfo = exc, ExceptionInfo()
    task_id = task.request.id
    try:
        started = time.perf_counter()
        for _ in range(count):
            emitter.on_task_prerun(sender=task, task_id=task_id)
            emitter.on_task_postrun(sender=task, task_id=task_id, retval=123, state="SUCCESS")
        success = (time.perf_counter() - started) / count * 1e6
        started = time.perf_counter()
        for _ in range(count):
            emitter.on_task_prerun(sender=task, task_id=task_id)
            emitter.on_task_failure(sender=task, task_id=task_id, exception=error, einfo=einfo)
            emitter.on_task_postrun(sender=task, task_id=task_id, retval=error, state="FAILURE")
        failure = (time.perf_counter() - started) / count * 1e6
    finally:
        task.pop_request()
    return success, failure


def _devnull_writer(fd: int) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        os.write(fd, data)

    return write


def _mib(value: int | None) -> str:
    return f"{(value or 0) / 2**20:.2f} MiB"


@dataclass
class Stages:
    """CPU seconds per stage of `ingest` over the same batches, and the events they held."""

    events: int
    seconds: dict[str, float]


def run_stages(payloads: Sequence[Mapping[str, Any]], total_events: int) -> Stages:
    """Each stage of `ingest` on its own, in the order ingest runs them, over `total_events` events."""
    client = CountingLogsClient()
    # remember=0: the bench cycles a few batches, which a real instance would skip as already written.
    failures = FailureLog(client, FAILED_TASKS_LOG_GROUP, log=LOG, remember=0)
    dimensions = Dimensions(QUEUES)
    seconds = dict.fromkeys(
        (
            "decode payload",
            "check MAC",
            "validate + de-duplicate",
            "failure records + write",
            "aggregate",
            "EMF",
        ),
        0.0,
    )
    processed = index = 0
    sink = _Sink()
    clock = time.process_time
    with redirect_stdout(sink):
        while processed < total_events:
            payload = payloads[index % len(payloads)]
            index += 1
            started = clock()
            batch = decode(payload)
            assert batch is not None
            decoded = clock()
            for _, message in batch.log_events:
                te.verify(message, KEYS.keys)
            verified = clock()
            parsed = parse_lines(batch.log_events, keys=KEYS, log=LOG)
            parsed_at = clock()
            records, _ = failure_records(
                parsed.events, log_group=batch.log_group, log_stream=batch.log_stream
            )
            failures.write(records, now_ms=int(time.time() * 1000))
            written = clock()
            aggregates, _ = aggregate(parsed.events, dimensions)
            aggregated = clock()
            publish_metrics(aggregates, namespace=NAMESPACE, now_ms=int(time.time() * 1000))
            published = clock()
            seconds["decode payload"] += decoded - started
            seconds["check MAC"] += verified - decoded
            # parse_lines checks the MAC again: its share is taken out here.
            seconds["validate + de-duplicate"] += (parsed_at - verified) - (verified - decoded)
            seconds["failure records + write"] += written - parsed_at
            seconds["aggregate"] += aggregated - written
            seconds["EMF"] += published - aggregated
            processed += len(parsed.events)
    return Stages(processed, seconds)


@dataclass
class SigningCost:
    unsigned_us: float
    signed_us: float
    sign_us: float
    verify_us: float


def run_signing(count: int = 20_000, rounds: int = 9) -> SigningCost:
    """Per-line cost of the MAC on the worker (encoding a succeeded line with and without signing it)
    and on the Lambda (checking one): best of `rounds`."""
    record = events.build_record(
        {
            te.F_EVENT: "succeeded",
            te.F_TASK_ID: "5b0e0d0e-9f3c-4a57-8f5e-1f0f0b2c7d11",
            te.F_TASK: "app.tasks.step_07",
            te.F_QUEUE: "default",
            te.F_WORKER: "celery@ip-10-0-1-17.ec2.internal",
            te.F_RETRIES: 0,
            te.F_TIMESTAMP: "2026-11-23T20:20:07.311+00:00",
            te.F_RUNTIME: 0.183211,
            te.F_QUEUE_WAIT: 0.462,
        }
    )
    body = events.encode_line(dict(record)).rstrip(b"\n")
    line = events.encode_line(dict(record), key=KEY).decode().rstrip("\n")

    actions: dict[str, Callable[[], object]] = {
        "unsigned": lambda: events.encode_line(dict(record)),
        "signed": lambda: events.encode_line(dict(record), key=KEY),
        "sign": lambda: te.sign(body, KEY),
        "verify": lambda: te.verify(line, KEYS.keys),
    }
    best = dict.fromkeys(actions, float("inf"))
    # Rounds interleave the four, so that a busy moment of a shared machine hits them all alike.
    for _ in range(rounds):
        for name, action in actions.items():
            started = time.perf_counter()
            for _ in range(count):
                action()
            best[name] = min(best[name], (time.perf_counter() - started) / count * 1e6)
    return SigningCost(best["unsigned"], best["signed"], best["sign"], best["verify"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="largest run (memory); throughput runs use /10"
    )
    parser.add_argument("--emitter-tasks", type=int, default=2_000, help="tasks per emitter measurement")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    options = parser.parse_args(argv)
    large, small = options.events, max(BATCH_SIZES[-1], options.events // 10)

    by_size = {}
    for size in BATCH_SIZES:
        payloads = build_payloads(size)
        by_size[size] = (run_ingest(payloads, small, trace_memory=False), run_stages(payloads, small))
    payloads = build_payloads(1_000)
    memory_small = run_ingest(payloads, small, trace_memory=True)
    memory_large = run_ingest(payloads, large, trace_memory=True)
    signing = run_signing()
    emitter = run_emitter(options.emitter_tasks)

    calls = sum(memory_large.calls.values())
    large_events = memory_large.events
    per_million = calls / memory_large.events * 1_000_000
    call_names = ", ".join(f"{name} {count:,}" for name, count in sorted(memory_large.calls.items()))
    rows = [("ingest, MAC check on: events / s / core", "", "")]
    for size, (run, _) in by_size.items():
        rows.append(
            (
                f"  {size:,} lines per batch",
                f"{run.events / run.cpu_s:,.0f}",
                f"{run.documents / run.events * 1000:.1f} EMF documents per 1,000 events",
            )
        )
    rows.append(("where the time goes (share of the stages' CPU time)", "", ""))
    stage_names = list(next(iter(by_size.values()))[1].seconds)
    for name in stage_names:
        shares = []
        for size, (_, stages) in by_size.items():
            total = sum(stages.seconds.values())
            shares.append(f"{size:,}: {stages.seconds[name] / total * 100:4.1f} %")
        per_event = by_size[1_000][1].seconds[name] / by_size[1_000][1].events * 1e6
        rows.append((f"  {name}", f"{per_event:.2f} us", "per event at 1,000; " + ", ".join(shares)))
    rows += [
        (f"peak memory, {memory_small.events:,} events", _mib(memory_small.peak_bytes), ""),
        (f"peak memory, {memory_large.events:,} events", _mib(memory_large.peak_bytes), ""),
        ("failure records written", f"{memory_large.failure_records:,}", f"of {large_events:,} events"),
        ("AWS API calls", f"{calls:,}", call_names),
        ("AWS API calls per 1,000,000 events", f"{per_million:,.0f}", "old tool: 1,000,000 (one per event)"),
        ("worker: encode a succeeded line, unsigned", f"{signing.unsigned_us:.2f} us", ""),
        ("worker: encode a succeeded line, signed", f"{signing.signed_us:.2f} us",
         f"+{signing.signed_us - signing.unsigned_us:.2f} us per line for the MAC"),
        ("worker: HMAC-SHA256 of one line alone", f"{signing.sign_us:.2f} us", ""),
        ("lambda: check one line's MAC", f"{signing.verify_us:.2f} us", ""),
        ("worker: Task.apply without events (Celery's tracing)", f"{emitter.apply_plain_us:.1f} us", ""),
        ("worker: Task.apply with events", f"{emitter.apply_events_us:.1f} us",
         f"+{emitter.apply_events_us - emitter.apply_plain_us:.1f} us per task (signal dispatch included)"),
        ("worker: emitter receivers, succeeded task", f"{emitter.success_us:.1f} us", "prerun+postrun"),
        ("worker: emitter receivers, failed task", f"{emitter.failure_us:.1f} us",
         "prerun + failure + postrun + write (traceback, args)"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>{value_width}}  {note}".rstrip())
    if options.json:
        print(
            json.dumps(
                {
                    "events_per_s_per_core": {str(k): r.events / r.cpu_s for k, (r, _) in by_size.items()},
                    "peak_bytes": {
                        str(memory_small.events): memory_small.peak_bytes,
                        str(memory_large.events): memory_large.peak_bytes,
                    },
                    "api_calls_per_million_events": per_million,
                    "mac_us_per_line": {"sign": signing.sign_us, "verify": signing.verify_us},
                    "emitter_us_per_task": {"succeeded": emitter.success_us, "failed": emitter.failure_us},
                    "apply_us": {"plain": emitter.apply_plain_us, "with_events": emitter.apply_events_us},
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
