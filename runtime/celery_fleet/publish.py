"""What celery_fleet adds to, and takes out of, every task message as it is published.

Connected to Celery's `before_task_publish` signal by `configure`. Standard library only, so the
stamping logic is tested without a broker as well as with one.
"""

from __future__ import annotations

import logging
import math
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
# The send stamp's resolution: 10 microseconds.
STAMP_STEPS_PER_S = 100_000

# Protocol 2 headers a worker reads with a default equal to the value Celery sends when the feature
# is unused (celery/worker/request.py reads each with .get() or `in`; celery.app.task.Context has
# the same defaults), so leaving them out changes nothing for any Celery 5 worker. Each costs broker
# memory on every queued task: bench/broker_memory.py measures the whole set.
_UNSET_HEADERS: dict[str, tuple[Any, ...]] = {
    "shadow": (None,),
    "eta": (None,),
    "expires": (None,),
    "group": (None,),
    "group_index": (None,),
    "parent_id": (None,),
    "stamped_headers": (None, []),
    "timelimit": ([None, None], (None, None)),
    "retries": (0,),
    "replaced_task_nesting": (0,),
}
# Headers no Celery 5 worker reads from a protocol 2 message: `lang` is always "py", `origin` names
# the sending process for display (only the protocol 1 converter in celery/worker/strategy.py looks
# at it). Together they cost 20-25 B per queued task on the stack's settings (bench/broker_memory.py).
_DISPLAY_ONLY_HEADERS = ("lang", "origin")
# `ignore_result` stays even when False: a worker that misses it falls back to the task's own
# ignore_result, which may be True on the worker while this producer asked for a result. `root_id`,
# `timelimit` (when set) and the `correlation_id` property stay: Celery reads them.


@dataclass(frozen=True)
class PublishStamper:
    """Stamps the send time, slims the envelope, flags ETAs past the visibility timeout.

    `max_delay_s`: the longest countdown/ETA the broker's visibility timeout covers.
    `argument_reprs`: keep the `argsrepr`/`kwargsrepr` display headers (dropped by default).
    `repr_max_chars`: with `argument_reprs`, keep at most this many characters of each; None keeps
    them whole.
    `keep_reply_to`: keep the `reply_to` property, which only the rpc:// result backend reads.
    """

    max_delay_s: float
    argument_reprs: bool = False
    repr_max_chars: int | None = None
    keep_reply_to: bool = False
    clock: Callable[[], float] = time.time

    def __call__(
        self,
        sender: str | None = None,
        headers: MutableMapping[str, Any] | None = None,
        body: Any = None,
        properties: MutableMapping[str, Any] | None = None,
        **_: Any,
    ) -> None:
        if headers is None:
            return
        now = self.clock()
        # Set, not setdefault: a retry republishes the task with its old headers, and the queue wait
        # the publisher measures starts at this publish. Rounded up to 10 us: time.time()'s last two
        # digits are precision no reader needs, and dropping them took the bench's own shape from
        # 250 to 240 B per queued task on the stack's settings (one more message fits each list
        # node; bench/broker_memory.py). Up, so that a stamp is never earlier than its publish.
        headers[SENT_AT_HEADER] = math.ceil(now * STAMP_STEPS_PER_S) / STAMP_STEPS_PER_S
        if not self.argument_reprs:
            for key in REPR_HEADERS:
                headers.pop(key, None)
        elif self.repr_max_chars is not None:
            for key in REPR_HEADERS:
                value = headers.get(key)
                if isinstance(value, str) and len(value) > self.repr_max_chars:
                    headers[key] = _shorten(value, self.repr_max_chars)
        delay = eta_delay_s(headers.get("eta"), now)
        slim_message(headers, body, properties, keep_reply_to=self.keep_reply_to)
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


def slim_message(
    headers: MutableMapping[str, Any],
    body: Any,
    properties: MutableMapping[str, Any] | None,
    *,
    keep_reply_to: bool = False,
) -> None:
    """Drop, in place, what a protocol 2 task message carries without any worker needing it.

    Headers at their unused value, the display-only `lang` and `origin`, `None` entries of the
    body's embed dict (callbacks, errbacks, chain, chord: the worker merges the dict over None
    defaults) and, unless `keep_reply_to`, the `reply_to` property. A protocol 1 message (no `task`
    header) is left as it is.
    """
    if "task" not in headers or "id" not in headers:
        return
    for key in _DISPLAY_ONLY_HEADERS:
        headers.pop(key, None)
    for key, unset in _UNSET_HEADERS.items():
        if key in headers and any(_same(headers[key], value) for value in unset):
            del headers[key]
    if headers.get("stamps") == {} and "stamped_headers" not in headers:
        del headers["stamps"]
    # The body is (args, kwargs, embed) and Celery serializes it after this signal.
    if isinstance(body, tuple | list) and len(body) == 3 and isinstance(body[2], dict):
        embed = body[2]
        for key in [key for key, value in embed.items() if value is None]:
            del embed[key]
    if properties is not None and not keep_reply_to:
        properties.pop("reply_to", None)


def _same(value: object, unset: object) -> bool:
    # 0 == False in Python; an unset marker of 0 must not match a False that means something.
    return type(value) is type(unset) and value == unset


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
