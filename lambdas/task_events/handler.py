"""Lambda entry point, fed by a CloudWatch Logs subscription filter on the worker log group.

Environment (task_events.environment's names; validated at cold start): METRIC_NAMESPACE, the
stage's metric namespace; FAILED_TASKS_LOG_GROUP, where failed-task records go; QUEUES, the stage's
queues; EVENT_KEY_SECRET_ARN, the secret whose current and previous values are the signing keys (read
at cold start); POWERTOOLS_SERVICE_NAME, the `service` of every log line, and
POWERTOOLS_METRICS_NAMESPACE, the pipeline counts' namespace (equal to METRIC_NAMESPACE), both read by
Powertools. An invocation raises only when CloudWatch Logs refuses a write after the client's
retries; Lambda's asynchronous retries and its on-failure destination take it from there. Bad
input never raises: it is counted as MalformedEvents or ForgedEvents.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from .logic import Dimensions, FailureLog, SigningKeys, ingest
from .models import Settings

SETTINGS = Settings.from_environ(os.environ)

# Its service from POWERTOOLS_SERVICE_NAME, the metrics' namespace from POWERTOOLS_METRICS_NAMESPACE.
logger = Logger()
# No service dimension (an explicit "" stops Metrics taking POWERTOOLS_SERVICE_NAME): alarms read the
# pipeline counts by name alone.
metrics = Metrics(service="")

# Standard retry mode backs off on ThrottlingException and 5xx answers; ten attempts ride out a
# few seconds of throttling, well inside the function's timeout.
_config = Config(retries={"mode": "standard", "max_attempts": 10})
failures = FailureLog(boto3.client("logs", config=_config), SETTINGS.failed_tasks_log_group, log=logger)
keys = SigningKeys(boto3.client("secretsmanager", config=_config), SETTINGS.event_key_secret_arn)
dimensions = Dimensions(SETTINGS.queues)


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int | bool]:
    result = ingest(
        event,
        failures=failures,
        keys=keys,
        dimensions=dimensions,
        namespace=SETTINGS.metric_namespace,
        log=logger,
    )
    if not result.control_message:
        # Added only once ingest has returned: a batch that raises is retried, and counts nothing now.
        for name, value in result.pipeline_counts().items():
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    logger.info("task events ingested", extra=result.as_dict())
    return result.as_dict()
