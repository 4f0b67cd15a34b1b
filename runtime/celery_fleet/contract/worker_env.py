"""The worker container's environment: every variable the worker side reads, named once.

The stack sets them (infra/workers), the runtime package reads them (celery_fleet), and both import
the names from here. `ALL` enumerates them; tests/contract checks that each one is read, so a
variable nothing reads cannot stay here (nor be set by the stack for nothing).

Standard library only: the stacks import it at synth, without Celery.
"""

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

# The task-event signing key (an ECS secret from Secrets Manager). The emitter reads it once at
# install and removes it from the environment, so that task code printing `os.environ`, or a
# subprocess, does not pass it on.
EVENT_KEY_ENV: Final = "CELERY_FLEET_TASK_EVENT_KEY"

# The bucket to keep failed tasks' messages in (celery_fleet.keep). Unset: messages are not kept.
FAILED_MESSAGES_BUCKET_ENV: Final = "CELERY_FLEET_FAILED_MESSAGES_BUCKET"

# The heartbeat file the worker touches while it consumes and `celery-fleet-healthcheck` reads, and
# how old the check lets it be (the check's own default otherwise).
HEALTH_FILE_ENV: Final = "CELERY_FLEET_HEALTH_FILE"
HEALTH_MAX_AGE_ENV: Final = "CELERY_FLEET_HEALTH_MAX_AGE_S"

# Set by ECS itself in every task: the agent endpoint that takes task scale-in protection
# (celery_fleet.protection). Outside ECS it is unset and protection is off.
ECS_AGENT_URI_ENV: Final = "ECS_AGENT_URI"

# Read by billiard, not by celery_fleet: "SIGQUIT" makes the SIGTERM that ECS sends start Celery's
# soft shutdown (billiard/common.py, at import) instead of a warm shutdown that waits for the SIGKILL.
REMAP_SIGTERM_ENV: Final = "REMAP_SIGTERM"
REMAP_SIGTERM_VALUE: Final = "SIGQUIT"

# What celery_fleet's own code reads.
READ_BY_CELERY_FLEET: Final = (
    BROKER_URL_ENV,
    BROKER_HOST_ENV,
    BROKER_PORT_ENV,
    BROKER_AUTH_TOKEN_ENV,
    MAX_TASK_RUNTIME_ENV,
    TIME_LIMIT_ENV,
    SOFT_TIME_LIMIT_ENV,
    EVENT_KEY_ENV,
    FAILED_MESSAGES_BUCKET_ENV,
    HEALTH_FILE_ENV,
    HEALTH_MAX_AGE_ENV,
    ECS_AGENT_URI_ENV,
)
# What Celery (billiard) reads, and a worker needs set.
READ_BY_CELERY: Final = (REMAP_SIGTERM_ENV,)
ALL: Final = frozenset(READ_BY_CELERY_FLEET + READ_BY_CELERY)
# Values the stack passes as ECS secrets (from Secrets Manager), never as plain environment.
SECRETS: Final = frozenset({BROKER_AUTH_TOKEN_ENV, EVENT_KEY_ENV})
# Set by ECS, never by the stack.
SET_BY_ECS: Final = frozenset({ECS_AGENT_URI_ENV})
