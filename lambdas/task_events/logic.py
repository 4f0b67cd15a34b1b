"""Task-event ingestion: one subscription batch in, EMF metrics and failure records out.

Knows nothing of Lambda. Per batch: decode the CloudWatch Logs payload, validate each line, drop
lines repeated within the batch, count per (task name, queue, minute) with the runtimes and queue
waits as value arrays, write each failure to the failed-tasks log group, then print the metrics.
Memory is bounded by the batch, never by how many tasks have been seen.

Delivery is at least once. The failure records go out before any metric is printed, so an
invocation that fails on CloudWatch Logs and is retried counts nothing twice; a record may be
written twice, and carries a `key` (task id, event, time) by which readers drop the copy. A batch
delivered twice by Lambda itself is counted twice: the metrics keep no state across batches.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.constants import MAX_METRICS
from aws_lambda_powertools.utilities.parser.models import CloudWatchLogsModel
from celery_fleet.contract import task_events as te
from celery_fleet.contract import task_metrics as tm
from celery_fleet.contract.queue_metrics import QUEUE_DIMENSION
from pydantic import ValidationError

from .models import MAX_ACCEPTED_LINE_CHARS, TaskEventLine

# PutLogEvents limits (CloudWatch Logs API reference).
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD_BYTES = 26
MAX_BATCH_EVENTS = 10_000
MAX_BATCH_SPAN_MS = 24 * 3600 * 1000 - 1
MAX_EVENT_BYTES = 1_048_576 - EVENT_OVERHEAD_BYTES

# EMF: at most 100 values per metric in one document (Powertools' MAX_METRICS is that limit).
MAX_VALUES_PER_METRIC = MAX_METRICS
# EMF timestamps more than 14 days old or 2 hours ahead are dropped by CloudWatch; keep a margin.
_EMF_MAX_PAST_MS = 14 * 24 * 3600 * 1000 - 3600 * 1000
_EMF_MAX_FUTURE_MS = 2 * 3600 * 1000 - 60 * 1000
_MINUTE_MS = 60_000
# Dimension values longer than this are cut (CloudWatch allows 1,024).
_MAX_DIMENSION_CHARS = 255
_MALFORMED_SAMPLES = 5
_SAMPLE_CHARS = 300


class Log(Protocol):
    """What logic needs of a logger (logging.Logger and Powertools' Logger both fit)."""

    def warning(self, msg: object, *args: object, extra: Mapping[str, object] | None = None) -> None: ...


class LogsClient(Protocol):
    """The two CloudWatch Logs calls made (a boto3 `logs` client)."""

    def create_log_stream(self, *, logGroupName: str, logStreamName: str) -> Mapping[str, Any]: ...  # noqa: N803

    def put_log_events(
        self,
        *,
        logGroupName: str,  # noqa: N803 (boto3's argument names)
        logStreamName: str,  # noqa: N803
        logEvents: Sequence[Mapping[str, Any]],  # noqa: N803
    ) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Event:
    """A valid line and the time CloudWatch Logs gave it."""

    line: TaskEventLine
    timestamp_ms: int


@dataclass(slots=True)
class Aggregate:
    """What one (task name, queue, minute) saw in one batch."""

    counts: dict[te.EventType, int] = field(default_factory=lambda: dict.fromkeys(te.EventType, 0))
    runtimes_s: list[float] = field(default_factory=list)
    queue_waits_s: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Batch:
    log_group: str
    log_stream: str
    control: bool
    log_events: Sequence[tuple[int, str]]


@dataclass(slots=True)
class IngestResult:
    """What one invocation did; returned by the handler and logged."""

    events: int = 0
    malformed: int = 0
    duplicates: int = 0
    failure_records: int = 0
    metric_documents: int = 0
    control_message: bool = False

    def as_dict(self) -> dict[str, int | bool]:
        return {
            "events": self.events,
            "malformed": self.malformed,
            "duplicates": self.duplicates,
            "failure_records": self.failure_records,
            "metric_documents": self.metric_documents,
            "control_message": self.control_message,
        }


class FailureLog:
    """The failed-tasks log group: one stream per UTC day, created the first time it is used.

    Throttling and server errors are retried by the client (botocore's retry modes, configured
    where the client is made); whatever still fails is raised to the caller.
    """

    def __init__(self, client: LogsClient, log_group: str, *, log: Log) -> None:
        self.client = client
        self.log_group = log_group
        self.log = log
        self._streams: set[str] = set()

    def write(self, records: Sequence[tuple[int, str]], *, now_ms: int) -> int:
        """Write `records` (timestamp ms, message); returns the number of PutLogEvents calls."""
        if not records:
            return 0
        stream = self._stream(now_ms)
        calls = 0
        for batch in put_log_events_batches(records):
            response = self.client.put_log_events(
                logGroupName=self.log_group, logStreamName=stream, logEvents=batch
            )
            calls += 1
            rejected = response.get("rejectedLogEventsInfo")
            if rejected:
                # Events too old for the group's retention or too far ahead: nothing to retry.
                self.log.warning(
                    "failed-task records rejected by CloudWatch Logs", extra={"rejected": rejected}
                )
        return calls

    def _stream(self, now_ms: int) -> str:
        name = datetime.fromtimestamp(now_ms / 1000, UTC).strftime("%Y/%m/%d") + "/failed-tasks"
        if name not in self._streams:
            try:
                self.client.create_log_stream(logGroupName=self.log_group, logStreamName=name)
            except Exception as exc:
                # Another invocation made it first: that is the stream wanted.
                if _error_code(exc) != "ResourceAlreadyExistsException":
                    raise
            self._streams.add(name)
        return name


def ingest(
    event: Mapping[str, Any], *, failures: FailureLog, namespace: str, log: Log, now_ms: int | None = None
) -> IngestResult:
    """Process one CloudWatch Logs subscription event. Raises only when writing failures fails."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    result = IngestResult()
    batch = decode(event)
    if batch is None:
        result.malformed = 1
        log.warning("subscription payload could not be decoded", extra={"payload": _sample(repr(event))})
        return result
    if batch.control:
        result.control_message = True
        return result
    events, malformed, duplicates = parse_lines(batch.log_events, log=log)
    result.events, result.malformed, result.duplicates = len(events), malformed, duplicates
    records = failure_records(events, log_group=batch.log_group, log_stream=batch.log_stream)
    failures.write(records, now_ms=now_ms)
    result.failure_records = len(records)
    result.metric_documents = publish_metrics(aggregate(events), namespace=namespace, now_ms=now_ms)
    return result


def decode(event: Mapping[str, Any]) -> Batch | None:
    """The subscription payload (base64 of gzip of JSON) as a Batch, or None when it is not one."""
    try:
        data = CloudWatchLogsModel.model_validate(event).awslogs.decoded_data
    except (ValidationError, TypeError, ValueError):
        return None
    control = data.messageType == "CONTROL_MESSAGE"
    log_events = [
        (int(item.timestamp.timestamp() * 1000), item.message)
        for item in data.logEvents
        if isinstance(item.message, str)
    ]
    return Batch(data.logGroup, data.logStream, control, log_events)


def parse_lines(log_events: Iterable[tuple[int, str]], *, log: Log) -> tuple[list[Event], int, int]:
    """Valid events (first of each repeat), the malformed count and the duplicate count."""
    events: list[Event] = []
    seen: set[tuple[str, str, str]] = set()
    malformed = duplicates = 0
    for timestamp_ms, message in log_events:
        problem = None
        line = None
        if len(message) > MAX_ACCEPTED_LINE_CHARS:
            problem = f"line of {len(message)} characters"
        else:
            try:
                line = TaskEventLine.model_validate_json(message)
            except ValidationError as exc:
                problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
        if line is None:
            malformed += 1
            if malformed <= _MALFORMED_SAMPLES:
                log.warning(
                    "malformed task event",
                    extra={"problem": _sample(problem or ""), "line": _sample(message)},
                )
            continue
        key = (line.task_id, line.event.value, line.ts)
        if key in seen:
            # Redelivered within the batch (the same outcome written once, read twice).
            duplicates += 1
            continue
        seen.add(key)
        events.append(Event(line, timestamp_ms))
    if malformed > _MALFORMED_SAMPLES:
        log.warning("more malformed task events", extra={"not_logged": malformed - _MALFORMED_SAMPLES})
    return events, malformed, duplicates


def aggregate(events: Iterable[Event]) -> dict[tuple[str, str, int], Aggregate]:
    """Counts and value arrays per (task name, queue, minute of the event)."""
    aggregates: dict[tuple[str, str, int], Aggregate] = {}
    for event in events:
        line = event.line
        key = (
            _dimension(line.task, tm.UNKNOWN_TASK),
            _dimension(line.queue, tm.UNKNOWN_QUEUE),
            event.timestamp_ms - event.timestamp_ms % _MINUTE_MS,
        )
        bucket = aggregates.get(key)
        if bucket is None:
            bucket = aggregates[key] = Aggregate()
        bucket.counts[line.event] += 1
        if line.runtime_s is not None:
            bucket.runtimes_s.append(line.runtime_s)
        if line.queue_wait_s is not None:
            bucket.queue_waits_s.append(line.queue_wait_s)
    return aggregates


def publish_metrics(
    aggregates: Mapping[tuple[str, str, int], Aggregate], *, namespace: str, now_ms: int
) -> int:
    """Print the EMF documents for `aggregates`; returns how many were printed.

    One document per (task name, queue, minute), published under both `DIMENSION_SETS`, or more
    when Runtime or QueueWait has over 100 values: EMF holds at most 100 per metric in a document.
    Powertools serializes each document; the values are handed to it as whole arrays because its
    `add_metric` formats the metric's value list into a debug message on every call, which makes
    adding n values cost O(n^2).
    """
    documents = 0
    for (task, queue, minute_ms), bucket in sorted(aggregates.items()):
        metrics = EphemeralMetrics(namespace=namespace, service="")
        metrics.add_dimensions(**{QUEUE_DIMENSION: queue})
        metrics.set_timestamp(_emf_timestamp(minute_ms, now_ms))
        dimensions = {tm.TASK_NAME_DIMENSION: task, QUEUE_DIMENSION: queue}
        metric_set = {
            name: _metric(MetricUnit.Count, [float(bucket.counts[event_type])])
            for event_type, name in tm.COUNT_BY_EVENT.items()
        }
        runtimes, queue_waits = bucket.runtimes_s, bucket.queue_waits_s
        for start in range(0, max(len(runtimes), len(queue_waits), 1), MAX_VALUES_PER_METRIC):
            end = start + MAX_VALUES_PER_METRIC
            if runtimes[start:end]:
                metric_set[tm.RUNTIME] = _metric(MetricUnit.Seconds, runtimes[start:end])
            if queue_waits[start:end]:
                metric_set[tm.QUEUE_WAIT] = _metric(MetricUnit.Seconds, queue_waits[start:end])
            document = metrics.serialize_metric_set(metrics=metric_set, dimensions=dimensions, metadata={})
            print(json.dumps(document, separators=(",", ":")))
            documents += 1
            # The counts go out once, with the first values.
            metric_set = {}
    return documents


def _metric(unit: MetricUnit, values: list[float]) -> dict[str, Any]:
    return {"Unit": unit.value, "StorageResolution": 60, "Value": values}


def failure_records(events: Iterable[Event], *, log_group: str, log_stream: str) -> list[tuple[int, str]]:
    """One JSON record per failure outcome, for the failed-tasks log group, in time order."""
    records = []
    for event in events:
        line = event.line
        if line.event not in te.FAILURE_EVENTS:
            continue
        record = {
            "key": f"{line.task_id}:{line.event.value}:{line.ts}",
            "event": line.event.value,
            "task_id": line.task_id,
            "task": line.task,
            "queue": line.queue,
            "worker": line.worker,
            "retries": line.retries,
            "time": line.ts,
            "runtime_s": line.runtime_s,
            "exc_type": line.exc_type,
            "exc_message": line.exc_message,
            "traceback": line.traceback,
            "args": line.args,
            "kwargs": line.kwargs,
            "source": {"log_group": log_group, "log_stream": log_stream},
        }
        records.append((event.timestamp_ms, json.dumps(record, separators=(",", ":"))))
    records.sort(key=lambda item: item[0])
    return records


def put_log_events_batches(records: Sequence[tuple[int, str]]) -> Iterator[list[dict[str, Any]]]:
    """`records` (sorted by time) cut into PutLogEvents batches within every limit of the call."""
    batch: list[dict[str, Any]] = []
    size = 0
    first_ms = 0
    for timestamp_ms, message in records:
        event_size = len(message.encode("utf-8")) + EVENT_OVERHEAD_BYTES
        if event_size > MAX_EVENT_BYTES + EVENT_OVERHEAD_BYTES:
            raise ValueError(f"failure record of {event_size} bytes is over the PutLogEvents event limit")
        if batch and (
            len(batch) == MAX_BATCH_EVENTS
            or size + event_size > MAX_BATCH_BYTES
            or timestamp_ms - first_ms > MAX_BATCH_SPAN_MS
        ):
            yield batch
            batch, size = [], 0
        if not batch:
            first_ms = timestamp_ms
        batch.append({"timestamp": timestamp_ms, "message": message})
        size += event_size
    if batch:
        yield batch


def _emf_timestamp(minute_ms: int, now_ms: int) -> int:
    if now_ms - _EMF_MAX_PAST_MS <= minute_ms <= now_ms + _EMF_MAX_FUTURE_MS:
        return minute_ms
    return now_ms - now_ms % _MINUTE_MS


def _dimension(value: str | None, unknown: str) -> str:
    if value is None or not value.strip():
        return unknown
    return value[:_MAX_DIMENSION_CHARS]


def _error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        error = response.get("Error")
        if isinstance(error, Mapping):
            code = error.get("Code")
            return code if isinstance(code, str) else None
    return None


def _sample(text: str) -> str:
    return te.truncate(text, _SAMPLE_CHARS)
