"""Task-event ingestion: one subscription batch in, EMF metrics and failure records out.

Knows nothing of Lambda. Per batch: decode the CloudWatch Logs payload; check each line's MAC
(`verify`: a line without a valid one is forged, whatever it says) and validate it against the
contract (`models.LINE`: a signed line out of bounds is malformed); drop lines repeated within the
batch; write each failure to the failed-tasks log group; then print the metrics, counted per
(task name, queue, minute) with the runtimes and queue waits as value arrays. Memory is bounded by
the batch and a few fixed-size tables, never by how many tasks have been seen.

Delivery is at least once, and nothing is counted twice by a retry this code causes. It raises
only when CloudWatch Logs refuses a write (after the client's retries); it prints no metric before
every failure record is written, so the retried batch prints them once. A record written before the
error may be written again by the retry; each carries a `key` (task id, event, time) by which
readers drop the copy, and a warm instance remembers which PutLogEvents batches it already wrote
and skips them. A batch Lambda itself delivers twice is counted twice: the metrics keep no state
across batches.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.constants import MAX_METRICS
from celery_fleet.contract import task_events as te
from celery_fleet.contract import task_metrics as tm
from celery_fleet.contract.queue_metrics import QUEUE_DIMENSION
from pydantic import ValidationError
from pydantic_core import from_json

from .models import validate_lines

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
# A line's own time (`ts`) this far from when CloudWatch Logs received it is not a real outcome.
MAX_CLOCK_SKEW_MS = 24 * 3600 * 1000
_SAMPLES = 5
_SAMPLE_CHARS = 300
# Lines longer than the worker ever writes are refused before any hashing or parsing.
_MAX_LINE_CHARS = te.MAX_LINE_BYTES
# Secrets Manager is asked again for the keys at most this often, when lines fail every known key.
KEY_RELOAD_INTERVAL_S = 300.0
# PutLogEvents batches a warm instance remembers having written (digests, 32 bytes each).
_WRITTEN_MEMORY = 4096
# Minutes of task-name admissions kept (events of older minutes are rare and start afresh).
_NAME_MINUTES_KEPT = 16


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


class SecretsClient(Protocol):
    """The one Secrets Manager call made (a boto3 `secretsmanager` client)."""

    def get_secret_value(self, *, SecretId: str, VersionStage: str) -> Mapping[str, Any]: ...  # noqa: N803


class SigningKeys:
    """The stage's signing keys: the secret's current value and, while a rotation is under way, its
    previous one (Secrets Manager's AWSCURRENT and AWSPREVIOUS stages).

    Loaded at construction (the cold start); asked for again, at most every
    `KEY_RELOAD_INTERVAL_S`, when a batch holds lines no known key verifies, so a new key is picked
    up without a redeploy.
    """

    def __init__(
        self, client: SecretsClient, secret_id: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.client = client
        self.secret_id = secret_id
        self.clock = clock
        self.keys: tuple[bytes, ...] = ()
        self.loaded_at = 0.0
        self.load()

    def load(self) -> None:
        current = self._value("AWSCURRENT")
        if current is None:
            raise RuntimeError(f"the task-event key secret {self.secret_id} has no current value")
        previous = self._value("AWSPREVIOUS")
        self.keys = (current,) if previous is None or previous == current else (current, previous)
        self.loaded_at = self.clock()

    def reload_if_due(self, log: Log | None = None) -> bool:
        """Load the keys again if the last load is old enough; True when the keys changed.

        Never raises: a Secrets Manager error keeps the keys held (the next try is an interval
        later), so lines it could not verify count as forged rather than failing the batch.
        """
        if self.clock() - self.loaded_at < KEY_RELOAD_INTERVAL_S:
            return False
        before = self.keys
        try:
            self.load()
        except Exception as exc:
            self.loaded_at = self.clock()
            if log is not None:
                log.warning("task-event keys could not be reloaded", extra={"error": _sample(repr(exc))})
            return False
        return self.keys != before

    def _value(self, stage: str) -> bytes | None:
        try:
            response = self.client.get_secret_value(SecretId=self.secret_id, VersionStage=stage)
        except Exception as exc:
            if _error_code(exc) == "ResourceNotFoundException" and stage != "AWSCURRENT":
                return None
            raise
        value = response.get("SecretString")
        return te.key_from_secret(value) if isinstance(value, str) and value.strip() else None


class Dimensions:
    """Metric dimension values, bounded: configured queues only, and at most
    `MAX_TASK_NAMES_PER_MINUTE` task names per minute in this instance."""

    def __init__(self, queues: Iterable[str], *, max_task_names: int = tm.MAX_TASK_NAMES_PER_MINUTE) -> None:
        self.queues = frozenset(queues)
        self.max_task_names = max_task_names
        self._names: OrderedDict[int, set[str]] = OrderedDict()

    def queue(self, value: str | None) -> str:
        if value is None or not value:
            return tm.UNKNOWN_QUEUE
        return _ascii(value) if value in self.queues else tm.OTHER_QUEUE

    def task(self, line: Mapping[str, Any], minute_ms: int) -> tuple[str, bool]:
        """The TaskName value for `line`, and whether the cap folded it."""
        name = line[te.F_TASK]
        if not name or line[te.F_EVENT] in te.NAME_FROM_MESSAGE_EVENTS:
            return tm.UNKNOWN_TASK, False
        name = _ascii(name)
        admitted = self._names.get(minute_ms)
        if admitted is None:
            admitted = self._names[minute_ms] = set()
            while len(self._names) > _NAME_MINUTES_KEPT:
                self._names.popitem(last=False)
        if name in admitted:
            return name, False
        if len(admitted) >= self.max_task_names:
            return tm.OTHER_TASK, True
        admitted.add(name)
        return name, False


@dataclass(frozen=True, slots=True)
class Event:
    """A valid line (a dict keyed by the contract's fields) and the time CloudWatch Logs gave it."""

    line: dict[str, Any]
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
class Parsed:
    """The lines of one batch, sorted."""

    events: list[Event]
    malformed: int = 0
    forged: int = 0
    duplicates: int = 0


@dataclass(slots=True)
class IngestResult:
    """What one invocation did; returned by the handler and logged."""

    events: int = 0
    malformed: int = 0
    forged: int = 0
    duplicates: int = 0
    failure_records: int = 0
    failure_records_dropped: int = 0
    folded_task_names: int = 0
    metric_documents: int = 0
    control_message: bool = False

    def as_dict(self) -> dict[str, int | bool]:
        return {
            "events": self.events,
            "malformed": self.malformed,
            "forged": self.forged,
            "duplicates": self.duplicates,
            "failure_records": self.failure_records,
            "failure_records_dropped": self.failure_records_dropped,
            "folded_task_names": self.folded_task_names,
            "metric_documents": self.metric_documents,
            "control_message": self.control_message,
        }

    def pipeline_counts(self) -> dict[str, int]:
        """The dimensionless pipeline metrics of `task_metrics.PIPELINE_COUNTS`, by name."""
        return {
            tm.MALFORMED_EVENTS: self.malformed,
            tm.FORGED_EVENTS: self.forged,
            tm.FAILURE_RECORDS_DROPPED: self.failure_records_dropped,
            tm.FOLDED_TASK_NAMES: self.folded_task_names,
        }


class FailureLog:
    """The failed-tasks log group: one stream per UTC day, created the first time it is used.

    Throttling and server errors are retried by the client (botocore's retry modes, configured
    where the client is made); whatever still fails is raised to the caller. Records CloudWatch Logs
    takes but will not keep (too old, too new) are counted as dropped, never retried.
    """

    def __init__(
        self, client: LogsClient, log_group: str, *, log: Log, remember: int = _WRITTEN_MEMORY
    ) -> None:
        self.client = client
        self.log_group = log_group
        self.log = log
        self.remember = remember
        self.calls = 0
        self._streams: set[str] = set()
        self._written: OrderedDict[bytes, None] = OrderedDict()

    def write(self, records: Sequence[tuple[int, str]], *, now_ms: int) -> int:
        """Write `records` (timestamp ms, message, in time order); returns how many were dropped."""
        if not records:
            return 0
        batches, dropped = put_log_events_batches(records)
        stream = self._stream(now_ms)
        for batch in batches:
            digest = _digest(stream, batch)
            if digest in self._written:
                # Written by an earlier attempt at this batch that failed later on.
                continue
            response = self.client.put_log_events(
                logGroupName=self.log_group, logStreamName=stream, logEvents=batch
            )
            self.calls += 1
            self._remember(digest)
            rejected = response.get("rejectedLogEventsInfo")
            if rejected:
                # Events too old for the group's retention or too far ahead: nothing to retry.
                dropped += _rejected_count(rejected, len(batch))
                self.log.warning(
                    "failed-task records rejected by CloudWatch Logs", extra={"rejected": rejected}
                )
        return dropped

    def _remember(self, digest: bytes) -> None:
        self._written[digest] = None
        while len(self._written) > self.remember:
            self._written.popitem(last=False)

    def _stream(self, now_ms: int) -> str:
        name = time.strftime("%Y/%m/%d", time.gmtime(now_ms / 1000)) + "/failed-tasks"
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
    event: Mapping[str, Any],
    *,
    failures: FailureLog,
    keys: SigningKeys,
    dimensions: Dimensions,
    namespace: str,
    log: Log,
    now_ms: int | None = None,
) -> IngestResult:
    """Process one CloudWatch Logs subscription event. Raises only when CloudWatch Logs refuses a write."""
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
    parsed = parse_lines(batch.log_events, keys=keys, log=log)
    result.events, result.malformed = len(parsed.events), parsed.malformed
    result.forged, result.duplicates = parsed.forged, parsed.duplicates
    records, unwritable = failure_records(
        parsed.events, log_group=batch.log_group, log_stream=batch.log_stream
    )
    result.failure_records_dropped = unwritable + failures.write(records, now_ms=now_ms)
    result.failure_records = len(records)
    aggregates, result.folded_task_names = aggregate(parsed.events, dimensions)
    result.metric_documents = publish_metrics(aggregates, namespace=namespace, now_ms=now_ms)
    return result


def decode(event: Mapping[str, Any]) -> Batch | None:
    """The subscription payload (base64 of gzip of JSON) as a Batch, or None when it is not one.

    Log events that are not {timestamp: int, message: str} are left out (the payload is CloudWatch
    Logs' own, so there are none in practice).
    """
    try:
        raw = gzip.decompress(base64.b64decode(event["awslogs"]["data"], validate=True))
    except (KeyError, TypeError, ValueError, OSError, EOFError, zlib.error, binascii.Error):
        return None
    try:
        # pydantic's parser is several times faster than the standard library's...
        payload = from_json(raw, cache_strings="keys")
    except ValueError:
        # ...and stricter: a lone surrogate escape in one message (task output) must not cost the
        # batch, so the standard library, which accepts it, has the last word.
        try:
            payload = json.loads(raw)
        except ValueError:
            return None
    if not isinstance(payload, dict):
        return None
    message_type, log_group = payload.get("messageType"), payload.get("logGroup")
    log_stream, items = payload.get("logStream"), payload.get("logEvents")
    if not (isinstance(message_type, str) and isinstance(log_group, str) and isinstance(log_stream, str)):
        return None
    if not isinstance(items, list):
        return None
    log_events = [
        (item["timestamp"], item["message"])
        for item in items
        if isinstance(item, dict)
        and type(item.get("timestamp")) is int
        and isinstance(item.get("message"), str)
    ]
    return Batch(log_group, log_stream, message_type == "CONTROL_MESSAGE", log_events)


def parse_lines(log_events: Iterable[tuple[int, str]], *, keys: SigningKeys, log: Log) -> Parsed:
    """Valid events (first of each repeat), with the malformed, forged and duplicate counts."""
    verified, unverified = _verify(log_events, keys.keys)
    if unverified and keys.reload_if_due(log):
        # A rotated key this instance had not loaded yet.
        more, unverified = _verify(unverified, keys.keys)
        verified += more
    parsed = Parsed([], forged=len(unverified))
    seen: set[tuple[str, str, str]] = set()
    seconds: dict[str, float] = {}
    lines = validate_lines([body for _, body in verified])
    for (timestamp_ms, body), line in zip(verified, lines, strict=True):
        problem = (
            _problem(line)
            if isinstance(line, ValidationError)
            else _time_problem(line, timestamp_ms, seconds)
        )
        if problem is not None:
            parsed.malformed += 1
            if parsed.malformed <= _SAMPLES:
                log.warning(
                    "malformed task event", extra={"problem": _sample(problem), "line": _sample(body)}
                )
            continue
        assert not isinstance(line, ValidationError)
        key = (line[te.F_TASK_ID], line[te.F_EVENT], line[te.F_TIMESTAMP])
        if key in seen:
            # Redelivered within the batch (the same outcome written once, read twice).
            parsed.duplicates += 1
            continue
        seen.add(key)
        parsed.events.append(Event(line, timestamp_ms))
    for _, message in unverified[:_SAMPLES]:
        log.warning("forged task event: no valid MAC", extra={"line": _sample(message)})
    if parsed.forged > _SAMPLES:
        log.warning("more forged task events", extra={"not_logged": parsed.forged - _SAMPLES})
    if parsed.malformed > _SAMPLES:
        log.warning("more malformed task events", extra={"not_logged": parsed.malformed - _SAMPLES})
    return parsed


def _verify(
    log_events: Iterable[tuple[int, str]], keys: tuple[bytes, ...]
) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(timestamp, unsigned body) of the lines a key verifies, and (timestamp, line) of the others."""
    verified: list[tuple[int, str]] = []
    unverified: list[tuple[int, str]] = []
    for timestamp_ms, message in log_events:
        body = te.verify(message, keys) if len(message) <= _MAX_LINE_CHARS else None
        if body is None:
            unverified.append((timestamp_ms, message))
        else:
            verified.append((timestamp_ms, body))
    return verified, unverified


def _problem(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:3])


def _time_problem(line: Mapping[str, Any], timestamp_ms: int, seconds: dict[str, float]) -> str | None:
    ts = line[te.F_TIMESTAMP]
    # Lines of one batch share a few seconds: each is parsed once (the pattern fixed the format).
    second = ts[:19]
    at_s = seconds.get(second)
    if at_s is None:
        try:
            at_s = seconds[second] = datetime.fromisoformat(second + "+00:00").timestamp()
        except ValueError:
            return f"{te.F_TIMESTAMP}: not a time"
    if abs(at_s * 1000 - timestamp_ms) > MAX_CLOCK_SKEW_MS:
        return f"{te.F_TIMESTAMP}: more than a day from when the line was logged"
    return None


def aggregate(
    events: Iterable[Event], dimensions: Dimensions
) -> tuple[dict[tuple[str, str, int], Aggregate], int]:
    """Counts and value arrays per (task name, queue, minute of the event), and how many events had
    their task name folded by the cap."""
    aggregates: dict[tuple[str, str, int], Aggregate] = {}
    folded = 0
    for event in events:
        line = event.line
        minute_ms = event.timestamp_ms - event.timestamp_ms % _MINUTE_MS
        task, was_folded = dimensions.task(line, minute_ms)
        folded += was_folded
        key = (task, dimensions.queue(line[te.F_QUEUE]), minute_ms)
        bucket = aggregates.get(key)
        if bucket is None:
            bucket = aggregates[key] = Aggregate()
        bucket.counts[line[te.F_EVENT]] += 1
        runtime_s, queue_wait_s = line[te.F_RUNTIME], line[te.F_QUEUE_WAIT]
        if runtime_s is not None:
            bucket.runtimes_s.append(runtime_s)
        if queue_wait_s is not None:
            bucket.queue_waits_s.append(queue_wait_s)
    return aggregates, folded


def publish_metrics(
    aggregates: Mapping[tuple[str, str, int], Aggregate], *, namespace: str, now_ms: int
) -> int:
    """Print the EMF documents for `aggregates`; returns how many were printed.

    One document per (task name, queue, minute), published under both `DIMENSION_SETS`, or more
    when Runtime or QueueWait has over 100 values: EMF holds at most 100 per metric in a document.
    Powertools serializes each document; the values are handed to it as whole arrays because its
    `add_metric` formats the metric's value list into a debug message on every call, which makes
    adding n values cost O(n^2). Every document is strict JSON (`allow_nan=False`): the values are
    validated finite, and one that somehow is not fails loudly rather than voiding the document.
    """
    documents = 0
    # One serializer per queue (it holds the extra (Queue) dimension set), made once per batch.
    serializers: dict[str, EphemeralMetrics] = {}
    for (task, queue, minute_ms), bucket in sorted(aggregates.items()):
        metrics = serializers.get(queue)
        if metrics is None:
            metrics = serializers[queue] = EphemeralMetrics(namespace=namespace, service="")
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
            print(json.dumps(document, separators=(",", ":"), allow_nan=False))
            documents += 1
            # The counts go out once, with the first values.
            metric_set = {}
    return documents


def _metric(unit: MetricUnit, values: list[float]) -> dict[str, Any]:
    return {"Unit": unit.value, "StorageResolution": 60, "Value": values}


# Contract fields a failure record repeats (all but the line's envelope); null when a line lacks one.
_RECORD_FIELDS = tuple(spec.key for spec in te.FIELDS if spec.constant is None)


def failure_record(line: Mapping[str, Any], *, log_group: str, log_stream: str) -> dict[str, Any]:
    """The failed-tasks log group's record of one failure line: every contract field, plus `key`
    (one per outcome: readers drop copies by it), `fingerprint` and `source`."""
    record: dict[str, Any] = {
        "key": f"{line[te.F_TASK_ID]}:{line[te.F_EVENT]}:{line[te.F_TIMESTAMP]}",
        "fingerprint": te.fingerprint(line[te.F_TASK], line.get(te.F_EXC_TYPE), line.get(te.F_EXC_FRAME)),
    }
    for key in _RECORD_FIELDS:
        value = line.get(key)
        record[key] = value.value if isinstance(value, te.EventType) else value
    record["source"] = {"log_group": log_group, "log_stream": log_stream}
    return record


def failure_records(
    events: Iterable[Event], *, log_group: str, log_stream: str
) -> tuple[list[tuple[int, str]], int]:
    """One JSON record per failure outcome, in time order, and how many could not be encoded."""
    records = []
    unwritable = 0
    for event in events:
        line = event.line
        if line[te.F_EVENT] not in te.FAILURE_EVENTS:
            continue
        try:
            message = json.dumps(
                failure_record(line, log_group=log_group, log_stream=log_stream),
                separators=(",", ":"),
                allow_nan=False,
            )
        except (TypeError, ValueError):
            unwritable += 1
            continue
        records.append((event.timestamp_ms, message))
    records.sort(key=lambda item: item[0])
    return records, unwritable


def put_log_events_batches(records: Sequence[tuple[int, str]]) -> tuple[list[list[dict[str, Any]]], int]:
    """`records` (sorted by time) cut into PutLogEvents batches within every limit of the call, and
    how many records were left out because no call can take them (over the event size limit)."""
    batches: list[list[dict[str, Any]]] = []
    batch: list[dict[str, Any]] = []
    size = 0
    first_ms = 0
    dropped = 0
    for timestamp_ms, message in records:
        event_size = len(message.encode("utf-8")) + EVENT_OVERHEAD_BYTES
        if event_size > MAX_EVENT_BYTES + EVENT_OVERHEAD_BYTES:
            dropped += 1
            continue
        if batch and (
            len(batch) == MAX_BATCH_EVENTS
            or size + event_size > MAX_BATCH_BYTES
            or timestamp_ms - first_ms > MAX_BATCH_SPAN_MS
        ):
            batches.append(batch)
            batch, size = [], 0
        if not batch:
            first_ms = timestamp_ms
        batch.append({"timestamp": timestamp_ms, "message": message})
        size += event_size
    if batch:
        batches.append(batch)
    return batches, dropped


def _rejected_count(rejected: Mapping[str, Any], size: int) -> int:
    # Indexes into the batch: everything up to the last too-old or expired one, from the first too-new.
    ends = (rejected.get("tooOldLogEventEndIndex"), rejected.get("expiredLogEventEndIndex"))
    old_end = max((i for i in ends if isinstance(i, int)), default=-1)
    too_new = rejected.get("tooNewLogEventStartIndex")
    dropped = old_end + 1
    if isinstance(too_new, int):
        dropped += max(0, size - max(too_new, old_end + 1))
    return min(dropped, size)


def _digest(stream: str, batch: Sequence[Mapping[str, Any]]) -> bytes:
    digest = hashlib.sha256(stream.encode())
    for item in batch:
        digest.update(b"\x00%d\x00" % item["timestamp"])
        digest.update(item["message"].encode("utf-8"))
    return digest.digest()


def _emf_timestamp(minute_ms: int, now_ms: int) -> int:
    if now_ms - _EMF_MAX_PAST_MS <= minute_ms <= now_ms + _EMF_MAX_FUTURE_MS:
        return minute_ms
    return now_ms - now_ms % _MINUTE_MS


def _ascii(value: str) -> str:
    """`value` as a dimension value: printable ASCII, at most MAX_DIMENSION_CHARS, never blank."""
    if not (value.isascii() and value.isprintable()):
        value = "".join(ch if " " <= ch <= "~" else "?" for ch in value)
    value = value[: tm.MAX_DIMENSION_CHARS].strip()
    return value or tm.UNKNOWN_TASK


def _error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        error = response.get("Error")
        if isinstance(error, Mapping):
            code = error.get("Code")
            return code if isinstance(code, str) else None
    return None


def _sample(text: str) -> str:
    # repr: a sample of hostile text stays one printable line in the Lambda's own log.
    return te.truncate(ascii(text) if not text.isascii() or not text.isprintable() else text, _SAMPLE_CHARS)
