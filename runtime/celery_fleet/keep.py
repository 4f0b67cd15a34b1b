"""Keep the message of every task that failed for good, exactly as the broker held it, for replay.

`install(app, store=...)` connects to Celery's `task_failure` signal, which fires only for a final
failure: never for a retry (`Task.retry`, `autoretry_for`), a requeue, `Ignore` or a revocation.
Where it fires (Celery 5.7): in the pool child for what the task raised, before the child hands
its result to the worker's main process, which acknowledges the message only then; in the main
process for a hard time limit (before `on_timeout` acknowledges), a lost worker that is not
requeued, and `Reject(requeue=False)`.

The message comes from kombu's `unacked` hash, where the Redis transport keeps every delivered,
unacknowledged message (`task_acks_late`, which `configure` sets) as the JSON text it re-encodes
byte for byte from what the queue held. A message acknowledged before it ran (`acks_late=False`)
is gone from there; the main process then keeps its own copy of the delivery, and a failure in a
pool child is not kept.

The keeper writes the object before the task's failure line and before the acknowledgement, so a
worker that dies right after the failure still leaves it. A store that fails costs the task
nothing: the failure is counted (`errors`), the first one reported on stderr, and the failure
line then carries no key.
"""

from __future__ import annotations

import json
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from celery import signals
from celery.exceptions import Ignore, Retry

from celery_fleet.contract import kept_messages as km
from celery_fleet.contract import worker_env
from celery_fleet.never_raise import never_raise

# Keys kept and not yet picked up by the failure line; a line normally takes its key at once.
_PENDING_MAX = 1024
_DISPATCH_UID = "celery_fleet.keep.task_failure"
_RECEIVED_UID = "celery_fleet.keep.task_received"


class MessageStore(Protocol):
    """Where kept messages go (`S3MessageStore` in AWS)."""

    def put(self, key: str, data: bytes) -> None: ...


class S3MessageStore:
    """The stage's failed-messages bucket; encryption (SSE-KMS) is the bucket's default.

    The client is made lazily in each process: a prefork child must not share its parent's
    connections. The worker's task role may put objects, never read them.
    """

    def __init__(self, bucket: str, *, client_factory: Callable[[], Any] | None = None) -> None:
        self.bucket = bucket
        self._client_factory = client_factory or _s3_client
        self._client: Any = None
        self._pid = 0

    def put(self, key: str, data: bytes) -> None:
        if self._client is None or self._pid != os.getpid():
            self._client, self._pid = self._client_factory(), os.getpid()
        self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="application/json")


def _s3_client() -> Any:
    import boto3  # noqa: PLC0415 (only workers that keep messages need boto3)
    from botocore.config import Config  # noqa: PLC0415

    # A task's failure waits for this: bounded, so an S3 outage slows failures down, never stops them.
    config = Config(connect_timeout=3, read_timeout=20, retries={"mode": "standard", "max_attempts": 3})
    return boto3.client("s3", config=config)


class MessageKeeper:
    """Writes one kept-message object per final failure; `pop_key` hands its key to the failure line."""

    def __init__(self, app: Any, *, store: MessageStore, clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.store = store
        self.clock = clock
        self.kept = 0
        self.not_found = 0
        self.errors = 0
        self._pending: OrderedDict[str, str] = OrderedDict()
        # Requests the main process received: its own copy of each delivery, for failures it reports.
        self._requests: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def pop_key(self, task_id: str) -> str | None:
        """The key kept for `task_id`'s failure, once; None when nothing was kept."""
        with self._lock:
            return self._pending.pop(task_id, None)

    def on_task_received(self, *, sender: Any = None, request: Any = None, **_: Any) -> None:
        if request is not None and getattr(sender, "app", None) is self.app:
            self._requests[request.id] = request

    @never_raise
    def on_task_failure(
        self, *, sender: Any = None, task_id: str | None = None, exception: Any = None, **_: Any
    ) -> None:
        if task_id is None or getattr(sender, "app", None) is not self.app:
            return
        if isinstance(exception, Retry | Ignore):
            return
        found = self._message(sender, task_id)
        if found is None:
            self.not_found += 1
            return
        message_text, exchange, routing_key = found
        key = km.message_key(task_id)
        self.store.put(key, self._envelope(sender, task_id, message_text, exchange, routing_key))
        self.kept += 1
        with self._lock:
            self._pending[task_id] = key
            while len(self._pending) > _PENDING_MAX:
                self._pending.popitem(last=False)

    def _message(self, task: Any, task_id: str) -> tuple[str, str, str] | None:
        """(message JSON text, exchange, routing key) of the delivery, or None when it is gone."""
        held = self._requests.get(task_id)
        tag = _delivery_tag(getattr(task, "request", None), task_id)
        if tag is None and held is not None:
            tag = (getattr(held.message, "properties", None) or {}).get("delivery_tag")
        if isinstance(tag, str):
            entry = self._unacked_entry(tag)
            if entry is not None:
                return entry
        if held is not None:
            message = held.message
            raw = getattr(message, "_raw", None)
            info = getattr(message, "delivery_info", None) or {}
            if isinstance(raw, Mapping):
                return (
                    _dumps_like_kombu(raw),
                    str(info.get("exchange") or ""),
                    str(info.get("routing_key") or ""),
                )
        return None

    def _unacked_entry(self, tag: str) -> tuple[str, str, str] | None:
        with self.app.pool.acquire(block=True) as connection:
            channel = connection.default_channel
            entry = channel.client.hget(channel.unacked_key, tag)
        if entry is None:
            return None
        message, exchange, routing_key = json.loads(entry)
        # kombu wrote the entry as dumps([message, exchange, routing_key]) with json's defaults, the
        # same call that wrote the message to its queue: dumping it again gives those bytes back.
        return _dumps_like_kombu(message), str(exchange or ""), str(routing_key or "")

    def _envelope(self, task: Any, task_id: str, message_text: str, exchange: str, routing_key: str) -> bytes:
        envelope = {
            "v": km.FORMAT_VERSION,
            "task_id": task_id,
            "task": getattr(task, "name", None),
            "exchange": exchange,
            "routing_key": routing_key,
            "kept_at": round(self.clock(), 3),
            "message": message_text,
        }
        return json.dumps(envelope, separators=(",", ":")).encode("utf-8", "surrogatepass")

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self.errors == 1:
            try:
                message = f"celery_fleet.keep: failed message not kept ({type(exc).__name__}: {exc}); "
                message += "further errors are counted, not reported\n"
                os.write(2, message.encode("utf-8", "backslashreplace"))
            except OSError:
                pass


def _delivery_tag(context: Any, task_id: str) -> Any:
    if context is None or getattr(context, "id", None) != task_id:
        return None
    properties = getattr(context, "properties", None)
    return properties.get("delivery_tag") if isinstance(properties, Mapping) else None


def _dumps_like_kombu(value: Any) -> str:
    # kombu.utils.json.dumps with a message that came out of JSON: the standard library's defaults.
    return json.dumps(value)


def install(app: Any, *, store: MessageStore) -> MessageKeeper:
    """Keep every final failure's message of `app`'s tasks in `store`; replaces a previous keeper.

    Install before the task events (`celery_fleet.events.install`): in the main process both run
    on the same signal, and the failure line takes the key the keeper has just written.
    """
    uninstall()
    keeper = MessageKeeper(app, store=store)
    signals.task_failure.connect(keeper.on_task_failure, weak=False, dispatch_uid=_DISPATCH_UID)
    signals.task_received.connect(keeper.on_task_received, weak=False, dispatch_uid=_RECEIVED_UID)
    _INSTALLED.append(keeper)
    return keeper


def install_from_env(app: Any, environ: Mapping[str, str]) -> MessageKeeper | None:
    """`install` with the bucket the stack names in `CELERY_FLEET_FAILED_MESSAGES_BUCKET`, if set."""
    bucket = environ.get(worker_env.FAILED_MESSAGES_BUCKET_ENV, "").strip()
    if not bucket:
        uninstall()
        return None
    return install(app, store=S3MessageStore(bucket))


def uninstall() -> None:
    """Disconnect the installed keeper, if any."""
    if _INSTALLED:
        _INSTALLED.pop()
        signals.task_failure.disconnect(dispatch_uid=_DISPATCH_UID)
        signals.task_received.disconnect(dispatch_uid=_RECEIVED_UID)


def kept_key(task_id: str) -> str | None:
    """For the failure line: the key the installed keeper kept `task_id`'s message under, once."""
    return _INSTALLED[0].pop_key(task_id) if _INSTALLED else None


# The keeper connected now (at most one): signals are process-wide.
_INSTALLED: list[MessageKeeper] = []

__all__ = ["MessageKeeper", "MessageStore", "S3MessageStore", "install", "install_from_env", "kept_key"]
