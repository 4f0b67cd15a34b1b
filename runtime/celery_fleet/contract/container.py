"""What the stack gives every worker container besides its environment variables.

The variables themselves are named in `celery_fleet.contract.worker_env`.
"""

from __future__ import annotations

from typing import Final

# ECS on Fargate sends SIGTERM, then SIGKILL after the container's stopTimeout, 120 s at most.
FARGATE_MAX_STOP_TIMEOUT_S: Final = 120
