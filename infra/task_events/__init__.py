"""Task-event monitoring: worker event lines into metrics and a searchable failed-task log."""

from infra.task_events.construct import TaskEventIngester
from infra.task_events.key import TaskEventKey
from infra.task_events.metrics import TaskMetrics

__all__ = ["TaskEventIngester", "TaskEventKey", "TaskMetrics"]
