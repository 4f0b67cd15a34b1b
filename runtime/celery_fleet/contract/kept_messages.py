"""Kept failed messages: where a worker keeps a failed task's message, and how replay finds it.

For every task that failed for good, the worker writes one S3 object (the stage's failed-messages
bucket, SSE-KMS) holding the message exactly as the broker held it. The failure line, and so the
failure record in CloudWatch Logs, carries the object's key (`te.F_KEPT_MESSAGE`); the replay
function reads it, puts the message back on its queue, and writes a replay marker beside it.

Object body (`FORMAT_VERSION` 1), a JSON object:

| key | meaning |
|---|---|
| `v` | `FORMAT_VERSION` |
| `task_id`, `task` | the failed task's id and name |
| `exchange`, `routing_key` | the delivery's exchange and routing key (kombu's `unacked` entry) |
| `kept_at` | Unix seconds when the worker kept it |
| `message` | the message as the broker held it: kombu's JSON text (body, headers, properties) |

Standard library only: the worker package, the replay Lambda and the operator CLI all import it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

FORMAT_VERSION: Final = 1


MESSAGES_PREFIX: Final = "messages/"
# One marker object per kept message replayed: what makes replay at-most-once. Written with
# `If-None-Match: *`, so two replays racing for the same message cannot both win.
REPLAYS_PREFIX: Final = "replays/"

# Header the replay sets on a replayed message: the id of the task it replays. The worker's task
# events report it (`te.F_REPLAY_OF`), which links every attempt of a task to its original.
REPLAY_OF_HEADER: Final = "celery_fleet_replay_of"

# Task ids are chosen by whoever sends the task: only a plain one becomes part of a key as is.
_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def message_key(task_id: str) -> str:
    """The S3 key of the kept message of `task_id` (one per task id: a task fails for good once)."""
    if _PLAIN_ID.fullmatch(task_id) and ".." not in task_id:
        return f"{MESSAGES_PREFIX}{task_id}.json"
    digest = hashlib.sha256(task_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{MESSAGES_PREFIX}sha256-{digest}.json"


def replay_marker_key(kept_key: str) -> str:
    """The key of the marker that says the message at `kept_key` was replayed."""
    name = kept_key.removeprefix(MESSAGES_PREFIX)
    return f"{REPLAYS_PREFIX}{name}"
