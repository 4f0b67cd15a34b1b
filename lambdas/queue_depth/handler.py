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

Each poll reads every queue in one Redis round trip and publishes in one PutMetricData call (more
only past 1000 items, 333 queues): WaitingTasks, OldestWaitingTaskAge and InFlightTasks per queue,
and InFlightTasks once more without a dimension, broker-wide.

A broker that cannot be read: the poll publishes nothing (the metrics go missing rather than drop to
zero), the error is logged, the remaining polls of the invocation still run, and the invocation then
fails with BrokerUnavailableError so that Lambda's Errors metric shows it. An EventBridge invocation
is asynchronous: give the function no retries (retry_attempts=0), since the next scheduled run polls
again anyway and a retry would overlap it.
"""

from __future__ import annotations

import os
import time
from typing import Any

import boto3
import redis
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from .logic import InvocationReport, run_polls
from .settings import Settings, SettingsError, load_settings

# A broker that does not answer costs a poll at most (1 + BROKER_RETRIES) x BROKER_TIMEOUT_S plus
# about a second of back-off: redis-py's default (10 retries) would take half a minute.
BROKER_TIMEOUT_S = 2.0
BROKER_RETRIES = 2
# Seconds kept free before the function's timeout for the last poll and its PutMetricData call (tens
# of milliseconds when the broker answers). A broker that times out on the last poll may run the
# invocation into its timeout: an error either way, and that poll had nothing to publish.
FINISH_MARGIN_S = 3.0
# A rotated AUTH token is picked up within this many seconds, without a cold start.
AUTH_TOKEN_MAX_AGE_S = 300

logger = Logger(service="queue-depth-publisher")
settings: Settings = load_settings(os.environ)
cloudwatch = boto3.client(
    "cloudwatch",
    config=Config(connect_timeout=5, read_timeout=10, retries={"mode": "standard", "max_attempts": 3}),
)


class BrokerUnavailableError(RuntimeError):
    """At least one poll of this invocation could not read the broker and published nothing."""


def broker_client() -> redis.Redis:
    """A Redis client for this invocation, not yet connected."""
    timeouts: dict[str, Any] = {
        "socket_connect_timeout": BROKER_TIMEOUT_S,
        "socket_timeout": BROKER_TIMEOUT_S,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.1, cap=1.0), retries=BROKER_RETRIES),
    }
    if settings.broker_url is not None:
        return redis.Redis.from_url(settings.broker_url, **timeouts)
    host, port, secret_arn = settings.broker_host, settings.broker_port, settings.broker_auth_secret_arn
    if host is None or port is None or secret_arn is None:
        raise SettingsError("set BROKER_URL, or BROKER_HOST, BROKER_PORT and BROKER_AUTH_SECRET_ARN")
    token = parameters.get_secret(secret_arn, max_age=AUTH_TOKEN_MAX_AGE_S)
    return redis.Redis(
        host=host,
        port=port,
        password=token,
        ssl=True,
        ssl_cert_reqs="required",
        ssl_check_hostname=True,
        **timeouts,
    )


def _log_broker_error(polled_at: float, error: redis.RedisError) -> None:
    logger.error(
        "Broker unreachable: this poll published nothing",
        extra={"polled_at": polled_at, "queues": list(settings.queues)},
        exc_info=error,
    )


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    """Poll the broker (once, or every POLL_INTERVAL_S for a minute) and publish each poll's metrics."""
    deadline = time.time() + context.get_remaining_time_in_millis() / 1000 - FINISH_MARGIN_S
    with broker_client() as client:
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
        )
    summary = report.counts()
    logger.info("Polls finished", extra=summary)
    if report.failed_polls:
        raise BrokerUnavailableError(
            f"{report.failed_polls} of {report.failed_polls + report.published_polls} polls could not "
            f"read the broker and published nothing: {report.errors[-1]}"
        )
    return summary
