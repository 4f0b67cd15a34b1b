"""The signal receivers: which of Celery's signals reports which outcome, and in which process.

Where each signal fires (Celery 5.7, read from celery/app/trace.py and celery/worker/request.py):

* In the pool child (or the worker itself with the solo/threads pools): `task_prerun`,
  `task_failure` and `task_retry` for what the task raised, and `task_postrun` last, with the
  attempt's final state. The child writes the line at `task_postrun`, from that state.
* In the worker's main process: `task_received`; `task_revoked` (revoked or expired before it ran,
  or terminated); `task_failure` with `TimeLimitExceeded` (the pool kills the child at the hard
  limit; Celery fires the signal twice, from the job's error callback and from `on_timeout`, and the
  second is dropped here); `task_failure` with `WorkerLostError` (the child died) or `task_retry`
  with it (`retry_on_worker_lost`); `task_rejected` (a message it cannot decode); `task_unknown`
  (a message for a task it does not have).
* With `acks_late` and `reject_on_worker_lost`, a lost worker's task is requeued and Celery fires
  no signal at all: `celery_fleet.events.lost` reports those.

Every receiver runs under `never_raise`: an error is counted (`errors`), the first one reported on
stderr, and the task and the worker go on as if no receiver had run.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from celery.exceptions import (
    NotRegistered,
    Reject,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
    WorkerLostError,
)

from celery_fleet.contract.task_events import EventType
from celery_fleet.events.context import lookup, message_arguments, own_request, queue_wait, traceback_text
from celery_fleet.events.line import EXCEPTION_EVENTS, outcome_line
from celery_fleet.events.lost import WorkerLostHook
from celery_fleet.events.redaction import Redact
from celery_fleet.events.tracebacks import Chain, exception_chain, user_frame
from celery_fleet.never_raise import never_raise
from celery_fleet.worker_lost import PoisonMessageError

# Both hard-limit signals come from one pool callback, microseconds apart.
_DUPLICATE_WINDOW_S = 1.0
# The outcomes already written for a delivery, on its Request.
_REPORTED_ATTR = "_celery_fleet_reported"
_RECENT_MAX = 256


@dataclass(slots=True)
class _Attempt:
    """A task running in this process, from `task_prerun` to `task_postrun`."""

    started: float
    queue_wait_s: float | None
    exc: BaseException | None = None
    traceback: str | None = None
    # The exception chain with its frames, taken when the task raised (the traceback objects do not
    # outlive Celery's failure handling): rendered with the redacted text at task_postrun.
    chain: Chain = field(default_factory=list)
    frame: str = ""


class TaskEventEmitter:
    """Turns Celery's signals into task-event lines; `install` creates and connects one."""

    def __init__(
        self,
        app: Any,
        *,
        write: Callable[[bytes], None],
        redact: Redact | None = None,
        key: bytes | None = None,
    ) -> None:
        self.app = app
        self.write = write
        self.redact = redact
        # None: lines go out unsigned, and the ingester counts them as forged (local runs, tests).
        self.key = key
        self.errors = 0
        # Lines the main process wrote: the worker-lost hook tells from it whether Celery reported
        # a failure itself.
        self.main_lines = 0
        self._running: dict[str, _Attempt] = {}
        # Requests the main process has received and not yet dropped: context for the outcomes it
        # reports itself. Weak, so the map holds what the worker holds and nothing more.
        self._requests: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        self._recent: dict[tuple[str, str], float] = {}
        self._internal_errors: deque[str] = deque(maxlen=64)
        self._lock = threading.Lock()
        self._worker_lost = WorkerLostHook(self)

    # -- signal receivers ------------------------------------------------------------------------

    @never_raise
    def on_task_prerun(self, *, sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        if task_id is None or not self._ours(sender):
            return
        started = time.monotonic()
        request = sender.request
        self._running[task_id] = _Attempt(started, queue_wait(request, time.time()))

    @never_raise
    def on_task_failure(
        self,
        *,
        sender: Any = None,
        task_id: str | None = None,
        exception: BaseException | None = None,
        einfo: Any = None,
        **_: Any,
    ) -> None:
        if task_id is None or not self._ours(sender):
            return
        attempt = self._running.get(task_id)
        if attempt is not None:
            # In the child: task_postrun follows with the state and writes the line.
            attempt.exc = exception
            attempt.traceback = traceback_text(einfo)
            if exception is not None:
                attempt.chain = exception_chain(exception)
                attempt.frame = user_frame(exception)
            return
        self._on_main_process_failure(sender, task_id, exception, einfo)

    @never_raise
    def on_task_retry(
        self, *, sender: Any = None, request: Any = None, reason: Any = None, einfo: Any = None, **_: Any
    ) -> None:
        if request is None or not self._ours(sender):
            return
        task_id = lookup(request, "id")
        cause = getattr(reason, "exc", None)
        attempt = self._running.get(task_id) if isinstance(task_id, str) else None
        if attempt is not None:
            attempt.exc = cause if cause is not None else reason
            return
        # Main process: retry_on_worker_lost, or a task cancelled on connection loss.
        lost = _is_worker_lost(cause)
        event = EventType.WORKER_LOST if lost else EventType.RETRIED
        held = self._requests.get(task_id) if isinstance(task_id, str) else None
        self.emit_from_main(
            event,
            sender.name,
            request,
            held,
            exc=cause if isinstance(cause, BaseException) else None,
            traceback=traceback_text(einfo),
        )

    @never_raise
    def on_task_postrun(
        self,
        *,
        sender: Any = None,
        task_id: str | None = None,
        retval: Any = None,
        state: str | None = None,
        **_: Any,
    ) -> None:
        if task_id is None:
            return
        attempt = self._running.pop(task_id, None)
        if attempt is None:
            return
        runtime_s = time.monotonic() - attempt.started
        event = _event_for_state(state, attempt.exc)
        if event is None:
            # IGNORED (the task raised Ignore), or the attempt never finished (BaseException:
            # the child is going down and the main process reports it).
            return
        exc = attempt.exc
        if event is EventType.REJECTED and isinstance(retval, BaseException):
            exc = retval
        request = sender.request
        line = self._record(
            event,
            name=sender.name,
            task_id=task_id,
            context=request,
            runtime_s=runtime_s,
            queue_wait_s=attempt.queue_wait_s,
            exc=exc,
            traceback=attempt.traceback,
            chain=attempt.chain if exc is attempt.exc else None,
            frame=attempt.frame if exc is attempt.exc else "",
            args=lookup(request, "args") if event in EXCEPTION_EVENTS else None,
            kwargs=lookup(request, "kwargs") if event in EXCEPTION_EVENTS else None,
        )
        self.write(line)

    @never_raise
    def on_task_internal_error(
        self,
        *,
        sender: Any = None,
        task_id: str | None = None,
        args: Any = None,
        kwargs: Any = None,
        request: Any = None,
        exception: BaseException | None = None,
        einfo: Any = None,
        **_: Any,
    ) -> None:
        if task_id is None or not self._ours(sender):
            return
        # Celery then calls its failure handler, which fires task_failure without a running
        # attempt: remember the id so that one is not written a second time.
        self._internal_errors.append(task_id)
        self.write(
            self._record(
                EventType.FAILED,
                name=sender.name,
                task_id=task_id,
                context=request or {},
                exc=exception,
                traceback=traceback_text(einfo),
                chain=exception_chain(exception) if exception is not None else None,
                frame=user_frame(exception) if exception is not None else "",
                args=args,
                kwargs=kwargs,
            )
        )

    @never_raise
    def on_task_revoked(
        self, *, sender: Any = None, request: Any = None, terminated: bool = False, **_: Any
    ) -> None:
        if request is None or not self._ours(sender):
            return
        task_id = lookup(request, "id")
        held = self._requests.get(task_id) if isinstance(task_id, str) and terminated else None
        self.emit_from_main(EventType.REVOKED, sender.name, request, held)

    @never_raise
    def on_task_rejected(
        self, *, sender: Any = None, message: Any = None, exc: BaseException | None = None, **_: Any
    ) -> None:
        if message is None or getattr(sender, "app", self.app) is not self.app:
            return
        self._emit_message_outcome(EventType.REJECTED, sender, message, exc)

    @never_raise
    def on_task_unknown(
        self,
        *,
        sender: Any = None,
        message: Any = None,
        exc: BaseException | None = None,
        name: Any = None,
        id: Any = None,  # the signal's argument name
        **_: Any,
    ) -> None:
        if message is None or getattr(sender, "app", self.app) is not self.app:
            return
        # Celery passes the KeyError of its lookup; what it stores as the result is NotRegistered.
        failure = NotRegistered(name) if isinstance(name, str) else exc
        self._emit_message_outcome(EventType.UNKNOWN_TASK, sender, message, failure, name=name, task_id=id)

    @never_raise
    def on_task_received(self, *, sender: Any = None, request: Any = None, **_: Any) -> None:
        if request is None or getattr(sender, "app", self.app) is not self.app:
            return
        self._requests[request.id] = request
        self._worker_lost.watch(request)

    # -- main process ----------------------------------------------------------------------------

    def _emit_message_outcome(
        self,
        event: EventType,
        consumer: Any,
        message: Any,
        exc: BaseException | None,
        *,
        name: Any = None,
        task_id: Any = None,
    ) -> None:
        """A message the worker dropped without running it: what it said, its arguments decoded
        from its body (the `argsrepr` headers are neither trusted nor always sent)."""
        headers = getattr(message, "headers", None) or {}
        headers = headers if isinstance(headers, Mapping) else {}
        delivery_info = getattr(message, "delivery_info", None) or {}
        name = name if name is not None else headers.get("task")
        task_id = task_id if task_id is not None else headers.get("id")
        retries = headers.get("retries", 0)
        context = {
            "id": task_id,
            "retries": retries if isinstance(retries, int) else 0,
            "delivery_info": delivery_info,
            "hostname": getattr(consumer, "hostname", None),
        }
        args, kwargs = message_arguments(message)
        self._emit_main_line(
            self._record(
                event,
                name=name if isinstance(name, str) else "",
                task_id=task_id if isinstance(task_id, str) else "",
                context=context,
                exc=exc,
                args=args,
                kwargs=kwargs,
            )
        )

    def _on_main_process_failure(
        self, task: Any, task_id: str, exception: BaseException | None, einfo: Any
    ) -> None:
        if task_id in self._internal_errors:
            self._internal_errors.remove(task_id)
            return
        if isinstance(exception, Reject):
            # A task that raised Reject(requeue=False): the child already wrote `rejected`.
            return
        event = _main_process_event(exception)
        held = self._requests.get(task_id)
        context = held.request_dict if held is not None else own_request(task, task_id)
        self.emit_from_main(event, task.name, context, held, exc=exception, traceback=traceback_text(einfo))

    def emit_from_main(
        self,
        event: EventType,
        name: str,
        context: Any,
        held: Any,
        *,
        exc: BaseException | None = None,
        traceback: str | None = None,
    ) -> None:
        """Write an outcome the main process reports (`held`: the delivery's Request, if known),
        once per delivery."""
        task_id = lookup(context, "id")
        if not isinstance(task_id, str) and held is not None:
            task_id = held.id
        task_id = task_id if isinstance(task_id, str) else ""
        now = time.time()
        with self._lock:
            if self._reported_already(held, task_id, event):
                return
        # time_start is the main process's wall-clock time of the child's acceptance.
        time_start = getattr(held, "time_start", None)
        runtime_s = now - time_start if isinstance(time_start, float) else None
        queue_wait_s = queue_wait(context, time_start) if isinstance(time_start, float) else None
        # A retry shows no arguments, but its message is cleaned of what the hook hides too.
        failure = event in EXCEPTION_EVENTS
        self._emit_main_line(
            self._record(
                event,
                name=name,
                task_id=task_id,
                context=context,
                runtime_s=runtime_s,
                queue_wait_s=queue_wait_s,
                exc=exc,
                traceback=traceback,
                args=lookup(context, "args") if failure else None,
                kwargs=lookup(context, "kwargs") if failure else None,
            )
        )

    def _emit_main_line(self, line: bytes) -> None:
        self.main_lines += 1
        self.write(line)

    def _reported_already(self, held: Any, task_id: str, event: EventType) -> bool:
        """Whether this delivery's `event` was written already (a hard limit fires task_failure twice).

        Kept on the request, which the worker creates anew for every delivery: a task requeued and
        delivered again reports each outcome, so every death of a poison task is counted (a 1 s
        window per task id dropped real repeats). Without the request, the window still applies.
        """
        if held is None:
            return self._seen_recently((task_id, event.value), time.monotonic())
        reported: set[EventType] | None = getattr(held, _REPORTED_ATTR, None)
        if reported is None:
            reported = set()
            setattr(held, _REPORTED_ATTR, reported)
        if event in reported:
            return True
        reported.add(event)
        return False

    def _seen_recently(self, key: tuple[str, str], now: float) -> bool:
        seen = self._recent.get(key)
        if seen is not None and now - seen < _DUPLICATE_WINDOW_S:
            return True
        if len(self._recent) >= _RECENT_MAX:
            self._recent = {k: t for k, t in self._recent.items() if now - t < _DUPLICATE_WINDOW_S}
        self._recent[key] = now
        return False

    # -- lines -----------------------------------------------------------------------------------

    def _ours(self, task: Any) -> bool:
        return getattr(task, "app", None) is self.app

    def _record(self, event: EventType, **fields: Any) -> bytes:
        """`outcome_line` (its keyword fields) signed with this emitter's key, under its redaction."""
        return outcome_line(event, **fields, redact=self.redact, key=self.key, on_error=self._failed)

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self.errors == 1:
            try:
                message = f"celery_fleet.events: task event not written ({type(exc).__name__}: {exc}); "
                message += "further errors are counted, not reported\n"
                warn(message)
            except Exception:
                pass


def warn(message: str) -> None:
    """`message` on stderr (file descriptor 2), never raising."""
    with contextlib.suppress(OSError):
        os.write(2, message.encode("utf-8", "backslashreplace"))


def _event_for_state(state: str | None, exc: BaseException | None) -> EventType | None:
    if state == "SUCCESS":
        return EventType.SUCCEEDED
    if state == "FAILURE":
        if _is_soft_time_limit(exc):
            return EventType.TIME_LIMIT_EXCEEDED
        return EventType.FAILED
    if state == "RETRY":
        return EventType.RETRIED
    if state == "REJECTED":
        return EventType.REJECTED
    return None


def _main_process_event(exc: BaseException | None) -> EventType:
    if isinstance(exc, PoisonMessageError):
        return EventType.POISON_MESSAGE
    if isinstance(exc, TimeLimitExceeded):
        return EventType.TIME_LIMIT_EXCEEDED
    if _is_worker_lost(exc):
        return EventType.WORKER_LOST
    return EventType.FAILED


def _is_worker_lost(exc: object) -> bool:
    return isinstance(exc, WorkerLostError)


def _is_soft_time_limit(exc: object) -> bool:
    return isinstance(exc, SoftTimeLimitExceeded)
