"""Real CloudWatch Logs subscription payloads, EMF output parsing and the handler under moto."""

from __future__ import annotations

import base64
import gzip
import importlib
import json
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import boto3
import pytest
from celery_fleet.contract import task_events as te
from celery_fleet.contract import task_metrics as tm
from celery_fleet.contract.queue_metrics import QUEUE_DIMENSION, namespace
from moto import mock_aws

NAMESPACE = namespace("test")
FAILED_TASKS_LOG_GROUP = "/celery-fleet/test/failed-tasks"
WORKER_LOG_GROUP = "/celery-fleet/test/worker"
WORKER_LOG_STREAM = "worker/worker/0123456789abcdef"
REGION = "eu-west-1"
TRACEBACK = 'Traceback (most recent call last):\n  File "app.py", line 1\nValueError: bad'
# CloudWatch Logs refuses events older than 14 days, so payloads are stamped from the current minute.
BASE_MS = int(time.time() // 60 * 60_000)
# A line's own time is close to when it was logged (the Lambda refuses one a day away).
TS = datetime.fromtimestamp(BASE_MS / 1000, UTC).isoformat(timespec="milliseconds")
QUEUES = ("default", "io", "cpu", "e2e")
# The stage's signing key as the secret holds it, and a previous one (a rotation under way).
SECRET_VALUE = "k" * 32 + "current-test-key"
PREVIOUS_SECRET_VALUE = "p" * 32 + "previous-test-key"
KEY = te.key_from_secret(SECRET_VALUE)
PREVIOUS_KEY = te.key_from_secret(PREVIOUS_SECRET_VALUE)
SECRET_NAME = "celery-fleet/test/task-event-key"


def subscription_event(
    messages: Sequence[str],
    *,
    timestamps_ms: Sequence[int] | None = None,
    message_type: str = "DATA_MESSAGE",
    log_group: str = WORKER_LOG_GROUP,
    log_stream: str = WORKER_LOG_STREAM,
) -> dict[str, Any]:
    """The event Lambda receives from a subscription filter: base64 of gzip of the JSON payload."""
    stamps = timestamps_ms if timestamps_ms is not None else [BASE_MS + i for i in range(len(messages))]
    payload = {
        "messageType": message_type,
        "owner": "123456789012",
        "logGroup": log_group,
        "logStream": log_stream,
        "subscriptionFilters": ["TaskEvents"],
        "logEvents": [
            {"id": str(36_000_000_000 + i), "timestamp": stamp, "message": message}
            for i, (stamp, message) in enumerate(zip(stamps, messages, strict=True))
        ],
    }
    return raw_event(gzip.compress(json.dumps(payload).encode()))


def raw_event(data: bytes) -> dict[str, Any]:
    """A subscription event around `data` as it is (for payloads that are not gzip or JSON)."""
    return {"awslogs": {"data": base64.b64encode(data).decode()}}


def event_line(
    event: str = "succeeded",
    *,
    task_id: str,
    task: str = "app.work",
    drop: Sequence[str] = (),
    key: bytes | None = KEY,
    **fields: Any,
) -> str:
    """A valid signed task-event line; `fields` override or add keys, `drop` removes keys, and the
    result is signed with `key` (None: unsigned)."""
    record: dict[str, Any] = {
        te.MARKER_KEY: te.MARKER_VALUE,
        te.F_VERSION: te.SCHEMA_VERSION,
        te.F_EVENT: event,
        te.F_TASK_ID: task_id,
        te.F_TASK: task,
        te.F_QUEUE: "default",
        te.F_WORKER: "celery@worker-1",
        te.F_RETRIES: 0,
        te.F_TIMESTAMP: TS,
        te.F_RUNTIME: 0.25,
        te.F_QUEUE_WAIT: 0.5,
    }
    if event in te.FAILURE_EVENTS:
        record.update(
            {
                te.F_EXC_TYPE: "ValueError",
                te.F_EXC_MESSAGE: f"bad input for {task_id}",
                te.F_EXC_FRAME: "app.py:work",
                te.F_TRACEBACK: TRACEBACK,
                te.F_ARGS: "(1, 2)",
                te.F_KWARGS: "{'url': 'https://example.com'}",
            }
        )
    record.update(fields)
    for name in drop:
        record.pop(name, None)
    return sign(json.dumps(record, separators=(",", ":")), key)


def sign(body: str, key: bytes | None = KEY) -> str:
    """`body` (a JSON object) with its MAC, as the emitter signs a line."""
    return body if key is None else te.sign(body.encode("ascii"), key).decode("ascii")


def emf_documents(stdout: str) -> list[dict[str, Any]]:
    """The EMF documents among the printed lines (Powertools' Logger prints JSON logs there too)."""
    documents = []
    for text in stdout.splitlines():
        if not text.startswith("{"):
            continue
        document = json.loads(text)
        if "_aws" in document:
            documents.append(document)
    return documents


@dataclass
class TaskMetrics:
    """EMF totals for one (TaskName, Queue): summed counts and every value of the value metrics."""

    counts: dict[str, float]
    values: dict[str, list[float]]


def task_metrics(documents: Sequence[dict[str, Any]]) -> dict[tuple[str, str], TaskMetrics]:
    totals: dict[tuple[str, str], TaskMetrics] = {}
    for document in documents:
        if tm.TASK_NAME_DIMENSION not in document:
            continue
        (directive,) = document["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == NAMESPACE
        assert sorted(map(tuple, directive["Dimensions"])) == sorted(tm.DIMENSION_SETS)
        key = (document[tm.TASK_NAME_DIMENSION], document[QUEUE_DIMENSION])
        entry = totals.setdefault(key, TaskMetrics(defaultdict(float), defaultdict(list)))
        for metric in directive["Metrics"]:
            name = metric["Name"]
            value = document[name]
            values = value if isinstance(value, list) else [value]
            if name in (tm.RUNTIME, tm.QUEUE_WAIT):
                assert len(values) <= 100, "EMF allows at most 100 values per metric"
                entry.values[name].extend(values)
            else:
                entry.counts[name] += sum(values)
    return totals


def malformed_counts(documents: Sequence[dict[str, Any]]) -> list[float]:
    """MalformedEvents values from the handler's own (dimensionless) documents."""
    return pipeline_counts(documents, tm.MALFORMED_EVENTS)


def pipeline_counts(documents: Sequence[dict[str, Any]], name: str) -> list[float]:
    """Values of one dimensionless pipeline metric (ForgedEvents, ...) from the handler's documents."""
    found = []
    for document in documents:
        if name in document:
            (directive,) = document["_aws"]["CloudWatchMetrics"]
            assert directive["Dimensions"] == [[]]
            value = document[name]
            found.extend(value if isinstance(value, list) else [value])
    return found


def failure_records(logs: Any, log_group: str = FAILED_TASKS_LOG_GROUP) -> list[dict[str, Any]]:
    """Every record in the failed-tasks log group, read back through the CloudWatch Logs API."""
    records: list[dict[str, Any]] = []
    paginator = logs.get_paginator("filter_log_events")
    for page in paginator.paginate(logGroupName=log_group):
        records.extend(json.loads(item["message"]) for item in page["events"])
    return records


@dataclass
class FakeLambdaContext:
    function_name: str = "task-events"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:task-events"
    aws_request_id: str = "52fdfc07-2182-154f-163f-5f0f9a621d72"


@contextmanager
def mocked_aws(
    monkeypatch: pytest.MonkeyPatch,
    *,
    create_failed_log_group: bool = True,
    previous_key: bool = False,
) -> Iterator[Any]:
    """Fake credentials, the Lambda's environment, moto, and in it the failed-tasks log group and
    the signing-key secret (with a previous value when `previous_key`)."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "METRIC_NAMESPACE": NAMESPACE,
        "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE,
        "FAILED_TASKS_LOG_GROUP": FAILED_TASKS_LOG_GROUP,
        "QUEUES": ",".join(QUEUES),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("POWERTOOLS_SERVICE_NAME", raising=False)
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    with mock_aws():
        logs = boto3.client("logs", region_name=REGION)
        if create_failed_log_group:
            logs.create_log_group(logGroupName=FAILED_TASKS_LOG_GROUP)
        secrets = boto3.client("secretsmanager", region_name=REGION)
        first = PREVIOUS_SECRET_VALUE if previous_key else SECRET_VALUE
        arn = secrets.create_secret(Name=SECRET_NAME, SecretString=first)["ARN"]
        if previous_key:
            # Putting a new value moves AWSPREVIOUS to the old one, as a rotation does.
            secrets.put_secret_value(SecretId=arn, SecretString=SECRET_VALUE)
        monkeypatch.setenv("EVENT_KEY_SECRET_ARN", arn)
        yield logs


def load_handler() -> ModuleType:
    """`task_events.handler` imported afresh, as at a cold start, inside the current moto mock."""
    return importlib.reload(importlib.import_module("task_events.handler"))
