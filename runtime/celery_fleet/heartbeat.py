"""A consumer bootstep that touches the health file while the worker consumes.

The touch runs on the consumer's timer. With the prefork pool that timer is driven by the worker's
event loop (`kombu.asynchronous.Hub`), which only turns while the consumer is connected and
consuming: when the broker connection is lost Celery restarts the consumer blueprint, which stops
this step until the connection is back, and a blocked main process fires no timer at all. Each
touch also PINGs the broker through the consumer's own connection pool, so a connection that looks
open but no longer answers stops the touches too. The file's age is therefore the time since the
worker was last seen consuming; `celery_fleet.health` compares it with a maximum.

(With the solo or threads pool the timer is a thread of its own: only the PING is proof there.)
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import bootsteps

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger("celery_fleet")


class ConsumingHeartbeat(bootsteps.StartStopStep):  # type: ignore[misc]
    """Touches `path` every `interval_s` seconds while the consumer runs and the broker answers."""

    # After Tasks: the task consumer exists and its channel can reach the broker.
    requires = ("celery.worker.consumer.tasks:Tasks",)
    path = ""
    interval_s = 10.0

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._tref: Any = None

    def start(self, c: Any) -> None:
        self._cancel()
        self._tref = c.timer.call_repeatedly(self.interval_s, self.beat, (c,))

    def stop(self, c: Any) -> None:
        self._cancel()

    def shutdown(self, c: Any) -> None:
        self._cancel()
        # A stopped worker must not look healthy to a check that runs after it (local runs reuse
        # the path; in ECS the container goes with it).
        Path(self.path).unlink(missing_ok=True)

    def beat(self, c: Any) -> None:
        if broker_answers(c):
            write_heartbeat(Path(self.path), hostname=str(getattr(c, "hostname", "")))

    def _cancel(self) -> None:
        if self._tref is not None:
            self._tref.cancel()
            self._tref = None


def broker_answers(consumer: Any) -> bool:
    """Whether the broker answers a PING on the consumer's connection pool (Redis transport).

    Other transports have no PING here; their connection's own state is used.
    """
    channel = getattr(getattr(consumer, "task_consumer", None), "channel", None)
    acquire = getattr(channel, "conn_or_acquire", None)
    if acquire is None:
        connection = getattr(consumer, "connection", None)
        return bool(connection is not None and connection.connected)
    try:
        with acquire() as client:
            return bool(client.ping())
    except Exception as exc:
        # Any failure means "not consuming"; raising would only stop the timer.
        logger.warning("celery_fleet: broker did not answer the health PING: %r", exc)
        return False


def write_heartbeat(path: Path, *, hostname: str) -> None:
    """Replace `path` atomically, so a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"at": time.time(), "hostname": hostname, "pid": os.getpid()})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def install_heartbeat(app: Celery, *, path: str, interval_s: float) -> None:
    """Add the heartbeat step to `app`'s consumer, replacing one added by an earlier call."""
    steps: set[type[Any]] = app.steps["consumer"]
    for step in [step for step in steps if issubclass(step, ConsumingHeartbeat)]:
        steps.discard(step)
    step_cls = type("ConsumingHeartbeat", (ConsumingHeartbeat,), {"path": path, "interval_s": interval_s})
    steps.add(step_cls)
