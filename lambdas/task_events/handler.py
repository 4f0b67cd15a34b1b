"""Lambda entry point, fed by a CloudWatch Logs subscription filter on the worker log group.

Environment (validated at cold start): METRIC_NAMESPACE, the stage's metric namespace;
FAILED_TASKS_LOG_GROUP, where failed-task records go. An invocation raises only when the failure
records could not be written after the client's retries; Lambda's asynchronous retries and its
on-failure destination take it from there. Bad input never raises: it is counted as MalformedEvents.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from celery_fleet.contract.task_metrics import MALFORMED_EVENTS

from .logic import FailureLog, ingest
from .models import Settings

SETTINGS = Settings.from_environ(os.environ)

logger = Logger(service="celery-fleet-task-events")
# No service dimension: alarms read MalformedEvents by name alone.
metrics = Metrics(namespace=SETTINGS.metric_namespace, service="")

# Standard retry mode backs off on ThrottlingException and 5xx answers; ten attempts ride out a
# few seconds of throttling, well inside the function's timeout.
_client = boto3.client("logs", config=Config(retries={"mode": "standard", "max_attempts": 10}))
failures = FailureLog(_client, SETTINGS.failed_tasks_log_group, log=logger)


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int | bool]:
    result = ingest(event, failures=failures, namespace=SETTINGS.metric_namespace, log=logger)
    if not result.control_message:
        metrics.add_metric(name=MALFORMED_EVENTS, unit=MetricUnit.Count, value=result.malformed)
    logger.info("task events ingested", extra=result.as_dict())
    return result.as_dict()
