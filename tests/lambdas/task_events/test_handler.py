"""The ingest Lambda's handler: real subscription payloads in, EMF and failure records out (moto)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import pytest
from botocore.exceptions import ClientError
from celery_fleet.contract import task_events as te
from celery_fleet.contract import task_metrics as tm
from task_events.models import Settings

from tests.lambdas.task_events.support import (
    BASE_MS,
    FAILED_TASKS_LOG_GROUP,
    PREVIOUS_KEY,
    TS,
    WORKER_LOG_GROUP,
    WORKER_LOG_STREAM,
    FakeLambdaContext,
    emf_documents,
    event_line,
    failure_records,
    load_handler,
    malformed_counts,
    mocked_aws,
    pipeline_counts,
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
    zero = dict.fromkeys(tm.COUNT_BY_EVENT.values(), 0)
    assert dict(fetch.counts) == {**zero, tm.SUCCEEDED: 2, tm.FAILED: 1, tm.RETRIED: 1}
    assert dict(render.counts) == {
        **zero, tm.SUCCEEDED: 1, tm.REVOKED: 1, tm.TIME_LIMIT_EXCEEDED: 1, tm.WORKER_LOST: 1,
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
        "key": f"f1:failed:{TS}",
        "fingerprint": te.fingerprint("app.fetch", "ValueError", "app.py:work"),
        "event": "failed",
        "task_id": "f1",
        "task": "app.fetch",
        "queue": "io",
        "worker": "celery@worker-1",
        "retries": 0,
        "ts": TS,
        "runtime_s": 0.25,
        "queue_wait_s": 0.5,
        "exc_type": "ValueError",
        "exc_message": "bad input for f1",
        "exc_frame": "app.py:work",
        "traceback": 'Traceback (most recent call last):\n  File "app.py", line 1\nValueError: bad',
        "args": "(1, 2)",
        "kwargs": "{'url': 'https://example.com'}",
        # Issue 9: no message was kept for this line, and it replays no task.
        "kept_message": None,
        "replay_of": None,
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
        event_line(task_id="ok2", v=1),
        event_line(task_id="ok3"),
    ]

    result = handler_module.handler(subscription_event(lines), FakeLambdaContext())

    documents = emf_documents(capsys.readouterr().out)
    # "not json" carries no MAC: forged, not malformed.
    assert (result["malformed"], result["forged"]) == (1, 1)
    assert malformed_counts(documents) == [1]
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


def test_lines_without_a_valid_mac_are_forged_events_never_outcomes(
    handler_module: ModuleType, logs: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        event_line("succeeded", task_id="real"),
        event_line("failed", task_id="unsigned", key=None),
        event_line("failed", task_id="other-key", key=b"guessed"),
        event_line("failed", task_id="tampered").replace('"app.work"', '"app.victim"'),
    ]

    result = handler_module.handler(subscription_event(lines), FakeLambdaContext())

    documents = emf_documents(capsys.readouterr().out)
    assert (result["events"], result["forged"], result["malformed"]) == (1, 3, 0)
    assert pipeline_counts(documents, tm.FORGED_EVENTS) == [3]
    assert dict(task_metrics(documents)["app.work", "default"].counts)[tm.SUCCEEDED] == 1
    assert failure_records(logs) == []


def test_lines_signed_with_the_previous_key_still_count(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with mocked_aws(monkeypatch, previous_key=True):
        handler_module = load_handler()
        lines = [event_line(task_id="new"), event_line(task_id="old", key=PREVIOUS_KEY)]
        result = handler_module.handler(subscription_event(lines), FakeLambdaContext())

    assert (result["events"], result["forged"]) == (2, 0)


def test_an_unconfigured_queue_is_folded_into_one_dimension_value(
    handler_module: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [event_line(task_id=f"q{i}", queue=f"made-up-{i}") for i in range(50)]

    handler_module.handler(subscription_event(lines), FakeLambdaContext())

    metrics = task_metrics(emf_documents(capsys.readouterr().out))
    assert list(metrics) == [("app.work", tm.OTHER_QUEUE)]
    assert metrics["app.work", tm.OTHER_QUEUE].counts[tm.SUCCEEDED] == 50


def test_task_names_past_the_per_minute_cap_are_folded_and_counted(
    handler_module: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = 30
    lines = [
        event_line(task_id=f"n{i}", task=f"app.t{i}") for i in range(tm.MAX_TASK_NAMES_PER_MINUTE + extra)
    ]

    result = handler_module.handler(subscription_event(lines), FakeLambdaContext())

    documents = emf_documents(capsys.readouterr().out)
    names = {task for task, _ in task_metrics(documents)}
    assert len(names) == tm.MAX_TASK_NAMES_PER_MINUTE + 1
    assert task_metrics(documents)[tm.OTHER_TASK, "default"].counts[tm.SUCCEEDED] == extra
    assert result["folded_task_names"] == extra
    assert pipeline_counts(documents, tm.FOLDED_TASK_NAMES) == [extra]


def test_a_task_name_from_a_message_never_becomes_a_dimension(
    handler_module: ModuleType, logs: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [event_line("unknown_task", task_id="u1", task="attacker.chosen.name")]

    handler_module.handler(subscription_event(lines), FakeLambdaContext())

    metrics = task_metrics(emf_documents(capsys.readouterr().out))
    assert metrics[tm.UNKNOWN_TASK, "default"].counts[tm.UNKNOWN_TASKS] == 1
    assert [r["task"] for r in failure_records(logs)] == ["attacker.chosen.name"]


def test_dimension_values_are_printable_ascii(
    handler_module: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    handler_module.handler(
        subscription_event([event_line(task_id="a", task="app.\u00e9t\u00e9\n\x1b")]), FakeLambdaContext()
    )

    assert list(task_metrics(emf_documents(capsys.readouterr().out))) == [("app.?t???", "default")]


def test_records_cloudwatch_logs_will_not_keep_are_dropped_and_counted(
    handler_module: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    too_old = BASE_MS - 20 * 24 * 3600 * 1000
    lines = [
        event_line("failed", task_id="old", ts=_iso(too_old)),
        event_line("failed", task_id="new"),
    ]

    result = handler_module.handler(
        subscription_event(lines, timestamps_ms=[too_old, BASE_MS]), FakeLambdaContext()
    )

    assert (result["failure_records"], result["failure_records_dropped"]) == (2, 1)
    assert pipeline_counts(emf_documents(capsys.readouterr().out), tm.FAILURE_RECORDS_DROPPED) == [1]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def test_settings_name_every_missing_variable() -> None:
    with pytest.raises(
        ValueError,
        match="METRIC_NAMESPACE, FAILED_TASKS_LOG_GROUP, QUEUES, EVENT_KEY_SECRET_ARN, "
        "POWERTOOLS_METRICS_NAMESPACE must be set",
    ):
        Settings.from_environ({})


VALID_ENVIRONMENT = {
    "METRIC_NAMESPACE": "CeleryFleet/dev",
    "FAILED_TASKS_LOG_GROUP": "/celery-fleet/dev/failed-tasks",
    "QUEUES": "default",
    "EVENT_KEY_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:k-AbCdEf",
    "POWERTOOLS_METRICS_NAMESPACE": "CeleryFleet/dev",
}


def test_settings_reject_an_invalid_log_group_name() -> None:
    with pytest.raises(ValueError, match=r"FAILED_TASKS_LOG_GROUP='failed tasks!'"):
        Settings.from_environ({**VALID_ENVIRONMENT, "FAILED_TASKS_LOG_GROUP": "failed tasks!"})


def test_settings_hold_the_pipeline_counts_to_the_stage_namespace() -> None:
    # The alarms read MalformedEvents and the like in METRIC_NAMESPACE; Powertools writes them in
    # POWERTOOLS_METRICS_NAMESPACE.
    with pytest.raises(
        ValueError,
        match="POWERTOOLS_METRICS_NAMESPACE='CeleryFleet/prod' differs from "
        "METRIC_NAMESPACE='CeleryFleet/dev'",
    ):
        Settings.from_environ({**VALID_ENVIRONMENT, "POWERTOOLS_METRICS_NAMESPACE": "CeleryFleet/prod"})


def test_a_message_the_fast_json_parser_refuses_does_not_cost_the_batch(
    handler_module: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    # A task printed text CloudWatch Logs encodes with a lone surrogate escape.
    lines = [event_line(task_id="ok"), '{"celery_fleet": "task_event", "x": "\ud800"}']

    result = handler_module.handler(subscription_event(lines), FakeLambdaContext())

    assert (result["events"], result["forged"], result["malformed"]) == (1, 1, 0)


def test_the_logger_and_the_metrics_take_the_stacks_powertools_variables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with mocked_aws(monkeypatch):
        # What the stack sets (infra/task_events/construct.py); the code names no service or namespace.
        monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "task-event-ingester")
        monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "CeleryFleet/ingest-test")
        monkeypatch.setenv("METRIC_NAMESPACE", "CeleryFleet/ingest-test")
        module = load_handler()
        module.handler(subscription_event([event_line(task_id="a")]), FakeLambdaContext())

    lines = [json.loads(text) for text in capsys.readouterr().out.splitlines() if text.startswith("{")]
    logged = [line for line in lines if line.get("message") == "task events ingested"]
    assert [line["service"] for line in logged] == ["task-event-ingester"]
    counts = [line for line in lines if "_aws" in line and tm.MALFORMED_EVENTS in line]
    (directive,) = counts[0]["_aws"]["CloudWatchMetrics"]
    # The service name is not a dimension: the alarms read the pipeline counts by name alone.
    assert (directive["Namespace"], directive["Dimensions"]) == ("CeleryFleet/ingest-test", [[]])
