"""Queue-depth publisher: Celery's Redis queues as CloudWatch metrics, for scaling and alarms.

Invoked once a minute by an EventBridge schedule (the event is ignored).

Environment (validated at cold start; a bad value fails the init with a message naming it):
    QUEUES                   comma-separated Celery queue names, each a CloudWatch dimension value.
    METRIC_NAMESPACE         CloudWatch namespace, `celery_fleet.contract.queue_metrics.namespace(stage)`.
    BROKER_URL               redis:// or rediss:// URL, used as is (local runs, tests); or all of
    BROKER_HOST, BROKER_PORT, BROKER_AUTH_SECRET_ARN
                             the broker's primary endpoint, its port, and the secret holding its AUTH
                             token (a plain string). TLS with the certificate and host name verified.
    POLL_INTERVAL_S          optional, default 60: one poll, standard-resolution metrics. Below 60
                             (a divisor of 60; the stack uses 10): 60 / POLL_INTERVAL_S polls in
                             one invocation, at its start and then on each following multiple of
                             the interval on the wall clock, each publishing high-resolution metrics
                             (StorageResolution 1) as it is taken, so every period gets one data
                             point. The last poll comes at most 60 - POLL_INTERVAL_S seconds after
                             the start: the function's timeout must exceed that + FINISH_MARGIN_S
                             (the stack's 58 s does for 10).
    WORKER_GROUPS            optional: JSON list of the worker groups the publisher may start from
                             zero (queue_depth.wake.WakeGroup); the stack writes it.
    POWERTOOLS_SERVICE_NAME  the `service` of every log line (read by Powertools' Logger).
The names are queue_depth.environment's; the stack sets them from there.

Each poll reads every queue in one Redis round trip (broker-side scripts that return figures, never
messages: queue_depth.scripts) and publishes in one PutMetricData call (more only past 1000 items):
WaitingTasks, OldestWaitingTaskAge and InFlightTasks per queue, InFlightTasks once more without a
dimension, broker-wide, and WaitingTasks and InFlightTasks per worker group of WORKER_GROUPS. Then,
with WORKER_GROUPS, one DescribeServices call (per 10 services) and one more PutMetricData: each
group's DesiredWorkers and RunningWorkers, at the same resolution (what the 10 s scaling alarms read).

A broker that cannot be read, or answers too slowly to finish within the poll's slot: the poll
publishes nothing (the metrics go missing rather than drop to zero), the error is logged, the
remaining polls of the invocation still run, and the invocation then fails with
BrokerUnavailableError so that Lambda's Errors metric shows it. A key of the wrong type (a queue's
list that is a string, `unacked` that is not a hash): the poll publishes everything else, logs the
key and what it holds, and the invocation fails with BrokerDataError after its last poll.

With WORKER_GROUPS (JSON, written by the stack), each poll also starts the workers of a group whose
queues have tasks waiting while it has none (wake.py): logged, never failing the poll.

One invocation polls at a time: each takes a lease on the broker (logic.acquire_lease) for its own
run time, and one that finds the lease held ends at once, publishing nothing. An EventBridge
invocation is asynchronous: give the function no retries (retry_attempts=0), since the next
scheduled run polls again anyway.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import boto3
import redis
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from broker_access.client import tls_options
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from .deadline import CONNECTION_CLASSES, Deadline
from .logic import (
    InvocationReport,
    KeyProblem,
    QueueStats,
    acquire_lease,
    publish,
    release_lease,
    run_polls,
    storage_resolution,
    worker_metric_data,
)
from .settings import Settings, load_settings
from .wake import AWS_ERRORS, describe_services, wake, worker_counts

# Each socket operation waits at most BROKER_TIMEOUT_S, or less when the poll interval is short, so
# that a broker that does not answer fails the poll within half its slot, retries included
# (redis-py's default of 10 retries would take half a minute). A broker that answers slowly is cut
# at the end of the slot by the poll deadline (deadline.py).
BROKER_TIMEOUT_S = 2.0
BROKER_RETRIES = 2
# Seconds kept free before the function's timeout for the last poll and its PutMetricData call (tens
# of milliseconds when the broker answers). A broker that times out on the last poll may run the
# invocation into its timeout: an error either way, and that poll had nothing to publish.
FINISH_MARGIN_S = 3.0

# Its service from POWERTOOLS_SERVICE_NAME, which the stack sets.
logger = Logger()
settings: Settings = load_settings(os.environ)
_AWS_CONFIG = Config(connect_timeout=5, read_timeout=10, retries={"mode": "standard", "max_attempts": 3})
cloudwatch = boto3.client("cloudwatch", config=_AWS_CONFIG)
# Starting workers from zero must not outlast a poll's slot: one quick attempt, the next poll retries.
_WAKE_CONFIG = Config(connect_timeout=2, read_timeout=3, retries={"mode": "standard", "max_attempts": 2})
autoscaling = boto3.client("application-autoscaling", config=_WAKE_CONFIG)
ecs = boto3.client("ecs", config=_WAKE_CONFIG)


class BrokerUnavailableError(RuntimeError):
    """At least one poll of this invocation could not read the broker and published nothing."""


class BrokerDataError(RuntimeError):
    """Keys of the wrong type left some figures out of this invocation's polls (the rest published)."""


def broker_timeout_s(interval_s: int) -> float:
    """The socket timeout for polls `interval_s` apart: every attempt of a poll fits in half its slot."""
    return min(BROKER_TIMEOUT_S, interval_s / (2 * (1 + BROKER_RETRIES)))


def broker_client(deadline: Deadline) -> redis.Redis:
    """A Redis client for this invocation, not yet connected, whose I/O ends by `deadline`."""
    timeout = broker_timeout_s(settings.poll_interval_s)
    options: dict[str, Any] = {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.1, cap=1.0), retries=BROKER_RETRIES),
        "deadline": deadline,
    }
    if settings.broker_url is not None:
        scheme = settings.broker_url.split(":", 1)[0]
        pool = redis.ConnectionPool.from_url(
            settings.broker_url, connection_class=CONNECTION_CLASSES[scheme], **options
        )
        return redis.Redis(connection_pool=pool)
    pool = redis.ConnectionPool(
        connection_class=CONNECTION_CLASSES["rediss"], **tls_options(settings), **options
    )
    return redis.Redis(connection_pool=pool)


def _log_broker_error(polled_at: float, error: redis.RedisError) -> None:
    logger.error(
        "Broker unreachable or too slow: this poll published nothing",
        extra={"polled_at": polled_at, "queues": list(settings.queues)},
        exc_info=error,
    )


def _publish_worker_counts(stats: QueueStats) -> dict[str, tuple[int, int, int]] | None:
    """Publish each group's desired and running workers; the services' counts, None if unread."""
    groups = settings.worker_groups
    try:
        services = describe_services(ecs, groups)
    except AWS_ERRORS as error:
        # Missing worker counts scale nothing: the scaling alarms treat missing data as not breaching.
        logger.error("Could not read the worker groups' counts", extra={"error": _aws_error(error)})
        return None
    data = worker_metric_data(
        worker_counts(groups, services),
        stats.polled_at,
        storage_resolution=storage_resolution(settings.poll_interval_s),
    )
    try:
        publish(cloudwatch.put_metric_data, settings.metric_namespace, data)
    except AWS_ERRORS as error:
        logger.error("Could not publish the worker groups' counts", extra={"error": _aws_error(error)})
    return services


def _aws_error(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def _wake(stats: QueueStats) -> None:
    if not settings.worker_groups:
        return
    services = _publish_worker_counts(stats)
    report = wake(
        settings.worker_groups,
        stats.waiting,
        stats.in_flight_by_queue,
        autoscaling=autoscaling,
        ecs=ecs,
        cloudwatch=cloudwatch,
        services=services,
    )
    for group, minimum, reason in report.requests:
        logger.info(
            "Worker group minimum set", extra={"group": group, "min_capacity": minimum, "reason": reason}
        )
    for error in report.errors:
        # The FromZero alarm still starts workers, a minute or two later.
        logger.error("Could not start workers from zero", extra={"error": error})


def _log_key_problems(polled_at: float, problems: Sequence[KeyProblem]) -> None:
    logger.error(
        "Broker keys of the wrong type: their figures were left out, the rest published",
        extra={
            "polled_at": polled_at,
            "problems": [problem.describe() for problem in problems],
            "keys": [problem.key for problem in problems],
            "queues_left_out": sorted({problem.queue for problem in problems if problem.queue}),
        },
    )


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    """Poll the broker (once, or every POLL_INTERVAL_S for a minute) and publish each poll's metrics."""
    remaining_s = context.get_remaining_time_in_millis() / 1000
    deadline = time.time() + remaining_s - FINISH_MARGIN_S
    broker_deadline = Deadline()
    with broker_client(broker_deadline) as client:
        broker_deadline.expire_in(broker_timeout_s(settings.poll_interval_s) * (1 + BROKER_RETRIES))
        lease = acquire_lease(client, context.aws_request_id, remaining_s)
        broker_deadline.clear()
        if lease is False:
            logger.warning("Another invocation holds the publisher's lease: this one polls nothing")
            return {**InvocationReport().counts(), "lease_held_elsewhere": 1}
        try:
            report: InvocationReport = run_polls(
                redis_client=client,
                queues=settings.queues,
                put_metric_data=cloudwatch.put_metric_data,
                namespace=settings.metric_namespace,
                interval_s=settings.poll_interval_s,
                clock=time.time,
                sleep=time.sleep,
                deadline=deadline,
                on_broker_error=_log_broker_error,
                on_key_problems=_log_key_problems,
                broker_deadline=broker_deadline,
                after_poll=_wake,
                groups={group.name: group.queues for group in settings.worker_groups},
            )
        finally:
            if lease:
                broker_deadline.expire_in(broker_timeout_s(settings.poll_interval_s))
                release_lease(client, context.aws_request_id)
                broker_deadline.clear()
    summary = report.counts()
    logger.info("Polls finished", extra=summary)
    polls = report.failed_polls + report.published_polls
    if report.failed_polls:
        raise BrokerUnavailableError(
            f"{report.failed_polls} of {polls} polls could not read the broker and published nothing: "
            f"{report.errors[-1]}"
        )
    if report.partial_polls:
        raise BrokerDataError(
            f"{report.partial_polls} of {polls} polls left figures out for keys of the wrong type: "
            f"{'; '.join(report.problems)}"
        )
    return summary
