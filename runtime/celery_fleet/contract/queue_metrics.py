"""The queue metrics the queue-depth publisher writes and the worker scaling policies read.

One namespace per stage (`CeleryFleet/<stage>`), given to the publisher as METRIC_NAMESPACE.
"""

from __future__ import annotations

# Header stamped on every published task (celery_fleet.configure): the send time, Unix seconds as a
# float. The publisher derives the oldest waiting task's age from it; monitoring, the queue wait.
SENT_AT_HEADER = "celery_fleet_sent_at"

# Dimension on the per-queue metrics: the Celery queue name as configured.
QUEUE_DIMENSION = "Queue"

# Tasks waiting in the queue: the bare list plus its priority siblings.
WAITING_TASKS = "WaitingTasks"
# Age in seconds of the oldest waiting task (from its send-time stamp). No data point when the queue
# is empty or its oldest message carries no stamp.
OLDEST_TASK_AGE = "OldestWaitingTaskAge"
# Tasks delivered to a worker and not yet acknowledged (`HLEN unacked`): broker-wide, so published
# without a queue dimension.
IN_FLIGHT_TASKS = "InFlightTasks"

# Seconds between two polls when the stage asks for high-resolution metrics.
HIGH_RESOLUTION_PERIOD_S = 10


def namespace(stage: str) -> str:
    """The CloudWatch namespace of one stage's celery-fleet metrics."""
    return f"CeleryFleet/{stage}"
