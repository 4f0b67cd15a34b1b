"""Every environment variable the queue-depth publisher reads, by the name the stack sets it under.

Standard library only: infra/queue_depth/construct.py imports it at synth (through
infra/lambda_code.py) to set the names, the publisher at cold start (queue_depth.settings) to read
them. The values are described in queue_depth.handler.
"""

from __future__ import annotations

from typing import Final

from celery_fleet.contract import broker_access_env as broker

QUEUES: Final = "QUEUES"
METRIC_NAMESPACE: Final = "METRIC_NAMESPACE"
POLL_INTERVAL_S: Final = "POLL_INTERVAL_S"
# Set only by QueueDepthPublisher.start_workers_from_zero.
WORKER_GROUPS: Final = "WORKER_GROUPS"
# Read by Powertools' Logger, for the `service` key of every log line.
POWERTOOLS_SERVICE_NAME: Final = "POWERTOOLS_SERVICE_NAME"

# What queue_depth.settings reads, and what Powertools reads.
SETTINGS_READS: Final = frozenset({QUEUES, METRIC_NAMESPACE, POLL_INTERVAL_S, WORKER_GROUPS}) | broker.READS
POWERTOOLS_READS: Final = frozenset({POWERTOOLS_SERVICE_NAME})
READS: Final = SETTINGS_READS | POWERTOOLS_READS
# What the stack sets on every publisher; the others are optional (WORKER_GROUPS) or for local runs
# (BROKER_URL).
STACK_SETS: Final = (
    frozenset({QUEUES, METRIC_NAMESPACE, POLL_INTERVAL_S, POWERTOOLS_SERVICE_NAME}) | broker.STACK_SETS
)
