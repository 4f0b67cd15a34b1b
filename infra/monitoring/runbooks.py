"""The runbook sections alarms point to: one anchor per alarm kind, in docs/runbooks.md, and which
kinds page.

tests/docs checks that every alarm of every stage names one of these sections and that the section
exists, so an alarm cannot ship without its instructions. A new kind of alarm is a `Runbook` member
and its section (plus an entry in `PAGES` if it pages), then one `AlarmBook.add` call in the module
that owns the signal.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

RUNBOOK_FILE = "docs/runbooks.md"


class Severity(StrEnum):
    """PAGE: someone acts now, through the composite alarm. WARNING: someone looks today."""

    PAGE = "page"
    WARNING = "warning"


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


# The one list of paging alarm kinds: an alarm whose runbook is here pages, through the composite;
# every other alarm of the AlarmBook warns. docs/runbooks.md's "Paging alarm" section is checked
# against it and docs/alarms.md lists it (tests/docs).
PAGES: Final = (
    Runbook.BROKER_MEMORY_CRITICAL,
    Runbook.BROKER_EVICTIONS,
    Runbook.OLDEST_TASK_LATE,
    Runbook.BACKLOG_WITHOUT_WORKERS,
    Runbook.QUEUE_METRICS_MISSING,
    Runbook.FAILURE_RATE_HIGH,
)
# Sections of alarms made outside the AlarmBook: the composite, and the scaling alarms (no severity).
NOT_BOOKED: Final = (Runbook.PAGING, Runbook.SCALING_FROM_ZERO, Runbook.SCALING_IN_WHEN_IDLE)


def severity_of(runbook: Runbook) -> Severity:
    """The severity of an alarm whose description points to `runbook`."""
    if runbook in NOT_BOOKED:
        raise ValueError(
            f"runbook {runbook.value!r} belongs to an alarm outside the AlarmBook (the paging composite or a "
            f"scaling alarm); an AlarmBook alarm names any other section: {_booked()}"
        )
    return Severity.PAGE if runbook in PAGES else Severity.WARNING


def _booked() -> str:
    return ", ".join(r.value for r in Runbook if r not in NOT_BOOKED)


def runbook_link(anchor: Runbook) -> str:
    """The text alarm descriptions end with; tests parse the anchor back out of it."""
    return f"Runbook: {RUNBOOK_FILE}#{anchor.value}"
