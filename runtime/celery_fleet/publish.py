"""What celery_fleet adds to every task message as it is published.

Connected to Celery's `before_task_publish` signal by `configure`. Standard library only, so the
stamping logic is tested without a broker as well as with one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery_fleet.contract.queue_metrics import SENT_AT_HEADER

logger = logging.getLogger("celery_fleet")

# Protocol 2 headers that repeat the arguments as display strings (for logs and monitoring only).
REPR_HEADERS = ("argsrepr", "kwargsrepr")
TRUNCATED_MARK = "..."


@dataclass(frozen=True)
class PublishStamper:
    """Stamps the send time, optionally shortens the argument reprs, flags ETAs past the limit.

    `max_delay_s`: the longest countdown/ETA the broker's visibility timeout covers.
    `repr_max_chars`: keep at most this many characters of `argsrepr`/`kwargsrepr`; None keeps them.
    """

    max_delay_s: float
    repr_max_chars: int | None = None
    clock: Callable[[], float] = time.time

    def __call__(
        self, sender: str | None = None, headers: MutableMapping[str, Any] | None = None, **_: Any
    ) -> None:
        if headers is None:
            return
        now = self.clock()
        # Set, not setdefault: a retry republishes the task with its old headers, and the queue wait
        # the publisher measures starts at this publish.
        headers[SENT_AT_HEADER] = now
        if self.repr_max_chars is not None:
            for key in REPR_HEADERS:
                value = headers.get(key)
                if isinstance(value, str) and len(value) > self.repr_max_chars:
                    headers[key] = _shorten(value, self.repr_max_chars)
        delay = eta_delay_s(headers.get("eta"), now)
        if delay is not None and delay > self.max_delay_s:
            # Celery logs and swallows exceptions raised by signal handlers (Signal.send in
            # celery/utils/dispatch/signal.py), so refusing the publish from here is impossible: the
            # message goes out, and this error names the fix.
            logger.error(
                "celery_fleet: task %s[%s] is scheduled %.0f s ahead, beyond the %.0f s the broker's "
                "visibility timeout allows: the broker will deliver it again every visibility timeout "
                "until it runs, so it may run more than once. Raise max_countdown_s in "
                "celery_fleet.configure or shorten the delay.",
                sender,
                headers.get("id"),
                delay,
                self.max_delay_s,
            )


def eta_delay_s(eta: object, now: float) -> float | None:
    """Seconds from `now` (Unix time) to the message's `eta` header, None when it has none."""
    if not isinstance(eta, str) or not eta:
        return None
    try:
        when = datetime.fromisoformat(eta)
    except ValueError:
        return None
    if when.tzinfo is None:
        # Celery sends aware ETAs; a naive one is UTC under Celery's default enable_utc.
        when = when.replace(tzinfo=UTC)
    return when.timestamp() - now


def _shorten(value: str, max_chars: int) -> str:
    if max_chars <= len(TRUNCATED_MARK):
        return value[:max_chars]
    return value[: max_chars - len(TRUNCATED_MARK)] + TRUNCATED_MARK
