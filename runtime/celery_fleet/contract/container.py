"""What the stack gives every worker container, and what the runtime package reads from it."""

from __future__ import annotations

from typing import Final

# Used as is when set: local runs, tests, a broker the stack does not manage.
BROKER_URL_ENV: Final = "CELERY_FLEET_BROKER_URL"
# Set by the worker service: the replication group's primary endpoint and port, and the AUTH token
# that ECS injects from Secrets Manager.
BROKER_HOST_ENV: Final = "CELERY_FLEET_BROKER_HOST"
BROKER_PORT_ENV: Final = "CELERY_FLEET_BROKER_PORT"
BROKER_AUTH_TOKEN_ENV: Final = "CELERY_FLEET_BROKER_AUTH_TOKEN"

# The longest time limit of any worker group: every worker restores unacknowledged messages from the
# same hash, so each one's visibility timeout must cover the longest task in the fleet.
MAX_TASK_RUNTIME_ENV: Final = "CELERY_FLEET_MAX_TASK_RUNTIME_S"

# The worker group's own limits, the values of its --time-limit and --soft-time-limit: celery_fleet
# makes them the app's task_time_limit and task_soft_time_limit, because each task's own limit, not
# the command line's, is what the pool applies when it stops (an app limit below the command line's
# soft limit acknowledged long tasks as timed out at every SIGTERM).
TIME_LIMIT_ENV: Final = "CELERY_FLEET_TIME_LIMIT_S"
SOFT_TIME_LIMIT_ENV: Final = "CELERY_FLEET_SOFT_TIME_LIMIT_S"

# ECS on Fargate sends SIGTERM, then SIGKILL after the container's stopTimeout, 120 s at most.
FARGATE_MAX_STOP_TIMEOUT_S: Final = 120
