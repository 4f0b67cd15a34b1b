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
# Tasks delivered to a worker and not yet acknowledged (kombu's `unacked` hash), published twice:
# - without a dimension: broker-wide, `HLEN unacked`, every entry whatever its queue;
# - with QUEUE_DIMENSION, for every configured queue (0 included): the entries whose routing key is
#   the queue's name. That is Celery's default routing (a queue's routing key is its name); a task
#   sent with another routing key, or an entry that cannot be read, counts only broker-wide. No
#   per-queue data point in a poll that finds more entries than the publisher reads at once
#   (queue_depth.logic.MAX_UNACKED_READ): missing data, never a guess.
IN_FLIGHT_TASKS = "InFlightTasks"

# Dimension on the per-group figures: the worker group's name as configured. WaitingTasks and
# InFlightTasks are published once more per worker group, summed over the group's queues, so that a
# scaling alarm reads one metric per figure whatever the number of queues (an alarm's math takes at
# most 10 metrics). No group point when a queue of the group had no figure in that poll.
GROUP_DIMENSION = "WorkerGroup"
# Worker tasks of a group's ECS service as DescribeServices gives them at each poll (GROUP_DIMENSION
# only): running, and desired (what ECS is asked to run, starting tasks included). Published on every
# poll, 0 included, at the poll's resolution, so that the scaling alarms can take 10 s periods, which
# Container Insights' per-minute RunningTaskCount cannot feed. No point when ECS could not be read:
# missing data, never a zero.
RUNNING_WORKERS = "RunningWorkers"
DESIRED_WORKERS = "DesiredWorkers"

# Seconds between two polls when the stage asks for high-resolution metrics.
HIGH_RESOLUTION_PERIOD_S = 10


def namespace(stage: str) -> str:
    """The CloudWatch namespace of one stage's celery-fleet metrics."""
    return f"CeleryFleet/{stage}"
