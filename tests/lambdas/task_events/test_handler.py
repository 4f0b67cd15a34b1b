"""The ingest Lambda's handler: real subscription payloads in, EMF and failure records out (moto)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from botocore.exceptions import ClientError
from celery_fleet.contract import task_metrics as tm
from task_events.models import Settings

from tests.lambdas.task_events.support import (
    FAILED_TASKS_LOG_GROUP,
    WORKER_LOG_GROUP,
    WORKER_LOG_STREAM,
    FakeLambdaContext,
    emf_documents,
    event_line,
    failure_records,
    load_handler,
    malformed_counts,
    mocked_aws,
    subscription_event,
    task_metrics,
)


def _mixed_batch() -> list[str]:
    return [
        event_line("succeeded", task_id="s1", task="app.fetch", queue="io"),
        event_line("succeeded", task_id="s2", task="app.fetch", queue="io", runtime_s=1.5, queue_wait_s=3.0),
        event_line("failed", task_id="f1", task="app.fetch", queue="io"),
        event_line("retried", task_id="r1", task="app.fetch", queue="io", exc_type="ConnectionError"),
        event_line("succeeded", task_id="s3", task="app.render", queue="cpu", queue_wait_s=None),
        event_line(
            "time_limit_exceeded", task_id="t1", task="app.render", queue="cpu", exc_type="TimeLimitExceeded"
        ),
        event_line("worker_lost", task_id="w1", task="app.render", queue="cpu", exc_type="WorkerLostError"),
        event_line(
            "revoked", task_id="v1", task="app.render", queue="cpu", runtime_s=None, queue_wait_s=None
        ),
    ]


def test_handler_sums_outcomes_per_task_and_queue_in_emf(
    handler_module: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    handler_module.handler(subscription_event(_mixed_batch()), FakeLambdaContext())

    metrics = task_metrics(emf_documents(capsys.readouterr().out))

    assert set(metrics) == {("app.fetch", "io"), ("app.render", "cpu")}
    fetch, render = metrics["app.fetch", "io"], metrics["app.render", "cpu"]
    assert dict(fetch.counts) == {
        tm.SUCCEEDED: 2, tm.FAILED: 1, tm.RETRIED: 1, tm.REVOKED: 0,
        tm.REJECTED: 0, tm.TIME_LIMIT_EXCEEDED: 0, tm.WORKER_LOST: 0,
    }  # fmt: skip
    assert dict(render.counts) == {
        tm.SUCCEEDED: 1, tm.FAILED: 0, tm.RETRIED: 0, tm.REVOKED: 1,
        tm.REJECTED: 0, tm.TIME_LIMIT_EXCEEDED: 1, tm.WORKER_LOST: 1,
    }  # fmt: skip
    assert sorted(fetch.values[tm.RUNTIME]) == [0.25, 0.25, 0.25, 1.5]
    assert sorted(fetch.values[tm.QUEUE_WAIT]) == [0.5, 0.5, 0.5, 3.0]
    assert sorted(render.values[tm.RUNTIME]) == [0.25, 0.25, 0.25]
    assert sorted(render.values[tm.QUEUE_WAIT]) == [0.5, 0.5]


def test_handler_writes_each_failure_to_the_failed_tasks_log_group(
    handler_module: ModuleType, logs: Any
) -> None:
    handler_module.handler(subscription_event(_mixed_batch()), FakeLambdaContext())

    records = {record["task_id"]: record for record in failure_records(logs)}

    assert set(records) == {"f1", "t1", "w1"}
    assert records["f1"] == {
        "key": "f1:failed:2026-01-01T00:00:00.000+00:00",
        "event": "failed",
        "task_id": "f1",
        "task": "app.fetch",
        "queue": "io",
        "worker": "celery@worker-1",
        "retries": 0,
        "time": "2026-01-01T00:00:00.000+00:00",
        "runtime_s": 0.25,
        "exc_type": "ValueError",
        "exc_message": "bad input for f1",
        "traceback": 'Traceback (most recent call last):\n  File "app.py", line 1\nValueError: bad',
        "args": "(1, 2)",
        "kwargs": "{'url': 'https://example.com'}",
        "source": {"log_group": WORKER_LOG_GROUP, "log_stream": WORKER_LOG_STREAM},
    }
    assert records["t1"]["event"] == "time_limit_exceeded"
    assert records["w1"]["event"] == "worker_lost"


def test_handler_reports_malformed_lines_without_failing_the_batch(
    handler_module: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        event_line(task_id="ok1"),
        "not json",
        event_line(task_id="ok2", v=99),
        event_line(task_id="ok3"),
    ]

    result = handler_module.handler(subscription_event(lines), FakeLambdaContext())

    documents = emf_documents(capsys.readouterr().out)
    assert result["malformed"] == 2
    assert malformed_counts(documents) == [2]
    assert task_metrics(documents)["app.work", "default"].counts[tm.SUCCEEDED] == 2


def test_handler_publishes_zero_malformed_events_for_a_clean_batch(
    handler_module: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    handler_module.handler(subscription_event([event_line(task_id="a")]), FakeLambdaContext())

    assert malformed_counts(emf_documents(capsys.readouterr().out)) == [0]


def test_handler_skips_control_messages(
    handler_module: ModuleType, logs: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    event = subscription_event(
        ["CWL CONTROL MESSAGE: Checking health of destination Lambda."], message_type="CONTROL_MESSAGE"
    )

    result = handler_module.handler(event, FakeLambdaContext())

    assert result["control_message"] is True
    assert emf_documents(capsys.readouterr().out) == []
    assert failure_records(logs) == []


def test_handler_raises_and_counts_nothing_when_failure_records_cannot_be_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with mocked_aws(monkeypatch, create_failed_log_group=False):
        handler_module = load_handler()
        with pytest.raises(ClientError, match="ResourceNotFoundException"):
            handler_module.handler(subscription_event(_mixed_batch()), FakeLambdaContext())

    # Lambda retries the whole batch: metrics printed now would be counted twice.
    assert task_metrics(emf_documents(capsys.readouterr().out)) == {}


def test_handler_does_not_call_the_logs_api_for_a_batch_without_failures(
    handler_module: ModuleType, logs: Any
) -> None:
    handler_module.handler(subscription_event([event_line(task_id="a")]), FakeLambdaContext())

    assert logs.describe_log_streams(logGroupName=FAILED_TASKS_LOG_GROUP)["logStreams"] == []


def test_settings_name_every_missing_variable() -> None:
    with pytest.raises(ValueError, match="METRIC_NAMESPACE, FAILED_TASKS_LOG_GROUP must be set"):
        Settings.from_environ({})


def test_settings_reject_an_invalid_log_group_name() -> None:
    with pytest.raises(ValueError, match=r"FAILED_TASKS_LOG_GROUP='failed tasks!'"):
        Settings.from_environ(
            {"METRIC_NAMESPACE": "CeleryFleet/dev", "FAILED_TASKS_LOG_GROUP": "failed tasks!"}
        )
