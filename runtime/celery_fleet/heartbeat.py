"""A consumer bootstep that touches the health file while the worker consumes.

The touch runs on the consumer's timer. With the prefork pool that timer is driven by the worker's
event loop (`kombu.asynchronous.Hub`), which only turns while the consumer is connected and
consuming: when the broker connection is lost Celery restarts the consumer blueprint, which stops
this step until the connection is back, and a blocked main process fires no timer at all. Each
touch also PINGs the broker through the consumer's own connection pool, so a connection that looks
open but no longer answers stops the touches too. The file's age is therefore the time since the
worker was last seen consuming; `celery_fleet.health` compares it with a maximum.

A connection that answers is not yet a consumer that fetches: a consumer whose fetch (BRPOP) never
returns, or that was cancelled, still has a turning event loop and a pool connection that answers
PING. So each touch also asks whether the worker should have fetched: when tasks wait in a queue it
was started to consume, it has room for more (its prefetch window is not full) and it received no
message since the previous touch, it has stopped fetching, and the touch is skipped.

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

from celery import bootsteps, signals

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
        self._queues: tuple[str, ...] = ()
        self._receipts_seen = 0
        self._stalled = False

    def start(self, c: Any) -> None:
        self._cancel()
        # The queues it was started with: a consumer cancelled later should still be consuming them.
        self._queues = tuple(queue.name for queue in getattr(c.task_consumer, "queues", ()))
        self._receipts_seen = _RECEIPTS[0]
        self._tref = c.timer.call_repeatedly(self.interval_s, self.beat, (c,))

    def stop(self, c: Any) -> None:
        self._cancel()

    def shutdown(self, c: Any) -> None:
        self._cancel()
        # A stopped worker must not look healthy to a check that runs after it (local runs reuse
        # the path; in ECS the container goes with it).
        Path(self.path).unlink(missing_ok=True)

    def beat(self, c: Any) -> None:
        if not broker_answers(c):
            return
        received = _RECEIPTS[0] != self._receipts_seen
        self._receipts_seen = _RECEIPTS[0]
        waiting = 0 if received else waiting_while_able(c, self._queues)
        if waiting:
            if not self._stalled:
                logger.error(
                    "celery_fleet: %d task(s) wait in %s and this worker has room, but it received none "
                    "in %g s: it is not fetching, so the health check will fail",
                    waiting,
                    ",".join(self._queues),
                    self.interval_s,
                )
            self._stalled = True
            return
        self._stalled = False
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


def waiting_while_able(consumer: Any, queues: tuple[str, ...]) -> int:
    """Tasks waiting in `queues` when the consumer has room to fetch one; 0 when it has none.

    Redis transport only (the queue's size over its priority lists, as kombu counts it); 0 elsewhere.
    """
    channel = getattr(getattr(consumer, "task_consumer", None), "channel", None)
    qos = getattr(channel, "qos", None)
    size = getattr(channel, "_size", None)
    if not queues or qos is None or size is None or not qos.can_consume():
        return 0
    try:
        return sum(int(size(queue)) for queue in queues)
    except Exception as exc:
        logger.warning("celery_fleet: could not count waiting tasks for the health check: %r", exc)
        return 0


# Messages this process's consumer has taken in (started, held for an ETA, or turned away): the
# heartbeat compares the count between touches. A list so the receiver can change it in place.
_RECEIPTS = [0]


def _count_receipt(**_: Any) -> None:
    _RECEIPTS[0] += 1


for _signal in (signals.task_received, signals.task_rejected, signals.task_unknown):
    _signal.connect(_count_receipt, weak=False, dispatch_uid="celery_fleet.heartbeat.receipts")


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
