"""The task metrics the ingest Lambda writes (as EMF) and the alarms and dashboards read.

Same per-stage namespace as the queue metrics: `celery_fleet.contract.queue_metrics.namespace(stage)`,
given to the Lambda as METRIC_NAMESPACE. Each per-task metric is published under two dimension sets,
`DIMENSION_SETS`: (TaskName, Queue) for dashboards per task, and (Queue) alone for alarms per queue,
which the stacks can name from the stage's queue list without knowing the task names.

Cardinality is bounded: the Queue dimension takes only the stage's configured queues (the Lambda's
QUEUES environment variable; any other routing key is `OTHER_QUEUE`), each ingester instance admits
at most `MAX_TASK_NAMES_PER_MINUTE` task names per minute (the rest are `OTHER_TASK`, counted as
`FOLDED_TASK_NAMES`), names that come from a message rather than the worker's registry are
`UNKNOWN_TASK`, and every dimension value is printable ASCII of at most `MAX_DIMENSION_CHARS`.
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
# Dimension values for a routing key that is not a configured queue, and for task names past the cap.
OTHER_QUEUE: Final = "other"
OTHER_TASK: Final = "other"
# Per ingester instance and minute of events. A well-behaved app has a few dozen task names; the cap
# only stops a runaway (names built from data) from turning into thousands of metrics.
MAX_TASK_NAMES_PER_MINUTE: Final = 200
MAX_DIMENSION_CHARS: Final = 255

# Counts (unit Count), one per outcome: summed per dimension set and minute.
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
RETRIED: Final = "Retried"
REVOKED: Final = "Revoked"
REJECTED: Final = "Rejected"
TIME_LIMIT_EXCEEDED: Final = "TimeLimitExceeded"
WORKER_LOST: Final = "WorkerLost"
POISON_MESSAGES: Final = "PoisonMessages"
UNKNOWN_TASKS: Final = "UnknownTasks"

COUNT_BY_EVENT: Final = MappingProxyType(
    {
        EventType.SUCCEEDED: SUCCEEDED,
        EventType.FAILED: FAILED,
        EventType.RETRIED: RETRIED,
        EventType.REVOKED: REVOKED,
        EventType.REJECTED: REJECTED,
        EventType.TIME_LIMIT_EXCEEDED: TIME_LIMIT_EXCEEDED,
        EventType.WORKER_LOST: WORKER_LOST,
        EventType.POISON_MESSAGE: POISON_MESSAGES,
        EventType.UNKNOWN_TASK: UNKNOWN_TASKS,
    }
)

# Seconds (unit Seconds), one value per task event that has them, so CloudWatch computes
# percentiles (p50, p99) as well as averages and maxima.
RUNTIME: Final = "Runtime"
QUEUE_WAIT: Final = "QueueWait"

# Published without dimensions, once per invocation, 0 included:
# - signed lines the Lambda could not use (bad JSON, unknown schema version, a field out of bounds),
#   and undecodable payloads;
MALFORMED_EVENTS: Final = "MalformedEvents"
# - lines that claim to be task events without a valid MAC: printed, logged or raised by a task, or
#   written by a worker without the stage's key. Never counted as outcomes;
FORGED_EVENTS: Final = "ForgedEvents"
# - failure records CloudWatch Logs would not take (too old or too new for the log group);
FAILURE_RECORDS_DROPPED: Final = "FailureRecordsDropped"
# - events whose task name was folded into OTHER_TASK by the per-minute cap.
FOLDED_TASK_NAMES: Final = "FoldedTaskNames"
PIPELINE_COUNTS: Final = (MALFORMED_EVENTS, FORGED_EVENTS, FAILURE_RECORDS_DROPPED, FOLDED_TASK_NAMES)
