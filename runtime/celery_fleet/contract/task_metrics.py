"""The task metrics the ingest Lambda writes (as EMF) and the alarms and dashboards read.

Same per-stage namespace as the queue metrics: `celery_fleet.contract.queue_metrics.namespace(stage)`,
given to the Lambda as METRIC_NAMESPACE. Each per-task metric is published under two dimension sets,
`DIMENSION_SETS`: (TaskName, Queue) for dashboards per task, and (Queue) alone for alarms per queue,
which the stacks can name from the stage's queue list without knowing the task names.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from celery_fleet.contract.queue_metrics import QUEUE_DIMENSION
from celery_fleet.contract.task_events import EventType

TASK_NAME_DIMENSION: Final = "TaskName"
DIMENSION_SETS: Final = ((TASK_NAME_DIMENSION, QUEUE_DIMENSION), (QUEUE_DIMENSION,))
# Dimension value for an event that names no queue (a message rejected before routing was known).
UNKNOWN_QUEUE: Final = "unknown"
UNKNOWN_TASK: Final = "unknown"

# Counts (unit Count), one per outcome: summed per dimension set and minute.
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
RETRIED: Final = "Retried"
REVOKED: Final = "Revoked"
REJECTED: Final = "Rejected"
TIME_LIMIT_EXCEEDED: Final = "TimeLimitExceeded"
WORKER_LOST: Final = "WorkerLost"

COUNT_BY_EVENT: Final = MappingProxyType(
    {
        EventType.SUCCEEDED: SUCCEEDED,
        EventType.FAILED: FAILED,
        EventType.RETRIED: RETRIED,
        EventType.REVOKED: REVOKED,
        EventType.REJECTED: REJECTED,
        EventType.TIME_LIMIT_EXCEEDED: TIME_LIMIT_EXCEEDED,
        EventType.WORKER_LOST: WORKER_LOST,
    }
)

# Seconds (unit Seconds), one value per task event that has them, so CloudWatch computes
# percentiles (p50, p99) as well as averages and maxima.
RUNTIME: Final = "Runtime"
QUEUE_WAIT: Final = "QueueWait"

# Lines the Lambda could not use (bad payload, bad JSON, unknown schema version, missing fields).
# Published without dimensions, once per invocation, 0 included.
MALFORMED_EVENTS: Final = "MalformedEvents"
