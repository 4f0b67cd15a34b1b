"""Every environment variable the replay function reads, by the name the stack sets it under.

Standard library only: infra/replay/construct.py imports it at synth (through infra/lambda_code.py)
to set the names, the function at cold start (replay.settings) to read them.
"""

from __future__ import annotations

from typing import Final

from celery_fleet.contract import broker_access_env as broker

# The failed-messages bucket: kept messages under `messages/`, replay markers under `replays/`.
FAILED_MESSAGES_BUCKET: Final = "FAILED_MESSAGES_BUCKET"
# Read by Powertools' Logger, for the `service` key of every log line (the audit line's too).
POWERTOOLS_SERVICE_NAME: Final = "POWERTOOLS_SERVICE_NAME"

# What replay.settings reads, and what Powertools reads.
SETTINGS_READS: Final = frozenset({FAILED_MESSAGES_BUCKET}) | broker.READS
POWERTOOLS_READS: Final = frozenset({POWERTOOLS_SERVICE_NAME})
READS: Final = SETTINGS_READS | POWERTOOLS_READS
# What the stack sets; BROKER_URL is for local runs and tests only.
STACK_SETS: Final = frozenset({FAILED_MESSAGES_BUCKET, POWERTOOLS_SERVICE_NAME}) | broker.STACK_SETS
