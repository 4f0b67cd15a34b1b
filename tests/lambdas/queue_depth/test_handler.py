"""The real handler(event, context), cold-started with its environment: real Redis and Celery, moto AWS."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import boto3
import celery_fleet
import pytest
import redis
from celery import Celery
from celery_fleet.contract.queue_metrics import (
    IN_FLIGHT_TASKS,
    OLDEST_TASK_AGE,
    WAITING_TASKS,
)
from queue_depth.logic import LEASE_KEY

from tests.lambdas.queue_depth.conftest import (
    NAMESPACE,
    REGION,
    FakeLambdaContext,
    JsonLogLines,
    Published,
    SendStamp,
    deliver_without_ack,
    make_app,
    observe_put_metric_data,
    published,
    send,
)
from tests.support.redis_server import RedisServer, free_port

ODD = "reports:eu-west/v2 (bulk) #1"
QUEUES = ("alpha", "beta", "never-used", ODD)
ColdStart = Callable[[Mapping[str, str]], ModuleType]


def local_environment(broker_url: str, **extra: str) -> dict[str, str]:
    return {"QUEUES": ",".join(QUEUES), "METRIC_NAMESPACE": NAMESPACE, "BROKER_URL": broker_url, **extra}


@dataclass(frozen=True)
class Invocation:
    result: dict[str, int]
    stored: dict[tuple[str, str | None], Published]
    # Every value sent per (metric name, queue dimension or None), as the PutMetricData requests held it.
    sent: dict[tuple[str, str | None], list[float]]
    started: float
    finished: float
    alpha_sent_at: float


@pytest.fixture
def invocation(
    redis_server: RedisServer,
    celery_app: Celery,
    stamp: SendStamp,
    cloudwatch: Any,
    cold_start: ColdStart,
) -> Iterator[Invocation]:
    """Tasks in several queues and priorities, two delivered and not acked (one of a queue the
    publisher is not given), then one invocation."""
    alpha_sent_at = time.time() - 900
    stamp.at = alpha_sent_at
    send(celery_app, "alpha", priority=9)
    stamp.at = time.time() - 100
    send(celery_app, "alpha", count=3)
    stamp.at = None
    send(celery_app, "beta", count=2, priority=6)
    stamp.at = time.time() - 30
    send(celery_app, ODD)
    send(celery_app, "unlisted")
    module = cold_start(local_environment(redis_server.url))
    with celery_app.connection_for_read() as consumer:
        deliver_without_ack(consumer.default_channel, "alpha")
        deliver_without_ack(consumer.default_channel, "unlisted")
        calls = observe_put_metric_data(module.cloudwatch)
        started = time.time()
        result = module.handler({}, FakeLambdaContext())
        finished = time.time()
        sent: dict[tuple[str, str | None], list[float]] = {}
        for datum in (datum for request in calls.requests for datum in request["MetricData"]):
            queue = datum["Dimensions"][0]["Value"] if "Dimensions" in datum else None
            sent.setdefault((datum["MetricName"], queue), []).append(datum["Value"])
        yield Invocation(result, published(cloudwatch), sent, started, finished, alpha_sent_at)


def test_waiting_tasks_are_published_for_every_configured_queue(invocation: Invocation) -> None:
    waiting = {queue: invocation.stored[(WAITING_TASKS, queue)] for queue in QUEUES}

    # alpha: 4 sent, 1 delivered to a consumer; never-used: a zero, not a missing point.
    assert {queue: point.maximum for queue, point in waiting.items()} == {
        "alpha": 3.0,
        "beta": 2.0,
        "never-used": 0.0,
        ODD: 1.0,
    }
    assert {(point.samples, point.unit) for point in waiting.values()} == {(1, "Count")}


def test_oldest_age_is_published_from_the_send_stamp_only_where_there_is_one(invocation: Invocation) -> None:
    ages = {queue for name, queue in invocation.stored if name == OLDEST_TASK_AGE}
    assert ages == {"alpha", ODD}

    alpha = invocation.stored[(OLDEST_TASK_AGE, "alpha")]
    assert alpha.unit == "Seconds"
    sent = invocation.alpha_sent_at
    assert invocation.started - sent <= alpha.maximum <= invocation.finished - sent


def test_in_flight_tasks_are_sent_per_queue_and_once_broker_wide(invocation: Invocation) -> None:
    # Read from the requests: moto's statistics for a name without dimensions aggregate every
    # dimension of that name, where CloudWatch keeps the dimensionless metric apart.
    in_flight = {
        queue: values for (name, queue), values in invocation.sent.items() if name == IN_FLIGHT_TASKS
    }

    # The unlisted queue's task counts only in the broker-wide figure (no queue dimension).
    assert in_flight == {None: [2.0], "alpha": [1.0], "beta": [0.0], "never-used": [0.0], ODD: [0.0]}


def test_in_flight_tasks_per_queue_reach_cloudwatch_as_counts(invocation: Invocation) -> None:
    stored = {queue: invocation.stored[(IN_FLIGHT_TASKS, queue)] for queue in QUEUES}

    assert {queue: point.maximum for queue, point in stored.items()} == {
        "alpha": 1.0,
        "beta": 0.0,
        "never-used": 0.0,
        ODD: 0.0,
    }
    assert {(point.samples, point.unit) for point in stored.values()} == {(1, "Count")}


def test_the_handler_reports_what_it_published(invocation: Invocation) -> None:
    # 4 waiting + 2 ages + 4 in flight per queue + in flight broker-wide
    assert invocation.result == {
        "published_polls": 1,
        "partial_polls": 0,
        "failed_polls": 0,
        "skipped_polls": 0,
        "put_metric_data_calls": 1,
        "data_points": 11,
    }


def test_a_standard_invocation_polls_once_in_one_put_metric_data_call(
    redis_server: RedisServer, celery_app: Celery, cloudwatch: Any, cold_start: ColdStart
) -> None:
    send(celery_app, "alpha", count=2)
    module = cold_start(local_environment(redis_server.url))
    calls = observe_put_metric_data(module.cloudwatch)

    module.handler({}, FakeLambdaContext())

    assert len(calls.requests) == 1
    request = calls.requests[0]
    assert request["Namespace"] == NAMESPACE
    assert {datum["StorageResolution"] for datum in request["MetricData"]} == {60}


def test_a_high_resolution_invocation_publishes_one_second_storage_resolution(
    redis_server: RedisServer, celery_app: Celery, cloudwatch: Any, cold_start: ColdStart
) -> None:
    send(celery_app, "alpha")
    module = cold_start(local_environment(redis_server.url, POLL_INTERVAL_S="10"))
    calls = observe_put_metric_data(module.cloudwatch)
    # No time left past the first poll: the test does not wait for the next 10-second boundary.
    context = FakeLambdaContext(remaining_ms=int(module.FINISH_MARGIN_S * 1000))

    result = module.handler({}, context)

    assert result["published_polls"] == len(calls.requests) == 1
    assert {datum["StorageResolution"] for datum in calls.requests[0]["MetricData"]} == {1}


@pytest.fixture
def unreachable_broker_url() -> str:
    # A loopback port nobody listens on.
    return f"redis://127.0.0.1:{free_port()}/0"


def test_an_unreachable_broker_publishes_nothing_and_fails_the_invocation(
    unreachable_broker_url: str, cloudwatch: Any, cold_start: ColdStart
) -> None:
    module = cold_start(local_environment(unreachable_broker_url))

    with pytest.raises(module.BrokerUnavailableError, match="1 of 1 polls could not read the broker"):
        module.handler({}, FakeLambdaContext())

    assert cloudwatch.list_metrics(Namespace=NAMESPACE)["Metrics"] == []


def test_an_unreachable_broker_is_logged_as_a_structured_error(
    unreachable_broker_url: str,
    cloudwatch: Any,
    cold_start: ColdStart,
    capture_logs: Callable[[ModuleType], JsonLogLines],
) -> None:
    module = cold_start(local_environment(unreachable_broker_url))
    logs = capture_logs(module)

    with pytest.raises(module.BrokerUnavailableError):
        module.handler({}, FakeLambdaContext())

    errors = [line for line in logs.lines() if line["level"] == "ERROR"]
    assert len(errors) == 1
    assert errors[0]["message"] == "Broker unreachable or too slow: this poll published nothing"
    assert errors[0]["exception_name"] == "ConnectionError"
    assert errors[0]["queues"] == list(QUEUES)
    assert errors[0]["function_name"] == FakeLambdaContext.function_name


SECRET_NAME = "celery-fleet/broker-auth"


@pytest.fixture
def aws_environment(aws: None) -> dict[str, str]:
    """The AWS form of the environment, with the AUTH token stored in (moto's) Secrets Manager."""
    secrets = boto3.client("secretsmanager", region_name=REGION)
    arn = secrets.create_secret(Name=SECRET_NAME, SecretString="first-token-0123456789")["ARN"]
    return {
        "QUEUES": "alpha",
        "METRIC_NAMESPACE": NAMESPACE,
        "BROKER_HOST": "master.broker.abc123.euw1.cache.amazonaws.com",
        "BROKER_PORT": "6380",
        "BROKER_AUTH_SECRET_ARN": arn,
    }


def test_the_aws_form_connects_with_tls_verification_and_the_secret_token(
    aws_environment: dict[str, str], cold_start: ColdStart
) -> None:
    module = cold_start(aws_environment)

    # Built, not connected: there is no TLS broker on this machine.
    client = module.broker_client(module.Deadline())

    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    assert issubclass(pool.connection_class, redis.SSLConnection)
    assert (kwargs["host"], kwargs["port"]) == (aws_environment["BROKER_HOST"], 6380)
    assert kwargs["password"] == "first-token-0123456789"
    assert (kwargs["ssl_cert_reqs"], kwargs["ssl_check_hostname"]) == ("required", True)
    assert pool._created_connections == 0


def test_the_auth_token_is_fetched_once_and_reused_until_its_max_age(
    aws_environment: dict[str, str], cold_start: ColdStart
) -> None:
    module = cold_start(aws_environment)
    module.broker_client(module.Deadline())
    secrets = boto3.client("secretsmanager", region_name=REGION)
    secrets.put_secret_value(SecretId=SECRET_NAME, SecretString="rotated-token-0123456789")

    cached = module.broker_client(module.Deadline()).connection_pool.connection_kwargs["password"]

    assert cached == "first-token-0123456789"


def test_the_age_of_a_task_stamped_by_celery_fleet_configure_is_published(
    redis_server: RedisServer, cloudwatch: Any, cold_start: ColdStart
) -> None:
    app = make_app(redis_server.url)
    # The worker package's own stamping; it stays connected process-wide, as in an API process.
    celery_fleet.configure(app, broker_url=redis_server.url, task_events=False, healthcheck=False)
    before_send = time.time()
    send(app, "alpha")
    after_send = time.time()
    module = cold_start(local_environment(redis_server.url))

    started = time.time()
    module.handler({}, FakeLambdaContext())
    finished = time.time()

    app.close()
    age = published(cloudwatch)[(OLDEST_TASK_AGE, "alpha")].maximum
    assert started - after_send <= age <= finished - before_send


def test_a_key_of_the_wrong_type_fails_the_invocation_as_what_it_is_after_publishing_the_rest(
    redis_server: RedisServer,
    celery_app: Celery,
    cloudwatch: Any,
    cold_start: ColdStart,
    capture_logs: Callable[[ModuleType], JsonLogLines],
) -> None:
    send(celery_app, "alpha", count=2)
    send(celery_app, "beta", count=3)
    redis_server.client().hset("beta\x06\x166", "field", "a hash where a list belongs")
    module = cold_start(local_environment(redis_server.url))
    logs = capture_logs(module)

    with pytest.raises(module.BrokerDataError, match=re.escape("'beta\\x06\\x166' is a hash, not a list")):
        module.handler({}, FakeLambdaContext())

    stored = published(cloudwatch)
    assert stored[(WAITING_TASKS, "alpha")].maximum == 2.0
    assert (WAITING_TASKS, "beta") not in stored
    errors = [line for line in logs.lines() if line["level"] == "ERROR"]
    assert [line["message"] for line in errors] == [
        "Broker keys of the wrong type: their figures were left out, the rest published"
    ]
    assert errors[0]["queues_left_out"] == ["beta"]


def test_an_invocation_that_finds_the_lease_held_polls_nothing(
    redis_server: RedisServer, celery_app: Celery, cloudwatch: Any, cold_start: ColdStart
) -> None:
    send(celery_app, "alpha")
    module = cold_start(local_environment(redis_server.url))
    # Another invocation (a duplicate delivery of the schedule's event) is still polling.
    redis_server.client().set(LEASE_KEY, "another-request-id", px=60_000)

    result = module.handler({}, FakeLambdaContext())

    assert result["lease_held_elsewhere"] == 1
    assert result["published_polls"] == 0
    assert cloudwatch.list_metrics(Namespace=NAMESPACE)["Metrics"] == []


def test_an_invocation_gives_its_lease_back_when_it_ends(
    redis_server: RedisServer, cloudwatch: Any, cold_start: ColdStart
) -> None:
    module = cold_start(local_environment(redis_server.url))

    first = module.handler({}, FakeLambdaContext())
    second = module.handler({}, FakeLambdaContext())

    assert (first["published_polls"], second["published_polls"]) == (1, 1)
    assert redis_server.client().exists(LEASE_KEY) == 0


@pytest.mark.parametrize("interval_s", [1, 10, 60])
def test_every_attempt_of_a_poll_fits_in_half_its_slot(
    interval_s: int, redis_server: RedisServer, aws: None, cold_start: ColdStart
) -> None:
    module = cold_start(local_environment(redis_server.url))

    timeout = module.broker_timeout_s(interval_s)

    assert timeout * (1 + module.BROKER_RETRIES) <= interval_s / 2
    assert timeout <= module.BROKER_TIMEOUT_S
