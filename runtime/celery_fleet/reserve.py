"""A memory reserve on the broker that producers never fill, so that workers can always drain it.

With `maxmemory-policy noeviction`, a Redis at `maxmemory` refuses every command that may grow its
memory (the `denyoom` ones: LPUSH, SET, ZADD, HSET) and every command queued in a MULTI. A
producer's publish is an LPUSH, but so is nothing a worker can do without: taking a message records
it in the `unacked` hash and index (ZADD and HSET, in a MULTI), acknowledging removes it (ZREM and
HDEL, in a MULTI as well) and the sweep of old deliveries takes a lock (SET NX). At `maxmemory` a
worker therefore dies on its first acknowledgement or delivery and a new one at start; the tasks it
had finished then run again after the visibility timeout.

So every task an app `configure` has set up sends (`send_task`, `apply_async`, `delay`, retries)
checks the broker's memory first and is refused with `BrokerFullError` once `used_memory` reaches
`limit_percent` of `maxmemory`. The rest
is left to the workers: their bookkeeping holds at most one copy of each message in flight, which
the reserve covers many times over, and each acknowledgement frees a message's memory. A publisher
that bypasses celery_fleet (another app, a script) is not held back.

The figure comes from `INFO memory`, which ElastiCache allows: per process once a second or once
every `REFRESH_PUBLISHES` publishes, whichever comes first, and before every publish once memory is
within `CLOSE_POINTS` of the limit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

DEFAULT_LIMIT_PERCENT = 95.0
# How stale the memory figure may be: one INFO per second, or per this many publishes in a burst
# (a hundred messages are some hundred kilobytes, a sliver of any broker's reserve).
REFRESH_S = 1.0
REFRESH_PUBLISHES = 100
# Within this many percentage points of the limit every publish reads the figure afresh: a second
# of publishing at full speed may fill what is left, and a full broker is worse than an INFO each.
CLOSE_POINTS = 10.0


class BrokerFullError(RuntimeError):
    """The broker is within its reserve: the task was not sent. Send it again later."""


class MemoryReserve:
    """Decides whether a publish may go out, from the broker's memory figures (cached `REFRESH_S`)."""

    def __init__(self, *, limit_percent: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit_percent = limit_percent
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._share_percent = 0.0
        self._passed_since = 0

    def stale(self) -> bool:
        """Whether the memory figure must be read again: missing, older than `REFRESH_S`, or close."""
        with self._lock:
            return (
                self._checked_at is None
                or self._clock() - self._checked_at >= REFRESH_S
                or self._passed_since >= REFRESH_PUBLISHES
                or self._share_percent >= self.limit_percent - CLOSE_POINTS
            )

    def refresh(self, client: Any) -> None:
        """Read the broker's memory figures through the Redis `client`."""
        share = memory_share_percent(client.info("memory"))
        with self._lock:
            self._share_percent = share
            self._checked_at = self._clock()
            self._passed_since = 0

    def check(self) -> None:
        """Raise `BrokerFullError` when the last figure is within the reserve."""
        with self._lock:
            share = self._share_percent
            self._passed_since += 1
        if share >= self.limit_percent:
            raise BrokerFullError(
                f"broker memory at {share:.1f} % of maxmemory: new tasks are refused above "
                f"{self.limit_percent:g} % so that workers can still take and acknowledge the tasks "
                f"queued (docs/runbooks.md#broker-full). The task was not sent; send it again later."
            )


def memory_share_percent(info: dict[str, Any]) -> float:
    """`used_memory` as a percentage of `maxmemory` from `INFO memory`; 0 without a maxmemory."""
    maximum = int(info.get("maxmemory") or 0)
    return 100.0 * int(info.get("used_memory") or 0) / maximum if maximum > 0 else 0.0


def install_memory_reserve(app: Celery, *, limit_percent: float) -> MemoryReserve:
    """Check the reserve before each task `app` sends (`Celery.send_task`, which `apply_async` uses).

    Replaces a reserve installed before. The check borrows a producer from the app's pool only when
    its figure is stale, so the connection it asks is the one the publish then uses.
    """
    reserve = MemoryReserve(limit_percent=limit_percent)
    send = _unwrapped(app)

    def send_task(*args: Any, **kwargs: Any) -> Any:
        if reserve.stale():
            with app.producer_or_acquire(kwargs.get("producer")) as producer:
                # Redis transport only: its channel carries the client.
                client = getattr(getattr(producer, "channel", None), "client", None)
                if client is not None:
                    reserve.refresh(client)
        reserve.check()
        return send(*args, **kwargs)

    send_task.__wrapped__ = send  # type: ignore[attr-defined]
    app.send_task = send_task
    return reserve


def uninstall_memory_reserve(app: Celery) -> None:
    """Undo `install_memory_reserve`."""
    send = _unwrapped(app)
    if send is not app.send_task:
        app.send_task = send


def _unwrapped(app: Celery) -> Callable[..., Any]:
    send: Callable[..., Any] = app.send_task
    return getattr(send, "__wrapped__", send)
