"""Every environment variable the task-event ingester reads, by the name the stack sets it under.

Standard library only: infra/task_events/construct.py imports it at synth (through
infra/lambda_code.py) to set the names, the function at cold start (task_events.models.Settings and
Powertools) to read them.
"""

from __future__ import annotations

from typing import Final

# The stage's metric namespace: the task metrics' (EMF documents the ingester writes itself).
METRIC_NAMESPACE: Final = "METRIC_NAMESPACE"
# Where failed-task records go.
FAILED_TASKS_LOG_GROUP: Final = "FAILED_TASKS_LOG_GROUP"
# The stage's configured Celery queues, comma-separated: the only values of the Queue dimension.
QUEUES: Final = "QUEUES"
# The Secrets Manager secret holding the signing key (its ARN).
EVENT_KEY_SECRET_ARN: Final = "EVENT_KEY_SECRET_ARN"
# Read by Powertools' Logger, for the `service` key of every log line.
POWERTOOLS_SERVICE_NAME: Final = "POWERTOOLS_SERVICE_NAME"
# Read by Powertools' Metrics: the pipeline counts' namespace. The settings hold it to METRIC_NAMESPACE.
POWERTOOLS_METRICS_NAMESPACE: Final = "POWERTOOLS_METRICS_NAMESPACE"

# What task_events.models.Settings reads, and what Powertools reads.
SETTINGS_READS: Final = frozenset(
    {METRIC_NAMESPACE, FAILED_TASKS_LOG_GROUP, QUEUES, EVENT_KEY_SECRET_ARN, POWERTOOLS_METRICS_NAMESPACE}
)
POWERTOOLS_READS: Final = frozenset({POWERTOOLS_SERVICE_NAME, POWERTOOLS_METRICS_NAMESPACE})
READS: Final = SETTINGS_READS | POWERTOOLS_READS
# The stack sets every one.
STACK_SETS: Final = READS
