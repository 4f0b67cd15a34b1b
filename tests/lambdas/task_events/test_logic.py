"""The ingest logic on its own: aggregation, de-duplication, PutLogEvents batching, EMF splitting."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from celery_fleet.contract import task_metrics as tm
from celery_fleet.contract.task_events import EventType
from task_events.logic import (
    EVENT_OVERHEAD_BYTES,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    FailureLog,
    aggregate,
    parse_lines,
    publish_metrics,
    put_log_events_batches,
)

from tests.lambdas.task_events.support import (
    BASE_MS,
    FAILED_TASKS_LOG_GROUP,
    NAMESPACE,
    emf_documents,
    event_line,
    failure_records,
    task_metrics,
)

LOG = logging.getLogger("test.task_events")
DAY_MS = 24 * 3600 * 1000


def _events(lines: list[str], stamps: list[int] | None = None) -> list[Any]:
    stamps = stamps or [BASE_MS + i for i in range(len(lines))]
    events, malformed, duplicates = parse_lines(zip(stamps, lines, strict=True), log=LOG)
    assert (malformed, duplicates) == (0, 0)
    return events


def test_counts_are_kept_apart_per_task_queue_and_minute() -> None:
    lines = [
        event_line(task_id="a", task="t1", queue="q1"),
        event_line(task_id="b", task="t1", queue="q2"),
        event_line(task_id="c", task="t2", queue="q1"),
        event_line("failed", task_id="d", task="t1", queue="q1"),
        event_line(task_id="e", task="t1", queue="q1"),
    ]
    stamps = [BASE_MS, BASE_MS, BASE_MS, BASE_MS + 1, BASE_MS + 60_000]

    groups = aggregate(_events(lines, stamps))

    assert {
        key: (bucket.counts[EventType.SUCCEEDED], bucket.counts[EventType.FAILED])
        for key, bucket in groups.items()
    } == {
        ("t1", "q1", BASE_MS): (1, 1),
        ("t1", "q2", BASE_MS): (1, 0),
        ("t2", "q1", BASE_MS): (1, 0),
        ("t1", "q1", BASE_MS + 60_000): (1, 0),
    }


def test_missing_queue_and_task_name_get_the_unknown_dimension_value() -> None:
    groups = aggregate(_events([event_line("rejected", task_id="", task="", queue=None)]))

    assert list(groups) == [(tm.UNKNOWN_TASK, tm.UNKNOWN_QUEUE, BASE_MS)]


def test_a_line_delivered_twice_in_a_batch_is_counted_once() -> None:
    line = event_line("failed", task_id="x")
    other_attempt = event_line("failed", task_id="x", ts="2026-01-01T00:00:05.000+00:00")

    events, malformed, duplicates = parse_lines(
        [(BASE_MS, line), (BASE_MS, line), (BASE_MS, other_attempt)], log=LOG
    )

    assert (len(events), malformed, duplicates) == (2, 0, 1)


def test_each_metric_holds_at_most_100_values_per_document(capsys: pytest.CaptureFixture[str]) -> None:
    lines = [event_line(task_id=f"t{i}", runtime_s=i / 1000) for i in range(250)]

    publish_metrics(aggregate(_events(lines)), namespace=NAMESPACE, now_ms=BASE_MS)

    documents = emf_documents(capsys.readouterr().out)
    totals = task_metrics(documents)[("app.work", "default")]
    assert len(documents) == 3
    assert totals.counts[tm.SUCCEEDED] == 250
    assert sorted(totals.values[tm.RUNTIME]) == [i / 1000 for i in range(250)]
    assert len(totals.values[tm.QUEUE_WAIT]) == 250


def test_documents_are_stamped_with_the_events_minute(capsys: pytest.CaptureFixture[str]) -> None:
    earlier = BASE_MS - 5 * 60_000
    publish_metrics(
        aggregate(_events([event_line(task_id="a")], [earlier + 1234])), namespace=NAMESPACE, now_ms=BASE_MS
    )

    (document,) = emf_documents(capsys.readouterr().out)
    assert document["_aws"]["Timestamp"] == earlier


def test_an_event_older_than_cloudwatch_accepts_is_stamped_now(capsys: pytest.CaptureFixture[str]) -> None:
    too_old = BASE_MS - 30 * DAY_MS
    publish_metrics(
        aggregate(_events([event_line(task_id="a")], [too_old])), namespace=NAMESPACE, now_ms=BASE_MS + 5
    )

    (document,) = emf_documents(capsys.readouterr().out)
    assert document["_aws"]["Timestamp"] == BASE_MS


def test_batches_stay_under_the_put_log_events_byte_limit() -> None:
    message = "x" * 100_000
    records = [(BASE_MS + i, message) for i in range(25)]

    batches = list(put_log_events_batches(records))

    assert all(
        sum(len(e["message"]) + EVENT_OVERHEAD_BYTES for e in batch) <= MAX_BATCH_BYTES for batch in batches
    )
    assert [e["timestamp"] for batch in batches for e in batch] == [stamp for stamp, _ in records]
    assert [len(batch) for batch in batches] == [10, 10, 5]


def test_batches_hold_at_most_10000_events() -> None:
    records = [(BASE_MS + i, "{}") for i in range(MAX_BATCH_EVENTS * 2 + 1)]

    assert [len(batch) for batch in put_log_events_batches(records)] == [
        MAX_BATCH_EVENTS,
        MAX_BATCH_EVENTS,
        1,
    ]


def test_batches_never_span_more_than_24_hours() -> None:
    records = [(BASE_MS, "a"), (BASE_MS + DAY_MS - 1, "b"), (BASE_MS + DAY_MS, "c")]

    assert [[e["message"] for e in batch] for batch in put_log_events_batches(records)] == [["a", "b"], ["c"]]


def test_failure_log_uses_a_stream_another_invocation_created(logs: Any) -> None:
    first = FailureLog(logs, FAILED_TASKS_LOG_GROUP, log=LOG)
    second = FailureLog(logs, FAILED_TASKS_LOG_GROUP, log=LOG)

    first.write([(BASE_MS, json.dumps({"task_id": "a"}))], now_ms=BASE_MS)
    second.write([(BASE_MS + 1, json.dumps({"task_id": "b"}))], now_ms=BASE_MS)

    streams = logs.describe_log_streams(logGroupName=FAILED_TASKS_LOG_GROUP)["logStreams"]
    assert [s["logStreamName"].endswith("/failed-tasks") for s in streams] == [True]
    assert sorted(r["task_id"] for r in failure_records(logs)) == ["a", "b"]


def test_failure_log_creates_its_stream_once_per_day(logs: Any) -> None:
    failures = FailureLog(logs, FAILED_TASKS_LOG_GROUP, log=LOG)

    failures.write([(BASE_MS, "{}")], now_ms=BASE_MS)
    failures.write([(BASE_MS, "{}")], now_ms=BASE_MS + 1000)
    failures.write([(BASE_MS, "{}")], now_ms=BASE_MS + DAY_MS)

    streams = logs.describe_log_streams(logGroupName=FAILED_TASKS_LOG_GROUP)["logStreams"]
    assert len(streams) == 2
