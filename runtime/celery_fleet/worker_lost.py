"""Poison messages: a task whose pool child dies under it again and again is failed, not requeued forever.

With late acks and `task_reject_on_worker_lost`, Celery puts the message of a task whose child died
(OOM kill, segfault, `os._exit`) back on its queue unchanged, without limit: a task that kills its
child every run loops for ever, keeps its group from scaling in and hides among the healthy tasks.

Here the worker's main process counts the deaths in the message itself. Each time a child dies
under a task, the message is published again with the count in the `celery_fleet_deaths` header
and the delivery that died is acknowledged, instead of Celery's requeue of the same bytes. When the
count reaches `max_worker_deaths` the task is failed instead: Celery acknowledges it and fires
`task_failure` with a `PoisonMessageError` (one `poison_message` task event, with its arguments, in
the failed-task records). The count travels with the message, so it is exact whichever worker runs
each attempt, and it resets only when the task is sent anew.

Why not Celery 5.7's `task_retry_on_worker_lost`: it republishes through `Task.retry`, so the deaths
share `max_retries` with the task's own retries (no bound at all for `max_retries=None`), every rerun
waits `default_retry_delay` (180 s unless the task sets it), and the last death is reported as an
ordinary `WorkerLostError` failure. A task that enables it keeps it: this module then stands aside.

The republished message goes to the back of its queue (Celery's requeue put it at the front); it
keeps its send-time stamp, so queue metrics still see how long it has waited.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from billiard.einfo import ExceptionInfo
from celery import signals
from celery.exceptions import WorkerLostError
from celery.worker import state as worker_state

from celery_fleet.celery_support import unwrap_pool_exception

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger("celery_fleet")

DEATHS_HEADER = "celery_fleet_deaths"
DEFAULT_MAX_WORKER_DEATHS = 3

_DISPATCH_UID = "celery_fleet.worker_lost"

InnerOnFailure = Callable[[Any], Any]
"""Calls the request's next `on_failure` (an earlier wrapper, or Celery's own) with an exc_info."""


class PoisonMessageError(Exception):
    """A task whose worker process died under it `max_worker_deaths` times: failed, not redelivered."""


def chain_on_failure(request: Any, wrapper: Callable[[Any, Any, InnerOnFailure], Any]) -> None:
    """Wrap `request`'s pool error callback: `wrapper(request, exc_info, inner)` runs instead of it.

    Wrappers chain: each sees the exc_info its outer wrapper passes on. Must run before the request
    goes to the pool (`task_received` does), which captures `request.on_failure` then. The wrapper
    holds the request weakly: the pool's job holds it while it runs.
    """
    previous = request.__dict__.get("on_failure")
    unbound = type(request).on_failure
    ref = weakref.ref(request)

    def on_failure(exc_info: Any, *args: Any, **kwargs: Any) -> Any:
        held = ref()
        if held is None:
            return None

        def inner(info: Any) -> Any:
            if previous is not None:
                return previous(info, *args, **kwargs)
            return unbound(held, info, *args, **kwargs)

        return wrapper(held, exc_info, inner)

    request.on_failure = on_failure


def deaths_of(request: Any) -> int:
    """How many times a worker process died under earlier deliveries of this message."""
    value = request.request_dict.get(DEATHS_HEADER)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class PoisonGuard:
    """Counts worker deaths per message and fails a task at `max_deaths` (see the module docstring)."""

    def __init__(self, app: Celery, *, max_deaths: int) -> None:
        self.app = app
        self.max_deaths = max_deaths

    def on_task_received(self, *, sender: Any = None, request: Any = None, **_: Any) -> None:
        if request is None or getattr(sender, "app", None) is not self.app:
            return
        chain_on_failure(request, self.on_failure)

    def on_failure(self, request: Any, exc_info: Any, inner: InnerOnFailure) -> Any:
        try:
            counted = self._is_requeued_death(request, exc_info)
        except Exception as exc:
            # Never in the way of Celery's own handling: the death then goes uncounted.
            logger.warning("celery_fleet: could not inspect a lost worker's task: %r", exc)
            counted = False
        if not counted:
            return inner(exc_info)
        deaths = deaths_of(request) + 1
        if deaths >= self.max_deaths:
            logger.error(
                "celery_fleet: task %s[%s] failed as a poison message: its worker process died under it "
                "%d times (max_worker_deaths=%d)",
                request.name,
                request.id,
                deaths,
                self.max_deaths,
            )
            return inner(_poison_exc_info(request, deaths, self.max_deaths, _exception(exc_info)))
        if self._republish(request, deaths):
            # Acknowledged first, so Celery's handler, which would requeue the old bytes, finds
            # nothing left to reject; it still marks the request done.
            request.acknowledge()
        return inner(exc_info)

    def _is_requeued_death(self, request: Any, exc_info: Any) -> bool:
        """Whether Celery would requeue this delivery because its pool child died under it."""
        exc = _exception(exc_info)
        # Celery counts a child's SystemExit as a lost worker too, unless it sent the signal itself.
        if not isinstance(exc, WorkerLostError | SystemExit | KeyboardInterrupt):
            return False
        task = request.task
        if not (task.acks_late and task.reject_on_worker_lost) or task.retry_on_worker_lost:
            return False
        if request._already_cancelled or request._already_revoked or request.acknowledged:
            return False
        # A worker shutting down cancels its own children's tasks: those are requeued, not counted.
        return not (_set(worker_state.should_terminate) or _set(worker_state.should_stop))

    def _republish(self, request: Any, deaths: int) -> bool:
        message = request.message
        delivery_info = message.delivery_info or {}
        properties = message.properties or {}
        headers = {**(message.headers or {}), DEATHS_HEADER: deaths}
        try:
            with self.app.producer_or_acquire() as producer:
                producer.publish(
                    message.body,
                    exchange=delivery_info.get("exchange") or "",
                    routing_key=delivery_info.get("routing_key"),
                    headers=headers,
                    content_type=message.content_type,
                    content_encoding=message.content_encoding,
                    priority=properties.get("priority"),
                    correlation_id=properties.get("correlation_id"),
                    reply_to=properties.get("reply_to"),
                    delivery_mode=properties.get("delivery_mode"),
                    retry=True,
                )
        except Exception as exc:
            # Celery's requeue of the unchanged message still happens: the death goes uncounted.
            logger.warning(
                "celery_fleet: could not republish %s[%s] after its worker process died (%r); requeued "
                "without counting the death",
                request.name,
                request.id,
                exc,
            )
            return False
        return True


def install_poison_guard(app: Celery, *, max_deaths: int) -> PoisonGuard:
    """Bound worker deaths per message for `app`'s tasks; replaces a guard installed before."""
    guard = PoisonGuard(app, max_deaths=max_deaths)
    signals.task_received.disconnect(dispatch_uid=_DISPATCH_UID)
    signals.task_received.connect(guard.on_task_received, weak=False, dispatch_uid=_DISPATCH_UID)
    return guard


def uninstall_poison_guard() -> None:
    signals.task_received.disconnect(dispatch_uid=_DISPATCH_UID)


def _set(flag: object) -> bool:
    # The worker stores its exit code there, and a clean exit's code is 0.
    return flag is not None and flag is not False


def _exception(exc_info: Any) -> object:
    return unwrap_pool_exception(getattr(exc_info, "exception", None))


def _poison_exc_info(request: Any, deaths: int, max_deaths: int, cause: object) -> ExceptionInfo:
    error = PoisonMessageError(
        f"worker process died under this task {deaths} times (max_worker_deaths={max_deaths}); last: "
        f"{cause!r}. Failed instead of redelivered."
    )
    try:
        raise error
    except PoisonMessageError:
        return ExceptionInfo()
