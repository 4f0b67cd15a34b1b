"""The Celery app the prefork keeping test runs in a real `celery worker` process.

Kept messages go to a directory (`KEPT_DIR`): the worker is another process, out of moto's reach.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery import Celery
from celery_fleet import configure

QUEUE = "replay-prefork"


class DirectoryStore:
    """A `celery_fleet.keep.MessageStore` writing one file per key."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def put(self, key: str, data: bytes) -> None:
        path = self.directory / key.replace("/", "__")
        path.with_suffix(".tmp").write_bytes(data)
        path.with_suffix(".tmp").rename(path)


app = Celery("replay_prefork")
configure(
    app,
    max_task_runtime_s=30,
    max_countdown_s=5,
    stop_timeout_s=4,
    shutdown_margin_s=2,
    healthcheck=False,
    task_events=False,
    failed_message_store=DirectoryStore(os.environ["KEPT_DIR"]),
    task_default_queue=QUEUE,
)


def fail(payload: str) -> None:
    raise ConnectionError(f"dependency unavailable ({len(payload)} characters)")


def sleep(seconds: float) -> None:
    time.sleep(seconds)


app.task(name="prefork.fail")(fail)
# Killed by the pool at its hard limit: the worker's main process reports that failure.
app.task(name="prefork.sleep", time_limit=1)(sleep)
