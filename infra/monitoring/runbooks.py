"""The runbook sections alarms point to: one anchor per alarm kind, in docs/runbooks.md.

tests/docs checks that every alarm of every stage names one of these sections and that the section
exists, so an alarm cannot ship without its instructions.
"""

from __future__ import annotations

from enum import StrEnum

RUNBOOK_FILE = "docs/runbooks.md"


class Runbook(StrEnum):
    """GitHub-style anchors of the sections of docs/runbooks.md."""

    PAGING = "paging-alarm"
    BROKER_MEMORY_HIGH = "broker-memory-high"
    BROKER_MEMORY_CRITICAL = "broker-memory-critical"
    BROKER_EVICTIONS = "broker-evictions"
    BROKER_CPU_HIGH = "broker-engine-cpu-high"
    BROKER_CONNECTIONS_HIGH = "broker-connections-high"
    BROKER_REPLICATION_LAG = "broker-replication-lag"
    BROKER_AUTHENTICATION_FAILURES = "broker-authentication-failures"
    OLDEST_TASK_LATE = "oldest-task-late"
    BACKLOG_WITHOUT_WORKERS = "backlog-without-workers"
    QUEUE_METRICS_MISSING = "queue-metrics-missing"
    QUEUE_DEPTH_PUBLISHER_ERRORS = "queue-depth-publisher-errors"
    FAILURE_RATE_HIGH = "failure-rate-high"
    RETRY_SURGE = "retry-surge"
    TIME_LIMIT_EXCEEDED = "tasks-killed-by-time-limit"
    WORKER_LOST = "worker-processes-lost"
    WORKER_CPU_HIGH = "worker-cpu-high"
    WORKER_MEMORY_HIGH = "worker-memory-high"
    WORKER_TASKS_NOT_STARTING = "worker-tasks-not-starting"
    INGEST_ERRORS = "task-event-ingest-errors"
    INGEST_THROTTLES = "task-event-ingest-throttles"
    INGEST_DEAD_LETTERS = "task-event-dead-letters"
    MALFORMED_EVENTS = "malformed-task-events"
    FORGED_EVENTS = "forged-task-events"
    # The scaling alarms of infra/workers/scaling.py write these anchors in their descriptions.
    SCALING_FROM_ZERO = "scaling-out-from-zero"
    SCALING_IN_WHEN_IDLE = "scaling-in-when-idle"


def runbook_link(anchor: Runbook) -> str:
    """The text alarm descriptions end with; tests parse the anchor back out of it."""
    return f"Runbook: {RUNBOOK_FILE}#{anchor.value}"
