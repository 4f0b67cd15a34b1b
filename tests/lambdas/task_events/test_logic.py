"""The ingest logic on its own: aggregation, de-duplication, PutLogEvents batching, EMF splitting."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from celery_fleet.contract import task_events as te
from celery_fleet.contract import task_metrics as tm
from celery_fleet.contract.task_events import EventType
from task_events.logic import (
    EVENT_OVERHEAD_BYTES,
    KEY_RELOAD_INTERVAL_S,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    Dimensions,
    FailureLog,
    SigningKeys,
    aggregate,
    parse_lines,
    publish_metrics,
    put_log_events_batches,
)

from tests.lambdas.task_events.support import (
    BASE_MS,
    FAILED_TASKS_LOG_GROUP,
    KEY,
    NAMESPACE,
    PREVIOUS_KEY,
    QUEUES,
    REGION,
    SECRET_VALUE,
    emf_documents,
    event_line,
    failure_records,
    mocked_aws,
    task_metrics,
)

LOG = logging.getLogger("test.task_events")
DAY_MS = 24 * 3600 * 1000


class _Keys:
    """SigningKeys without Secrets Manager: the test key, never reloaded."""

    keys = (KEY,)

    def reload_if_due(self, log: Any = None) -> bool:
        return False


KEYS: Any = _Keys()


def _dimensions() -> Dimensions:
    return Dimensions([*QUEUES, "q1", "q2"])


def _events(lines: list[str], stamps: list[int] | None = None) -> list[Any]:
    stamps = stamps or [BASE_MS + i for i in range(len(lines))]
    parsed = parse_lines(zip(stamps, lines, strict=True), keys=KEYS, log=LOG)
    assert (parsed.malformed, parsed.forged, parsed.duplicates) == (0, 0, 0)
    return parsed.events


def _aggregate(events: list[Any]) -> Any:
    return aggregate(events, _dimensions())[0]


def test_counts_are_kept_apart_per_task_queue_and_minute() -> None:
    lines = [
        event_line(task_id="a", task="t1", queue="q1"),
        event_line(task_id="b", task="t1", queue="q2"),
        event_line(task_id="c", task="t2", queue="q1"),
        event_line("failed", task_id="d", task="t1", queue="q1"),
        event_line(task_id="e", task="t1", queue="q1"),
    ]
    stamps = [BASE_MS, BASE_MS, BASE_MS, BASE_MS + 1, BASE_MS + 60_000]

    groups = _aggregate(_events(lines, stamps))

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
    groups = _aggregate(_events([event_line("rejected", task_id="", task="", queue=None)]))

    assert list(groups) == [(tm.UNKNOWN_TASK, tm.UNKNOWN_QUEUE, BASE_MS)]


def test_a_line_delivered_twice_in_a_batch_is_counted_once() -> None:
    line = event_line("failed", task_id="x")
    other_attempt = event_line("failed", task_id="x", ts=_iso(BASE_MS + 5000))

    parsed = parse_lines([(BASE_MS, line), (BASE_MS, line), (BASE_MS, other_attempt)], keys=KEYS, log=LOG)

    assert (len(parsed.events), parsed.malformed, parsed.duplicates) == (2, 0, 1)


def test_each_metric_holds_at_most_100_values_per_document(capsys: pytest.CaptureFixture[str]) -> None:
    lines = [event_line(task_id=f"t{i}", runtime_s=i / 1000) for i in range(250)]

    publish_metrics(_aggregate(_events(lines)), namespace=NAMESPACE, now_ms=BASE_MS)

    documents = emf_documents(capsys.readouterr().out)
    totals = task_metrics(documents)[("app.work", "default")]
    assert len(documents) == 3
    assert totals.counts[tm.SUCCEEDED] == 250
    assert sorted(totals.values[tm.RUNTIME]) == [i / 1000 for i in range(250)]
    assert len(totals.values[tm.QUEUE_WAIT]) == 250


def test_documents_are_stamped_with_the_events_minute(capsys: pytest.CaptureFixture[str]) -> None:
    earlier = BASE_MS - 5 * 60_000
    publish_metrics(
        _aggregate(_events([event_line(task_id="a")], [earlier + 1234])), namespace=NAMESPACE, now_ms=BASE_MS
    )

    (document,) = emf_documents(capsys.readouterr().out)
    assert document["_aws"]["Timestamp"] == earlier


def test_an_event_older_than_cloudwatch_accepts_is_stamped_now(capsys: pytest.CaptureFixture[str]) -> None:
    too_old = BASE_MS - 30 * DAY_MS
    publish_metrics(
        _aggregate(_events([event_line(task_id="a", ts=_iso(too_old))], [too_old])),
        namespace=NAMESPACE,
        now_ms=BASE_MS + 5,
    )

    (document,) = emf_documents(capsys.readouterr().out)
    assert document["_aws"]["Timestamp"] == BASE_MS


def test_batches_stay_under_the_put_log_events_byte_limit() -> None:
    message = "x" * 100_000
    records = [(BASE_MS + i, message) for i in range(25)]

    batches, dropped = put_log_events_batches(records)

    assert all(
        sum(len(e["message"]) + EVENT_OVERHEAD_BYTES for e in batch) <= MAX_BATCH_BYTES for batch in batches
    )
    assert [e["timestamp"] for batch in batches for e in batch] == [stamp for stamp, _ in records]
    assert [len(batch) for batch in batches] == [10, 10, 5]
    assert dropped == 0


def test_batches_hold_at_most_10000_events() -> None:
    records = [(BASE_MS + i, "{}") for i in range(MAX_BATCH_EVENTS * 2 + 1)]

    assert [len(batch) for batch in put_log_events_batches(records)[0]] == [
        MAX_BATCH_EVENTS,
        MAX_BATCH_EVENTS,
        1,
    ]


def test_batches_never_span_more_than_24_hours() -> None:
    records = [(BASE_MS, "a"), (BASE_MS + DAY_MS - 1, "b"), (BASE_MS + DAY_MS, "c")]

    assert [[e["message"] for e in batch] for batch in put_log_events_batches(records)[0]] == [
        ["a", "b"],
        ["c"],
    ]


def test_a_record_no_put_log_events_call_can_take_is_dropped_not_raised() -> None:
    records = [(BASE_MS, "a"), (BASE_MS + 1, "x" * 1_100_000), (BASE_MS + 2, "b")]

    batches, dropped = put_log_events_batches(records)

    assert ([[e["message"] for e in batch] for batch in batches], dropped) == ([["a", "b"]], 1)


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


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


class _FailingOnce:
    """A CloudWatch Logs client whose `fail_at`-th PutLogEvents call fails once, as a throttle
    that outlasted the client's retries would."""

    def __init__(self, client: Any, fail_at: int) -> None:
        self.client = client
        self.fail_at = fail_at
        self.puts = 0

    def create_log_stream(self, **kwargs: Any) -> Any:
        return self.client.create_log_stream(**kwargs)

    def put_log_events(self, **kwargs: Any) -> Any:
        self.puts += 1
        if self.puts == self.fail_at:
            raise RuntimeError("ThrottlingException")
        return self.client.put_log_events(**kwargs)


def test_a_retry_after_a_partial_write_does_not_write_the_written_part_again(logs: Any) -> None:
    client = _FailingOnce(logs, fail_at=2)
    failures = FailureLog(client, FAILED_TASKS_LOG_GROUP, log=LOG)
    # Three PutLogEvents batches' worth: the second call fails.
    records = [(BASE_MS + i, json.dumps({"task_id": f"t{i}", "pad": "x" * 400_000})) for i in range(6)]

    with pytest.raises(RuntimeError):
        failures.write(records, now_ms=BASE_MS)
    failures.write(records, now_ms=BASE_MS)

    assert sorted(r["task_id"] for r in failure_records(logs)) == [f"t{i}" for i in range(6)]
    assert client.puts == 2 + 2


def test_the_signing_keys_are_the_secrets_current_and_previous_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with mocked_aws(monkeypatch, previous_key=True):
        client = boto3.client("secretsmanager", region_name=REGION)
        keys = SigningKeys(client, os.environ["EVENT_KEY_SECRET_ARN"])

    assert keys.keys == (KEY, PREVIOUS_KEY)


def test_a_rotated_key_is_picked_up_without_a_cold_start(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    rotated = te.key_from_secret("r" * 40)
    with mocked_aws(monkeypatch):
        client = boto3.client("secretsmanager", region_name=REGION)
        keys = SigningKeys(client, os.environ["EVENT_KEY_SECRET_ARN"], clock=lambda: now[0])
        client.put_secret_value(SecretId=os.environ["EVENT_KEY_SECRET_ARN"], SecretString="r" * 40)
        line = event_line(task_id="after-rotation", key=rotated)

        too_soon = parse_lines([(BASE_MS, line)], keys=keys, log=LOG)
        now[0] += KEY_RELOAD_INTERVAL_S
        later = parse_lines([(BASE_MS, line)], keys=keys, log=LOG)

    assert (too_soon.forged, len(later.events), later.forged) == (1, 1, 0)
    assert keys.keys == (rotated, te.key_from_secret(SECRET_VALUE))


def test_a_key_reload_that_fails_keeps_the_keys_and_never_fails_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    with mocked_aws(monkeypatch):
        client = boto3.client("secretsmanager", region_name=REGION)
        keys = SigningKeys(client, os.environ["EVENT_KEY_SECRET_ARN"], clock=lambda: now[0])
        client.delete_secret(SecretId=os.environ["EVENT_KEY_SECRET_ARN"], ForceDeleteWithoutRecovery=True)
        now[0] += KEY_RELOAD_INTERVAL_S

        parsed = parse_lines([(BASE_MS, event_line(task_id="a", key=b"unknown"))], keys=keys, log=LOG)

    assert (parsed.forged, keys.keys) == (1, (KEY,))
