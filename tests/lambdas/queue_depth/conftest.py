"""Fixtures for the queue-depth publisher: a real Celery app on a real redis-server, moto for AWS."""

from __future__ import annotations

import copy
import importlib
import io
import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from celery import Celery
from celery.signals import before_task_publish
from celery_fleet.contract.queue_metrics import SENT_AT_HEADER
from moto import mock_aws

from tests.support.redis_server import RedisServer

TASK_NAME = "tests.queue_depth.work"
REGION = "eu-west-1"
NAMESPACE = "CeleryFleet/test"


def work(item: int) -> int:
    """The tests' task: published, never run."""
    return item


def make_app(broker_url: str, **transport_options: Any) -> Celery:
    """A Celery app on `broker_url` with one task; its messages are only published, never run."""
    app = Celery("queue-depth-tests", broker=broker_url, set_as_current=False)
    if transport_options:
        app.conf.broker_transport_options = transport_options
    # shared=False: every test's app has its own task, not one registered with all apps.
    app.task(name=TASK_NAME, shared=False)(work)
    return app


def deliver_without_ack(channel: Any, queue: str) -> Any:
    """Take `queue`'s next message as a consumer does (kombu's basic_get), leaving it unacknowledged.

    kombu records it in the `unacked` hash until it is acked, or restored when the channel closes.
    """
    message = channel.basic_get(queue, no_ack=False)
    assert message is not None, f"{queue} had no message to deliver"
    return message


def send(app: Celery, queue: str, *, count: int = 1, priority: int | None = None) -> None:
    """Publish `count` task messages to `queue` with Celery's own apply_async."""
    for item in range(count):
        app.tasks[TASK_NAME].apply_async((item,), queue=queue, priority=priority)


@dataclass
class SendStamp:
    """The send time our `before_task_publish` handler stamps; None publishes unstamped messages.

    Stands in for celery_fleet's stamping with a time the test chooses. Connected after any stamper
    another test left connected (celery_fleet.configure's is process-wide), so it has the last word.
    """

    at: float | None = None

    def __call__(self, sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
        if headers is None or sender != TASK_NAME:
            return
        if self.at is None:
            headers.pop(SENT_AT_HEADER, None)
        else:
            headers[SENT_AT_HEADER] = self.at


@pytest.fixture
def stamp() -> Iterator[SendStamp]:
    handler = SendStamp()
    before_task_publish.connect(handler, weak=False)
    yield handler
    before_task_publish.disconnect(handler)


@pytest.fixture
def celery_app(redis_server: RedisServer) -> Iterator[Celery]:
    """A Celery app with kombu's default Redis transport options (priority steps 0, 3, 6, 9)."""
    app = make_app(redis_server.url)
    yield app
    app.close()


@dataclass
class FakeLambdaContext:
    """What Lambda passes as `context`, with a remaining time the test chooses."""

    remaining_ms: int = 60_000
    function_name: str = "QueueDepthPublisher"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:QueueDepthPublisher"
    aws_request_id: str = "c0ffee00-0000-4000-8000-000000000001"
    log_group_name: str = "/aws/lambda/QueueDepthPublisher"
    log_stream_name: str = "2026/01/01/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fake credentials and region, and moto standing in for every AWS API."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield


@pytest.fixture
def cloudwatch(aws: None) -> Any:
    return boto3.client("cloudwatch", region_name=REGION)


BROKER_VARIABLES = (
    "BROKER_URL",
    "BROKER_HOST",
    "BROKER_PORT",
    "BROKER_AUTH_SECRET_ARN",
    "POLL_INTERVAL_S",
    "WORKER_GROUPS",
)


@pytest.fixture
def cold_start(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Mapping[str, str]], ModuleType]]:
    """Import `queue_depth.handler` afresh with the given Lambda environment, as a cold start does."""

    def start(environment: Mapping[str, str]) -> ModuleType:
        for name in ("QUEUES", "METRIC_NAMESPACE", "POWERTOOLS_SERVICE_NAME", *BROKER_VARIABLES):
            monkeypatch.delenv(name, raising=False)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        sys.modules.pop("queue_depth.handler", None)
        # A new execution environment starts with empty Powertools caches.
        parameters.clear_caches()  # type: ignore[no-untyped-call]
        return importlib.import_module("queue_depth.handler")

    yield start
    sys.modules.pop("queue_depth.handler", None)
    parameters.clear_caches()  # type: ignore[no-untyped-call]


@dataclass
class PutMetricDataCalls:
    """The PutMetricData requests a boto3 client sent, as built by botocore (observed, not replaced)."""

    requests: list[dict[str, Any]] = field(default_factory=list)

    def record(self, params: dict[str, Any], **_: Any) -> None:
        self.requests.append(copy.deepcopy(params))


def observe_put_metric_data(client: Any) -> PutMetricDataCalls:
    calls = PutMetricDataCalls()
    client.meta.events.register("provide-client-params.cloudwatch.PutMetricData", calls.record)
    return calls


@dataclass(frozen=True)
class Published:
    """What CloudWatch (moto) holds for one metric: number of data points, their maximum, the unit."""

    samples: int
    maximum: float
    unit: str


def published(cloudwatch: Any, namespace: str = NAMESPACE) -> dict[tuple[str, str | None], Published]:
    """Every metric in `namespace`, keyed by (metric name, queue dimension or None), read back.

    moto's statistics for a name read without dimensions take in that name's points of every
    dimension (CloudWatch keeps them apart): check a dimensionless metric that shares its name
    with dimensioned ones (InFlightTasks) in the PutMetricData requests instead.
    """
    now = datetime.now(UTC)
    result: dict[tuple[str, str | None], Published] = {}
    for page in cloudwatch.get_paginator("list_metrics").paginate(Namespace=namespace):
        for metric in page["Metrics"]:
            dimensions = metric.get("Dimensions", [])
            points = cloudwatch.get_metric_statistics(
                Namespace=namespace,
                MetricName=metric["MetricName"],
                Dimensions=dimensions,
                StartTime=now - timedelta(hours=1),
                EndTime=now + timedelta(hours=1),
                Period=60,
                Statistics=["SampleCount", "Maximum"],
            )["Datapoints"]
            queue = dimensions[0]["Value"] if dimensions else None
            result[(metric["MetricName"], queue)] = Published(
                samples=int(sum(point["SampleCount"] for point in points)),
                maximum=max(point["Maximum"] for point in points),
                unit=points[0]["Unit"],
            )
    return result


def metric_count(cloudwatch: Any, namespace: str = NAMESPACE) -> int:
    """How many distinct metrics (name and dimensions) CloudWatch (moto) holds in `namespace`."""
    pages = cloudwatch.get_paginator("list_metrics").paginate(Namespace=namespace)
    return sum(len(page["Metrics"]) for page in pages)


class JsonLogLines:
    """The structured log lines the handler's Powertools Logger writes, parsed."""

    def __init__(self, module: ModuleType) -> None:
        self._stream = io.StringIO()
        self._handler = logging.StreamHandler(self._stream)
        self._handler.setFormatter(module.logger.registered_formatter)
        self._logger = module.logger
        self._logger.addHandler(self._handler)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._stream.getvalue().splitlines() if line.strip()]

    def close(self) -> None:
        self._logger.removeHandler(self._handler)


@pytest.fixture
def capture_logs() -> Iterator[Callable[[ModuleType], JsonLogLines]]:
    """Attach a JSON-line capture to a freshly imported handler module's logger."""
    captures: list[JsonLogLines] = []

    def capture(module: ModuleType) -> JsonLogLines:
        captures.append(JsonLogLines(module))
        return captures[-1]

    yield capture
    for lines in captures:
        lines.close()
