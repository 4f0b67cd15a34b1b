"""The sample worker's Celery app: `celery -A sample_app.app worker` (the module's `app`).

Broker from the environment the worker service sets (or CELERY_FLEET_BROKER_URL locally); every
production setting from `celery_fleet.configure`.
"""

from __future__ import annotations

import celery_fleet
from celery import Celery

DEFAULT_QUEUE = "default"
# Sub-tasks of a request: many and short, on their own queue so that they can be scaled (and
# watched) apart from the requests that create them.
BULK_QUEUE = "bulk"

app = Celery("sample_app", include=["sample_app.tasks"])
app.conf.update(
    task_default_queue=DEFAULT_QUEUE,
    task_routes={
        "sample_app.tasks.process_item": {"queue": BULK_QUEUE},
        "sample_app.tasks.fetch_external": {"queue": BULK_QUEUE},
    },
)
FLEET = celery_fleet.configure(
    app,
    # No max_task_runtime_s: in a worker the group's time_limit_s and soft_time_limit_s (from the
    # stage config, through the container's environment) are the tasks' limits, the same values as
    # the worker's --time-limit and --soft-time-limit. A smaller limit here once made every SIGTERM
    # acknowledge tasks that had run longer than it as timed out (docs/runtime.md#time-limits).
    # fetch_external backs off for at most retry_backoff_max (RETRY_EXTERNAL: 600 s).
    max_countdown_s=600,
)
