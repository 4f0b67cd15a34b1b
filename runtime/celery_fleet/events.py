"""Task events: exactly one JSON line on stdout per task outcome, for the ingest Lambda.

`install(app)` connects Celery's signals; nothing is kept per task beyond the tasks running now.
Where each signal fires (Celery 5.7, read from celery/app/trace.py and celery/worker/request.py):

* In the pool child (or the worker itself with the solo/threads pools): `task_prerun`,
  `task_failure` and `task_retry` for what the task raised, and `task_postrun` last, with the
  attempt's final state. The child writes the line at `task_postrun`, from that state.
* In the worker's main process: `task_received`; `task_revoked` (revoked or expired before it ran,
  or terminated); `task_failure` with `TimeLimitExceeded` (the pool kills the child at the hard
  limit; Celery fires the signal twice, from the job's error callback and from `on_timeout`, and the
  second is dropped here); `task_failure` with `WorkerLostError` (the child died) or `task_retry`
  with it (`retry_on_worker_lost`); `task_rejected` (a message for an unknown task).
* With `acks_late` and `reject_on_worker_lost`, a lost worker's task is requeued and Celery fires
  no signal at all. To still count it, the main process wraps each received request's
  `on_failure` (the pool's error callback) and writes `worker_lost` when a `WorkerLostError` went
  through it without a signal.

Lines go to file descriptor 1 with one `write()` each, not through `sys.stdout`: the worker
redirects `sys.stdout` into its logger by default, and buffered writers from several processes
could interleave. Every line fits in PIPE_BUF (`MAX_LINE_BYTES`), which makes each write atomic.
Nothing here raises into a task: errors are counted and the first one is reported on stderr.
"""

from __future__ import annotations

import json
import math
import os
import reprlib
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from celery import signals
from celery.exceptions import Reject, SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError

from celery_fleet.contract import task_events as te
from celery_fleet.contract.queue_metrics import SENT_AT_HEADER
from celery_fleet.contract.task_events import EventType

Redact = Callable[[str, Sequence[Any], Mapping[str, Any]], tuple[Sequence[Any], Mapping[str, Any]]]
"""`redact(task_name, args, kwargs) -> (args, kwargs)`: what a failure line may show of the arguments.

Called only for failures, before the arguments are turned into bounded reprs; if it raises, the
line shows neither (`REDACTION_FAILED`), never the unredacted values.
"""

REDACTION_FAILED = "<redaction failed>"

# Both hard-limit signals come from one pool callback, microseconds apart.
_DUPLICATE_WINDOW_S = 1.0
_RECENT_MAX = 256
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)
# Encoded bytes each of the exception message, args and kwargs may keep when a line is too long.
_FIELD_SHARE_BYTES = 512

_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxstring = 160
_repr.maxother = 160
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxdict = 16


@dataclass(slots=True)
class _Attempt:
    """A task running in this process, from `task_prerun` to `task_postrun`."""

    started: float
    queue_wait_s: float | None
    exc: BaseException | None = None
    traceback: str | None = None


class TaskEventEmitter:
    """Turns Celery's signals into task-event lines; `install` creates and connects one."""

    def __init__(self, app: Any, *, write: Callable[[bytes], None], redact: Redact | None = None) -> None:
        self.app = app
        self.write = write
        self.redact = redact
        self.errors = 0
        self._running: dict[str, _Attempt] = {}
        # Requests the main process has received and not yet dropped: context for the outcomes it
        # reports itself. Weak, so the map holds what the worker holds and nothing more.
        self._requests: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        self._recent: dict[tuple[str, str], float] = {}
        self._internal_errors: deque[str] = deque(maxlen=64)
        self._parent_lines = 0
        self._lock = threading.Lock()

    # -- signal receivers ------------------------------------------------------------------------

    def on_task_prerun(self, *, sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        try:
            if task_id is None or not self._ours(sender):
                return
            started = time.monotonic()
            request = sender.request
            self._running[task_id] = _Attempt(started, _queue_wait(request, time.time()))
        except Exception as exc:
            self._failed(exc)

    def on_task_failure(
        self,
        *,
        sender: Any = None,
        task_id: str | None = None,
        exception: BaseException | None = None,
        einfo: Any = None,
        **_: Any,
    ) -> None:
        try:
            if task_id is None or not self._ours(sender):
                return
            attempt = self._running.get(task_id)
            if attempt is not None:
                # In the child: task_postrun follows with the state and writes the line.
                attempt.exc = exception
                attempt.traceback = _traceback_text(einfo)
                return
            self._on_main_process_failure(sender, task_id, exception, einfo)
        except Exception as exc:
            self._failed(exc)

    def on_task_retry(
        self, *, sender: Any = None, request: Any = None, reason: Any = None, einfo: Any = None, **_: Any
    ) -> None:
        try:
            if request is None or not self._ours(sender):
                return
            task_id = _get(request, "id")
            cause = getattr(reason, "exc", None)
            attempt = self._running.get(task_id) if isinstance(task_id, str) else None
            if attempt is not None:
                attempt.exc = cause if cause is not None else reason
                return
            # Main process: retry_on_worker_lost, or a task cancelled on connection loss.
            lost = _is_worker_lost(cause)
            event = EventType.WORKER_LOST if lost else EventType.RETRIED
            held = self._requests.get(task_id) if isinstance(task_id, str) else None
            self._emit_from_main(
                event,
                sender.name,
                request,
                held,
                exc=cause if isinstance(cause, BaseException) else None,
                traceback=_traceback_text(einfo),
            )
        except Exception as exc:
            self._failed(exc)

    def on_task_postrun(
        self,
        *,
        sender: Any = None,
        task_id: str | None = None,
        retval: Any = None,
        state: str | None = None,
        **_: Any,
    ) -> None:
        try:
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
                args=_get(request, "args") if event in te.FAILURE_EVENTS else None,
                kwargs=_get(request, "kwargs") if event in te.FAILURE_EVENTS else None,
            )
            self.write(line)
        except Exception as exc:
            self._failed(exc)

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
        try:
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
                    traceback=_traceback_text(einfo),
                    args=args,
                    kwargs=kwargs,
                )
            )
        except Exception as exc:
            self._failed(exc)

    def on_task_revoked(
        self, *, sender: Any = None, request: Any = None, terminated: bool = False, **_: Any
    ) -> None:
        try:
            if request is None or not self._ours(sender):
                return
            task_id = _get(request, "id")
            held = self._requests.get(task_id) if isinstance(task_id, str) and terminated else None
            self._emit_from_main(EventType.REVOKED, sender.name, request, held)
        except Exception as exc:
            self._failed(exc)

    def on_task_rejected(
        self, *, sender: Any = None, message: Any = None, exc: BaseException | None = None, **_: Any
    ) -> None:
        try:
            if message is None or getattr(sender, "app", self.app) is not self.app:
                return
            headers = getattr(message, "headers", None) or {}
            delivery_info = getattr(message, "delivery_info", None) or {}
            context = {
                "id": headers.get("id"),
                "retries": headers.get("retries", 0),
                "delivery_info": delivery_info,
                "hostname": getattr(sender, "hostname", None),
            }
            name = headers.get("task")
            self._emit_main_line(
                self._record(
                    EventType.REJECTED,
                    name=name if isinstance(name, str) else "",
                    task_id=str(headers.get("id") or ""),
                    context=context,
                    exc=exc,
                    args=headers.get("argsrepr"),
                    kwargs=headers.get("kwargsrepr"),
                )
            )
        except Exception as error:
            self._failed(error)

    def on_task_received(self, *, sender: Any = None, request: Any = None, **_: Any) -> None:
        try:
            if request is None or getattr(sender, "app", self.app) is not self.app:
                return
            self._requests[request.id] = request
            self._watch_worker_lost(request)
        except Exception as exc:
            self._failed(exc)

    # -- main process ----------------------------------------------------------------------------

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
        context = held.request_dict if held is not None else _own_request(task, task_id)
        self._emit_from_main(event, task.name, context, held, exc=exception, traceback=_traceback_text(einfo))

    def _emit_from_main(
        self,
        event: EventType,
        name: str,
        context: Any,
        held: Any,
        *,
        exc: BaseException | None = None,
        traceback: str | None = None,
    ) -> None:
        task_id = _get(context, "id")
        if not isinstance(task_id, str) and held is not None:
            task_id = held.id
        task_id = task_id if isinstance(task_id, str) else ""
        now = time.time()
        with self._lock:
            if self._seen_recently((task_id, event.value), time.monotonic()):
                return
        # time_start is the main process's wall-clock time of the child's acceptance.
        time_start = getattr(held, "time_start", None)
        runtime_s = now - time_start if isinstance(time_start, float) else None
        queue_wait_s = _queue_wait(context, time_start) if isinstance(time_start, float) else None
        failure = event in te.FAILURE_EVENTS
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
                args=_get(context, "args") if failure else None,
                kwargs=_get(context, "kwargs") if failure else None,
            )
        )

    def _emit_main_line(self, line: bytes) -> None:
        self._parent_lines += 1
        self.write(line)

    def _seen_recently(self, key: tuple[str, str], now: float) -> bool:
        seen = self._recent.get(key)
        if seen is not None and now - seen < _DUPLICATE_WINDOW_S:
            return True
        if len(self._recent) >= _RECENT_MAX:
            self._recent = {k: t for k, t in self._recent.items() if now - t < _DUPLICATE_WINDOW_S}
        self._recent[key] = now
        return False

    def _watch_worker_lost(self, request: Any) -> None:
        """Wrap this request's pool error callback to see lost workers Celery fires no signal for."""
        on_failure = type(request).on_failure
        ref = weakref.ref(request)
        emitter = self

        def watched_on_failure(exc_info: Any, *args: Any, **kwargs: Any) -> Any:
            held = ref()
            if held is None:
                return None
            lines_before = emitter._parent_lines
            try:
                return on_failure(held, exc_info, *args, **kwargs)
            finally:
                if emitter._parent_lines == lines_before:
                    emitter._after_silent_failure(held, exc_info)

        # The closure holds the request weakly: the pool's job already holds it while it runs.
        request.on_failure = watched_on_failure

    def _after_silent_failure(self, request: Any, exc_info: Any) -> None:
        try:
            exc = _unwrap(getattr(exc_info, "exception", None))
            # Celery treats a child's SystemExit as a lost worker too.
            if not isinstance(exc, WorkerLostError | SystemExit | KeyboardInterrupt):
                return
            if request._already_revoked or request._already_cancelled:
                return
            self._emit_from_main(
                EventType.WORKER_LOST,
                request.task.name,
                request.request_dict,
                request,
                exc=exc,
                traceback=_traceback_text(exc_info),
            )
        except Exception as error:
            self._failed(error)

    # -- lines -----------------------------------------------------------------------------------

    def _ours(self, task: Any) -> bool:
        return getattr(task, "app", None) is self.app

    def _record(
        self,
        event: EventType,
        *,
        name: str,
        task_id: str,
        context: Any,
        runtime_s: float | None = None,
        queue_wait_s: float | None = None,
        exc: BaseException | None = None,
        traceback: str | None = None,
        args: Any = None,
        kwargs: Any = None,
    ) -> bytes:
        delivery_info = _get(context, "delivery_info") or {}
        queue = delivery_info.get("routing_key") if isinstance(delivery_info, Mapping) else None
        worker = _get(context, "hostname")
        retries = _get(context, "retries")
        record: dict[str, Any] = {
            te.MARKER_KEY: te.MARKER_VALUE,
            te.F_VERSION: te.SCHEMA_VERSION,
            te.F_EVENT: event.value,
            te.F_TASK_ID: te.truncate(task_id, te.MAX_NAME_CHARS),
            te.F_TASK: te.truncate(name, te.MAX_NAME_CHARS),
            te.F_QUEUE: te.truncate(queue, te.MAX_NAME_CHARS) if isinstance(queue, str) else None,
            te.F_WORKER: te.truncate(worker, te.MAX_NAME_CHARS) if isinstance(worker, str) else None,
            te.F_RETRIES: retries if isinstance(retries, int) else 0,
            te.F_TIMESTAMP: datetime.now(UTC).isoformat(timespec="milliseconds"),
            te.F_RUNTIME: _seconds(runtime_s),
            te.F_QUEUE_WAIT: _seconds(queue_wait_s),
        }
        if exc is not None:
            record[te.F_EXC_TYPE] = te.truncate(type(exc).__name__, te.MAX_EXC_TYPE_CHARS)
            record[te.F_EXC_MESSAGE] = te.truncate(_safe_str(exc), te.MAX_EXC_MESSAGE_CHARS)
        if event in te.FAILURE_EVENTS:
            record[te.F_TRACEBACK] = te.truncate_head(traceback or "", te.MAX_TRACEBACK_CHARS)
            shown_args, shown_kwargs = self._shown_arguments(name, args, kwargs)
            record[te.F_ARGS] = shown_args
            record[te.F_KWARGS] = shown_kwargs
        return encode_line(record)

    def _shown_arguments(self, name: str, args: Any, kwargs: Any) -> tuple[str, str]:
        # Strings are reprs already (the argsrepr header of a rejected message).
        if isinstance(args, str) or isinstance(kwargs, str):
            return (
                te.truncate(args if isinstance(args, str) else "", te.MAX_REPR_CHARS),
                te.truncate(kwargs if isinstance(kwargs, str) else "", te.MAX_REPR_CHARS),
            )
        args = args if args is not None else ()
        kwargs = kwargs if kwargs is not None else {}
        if self.redact is not None:
            try:
                args, kwargs = self.redact(name, args, kwargs)
            except Exception as exc:
                self._failed(exc)
                return REDACTION_FAILED, REDACTION_FAILED
        return te.truncate(_bounded_repr(args), te.MAX_REPR_CHARS), te.truncate(
            _bounded_repr(kwargs), te.MAX_REPR_CHARS
        )

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self.errors == 1:
            try:
                message = f"celery_fleet.events: task event not written ({type(exc).__name__}: {exc}); "
                message += "further errors are counted, not reported\n"
                os.write(2, message.encode("utf-8", "backslashreplace"))
            except OSError:
                pass


def encode_line(record: dict[str, Any]) -> bytes:
    """`record` as one JSON line of at most `MAX_LINE_BYTES` bytes, shortening its long fields.

    The exception message and the argument reprs are held to their share first; the traceback
    then gets what room is left, keeping its end.
    """
    data = _dumps(record)
    if len(data) < te.MAX_LINE_BYTES:
        return data + b"\n"
    for key in (te.F_EXC_MESSAGE, te.F_ARGS, te.F_KWARGS):
        value = record.get(key)
        if isinstance(value, str):
            record[key] = _fit(value, _FIELD_SHARE_BYTES, keep_end=False)
    traceback = record.get(te.F_TRACEBACK)
    if isinstance(traceback, str):
        record[te.F_TRACEBACK] = ""
        room = te.MAX_LINE_BYTES - 1 - len(_dumps(record))
        record[te.F_TRACEBACK] = _fit(traceback, max(0, room), keep_end=True)
    data = _dumps(record)
    if len(data) >= te.MAX_LINE_BYTES:
        raise ValueError(
            f"task event line of {len(data)} bytes exceeds {te.MAX_LINE_BYTES} with its fields cut"
        )
    return data + b"\n"


def _fit(value: str, max_bytes: int, *, keep_end: bool) -> str:
    """`value` cut (with a mark) to the longest piece whose JSON encoding takes at most `max_bytes`."""

    def cut(chars: int) -> str:
        return te.truncate_head(value, chars) if keep_end else te.truncate(value, chars)

    if _encoded_len(value) <= max_bytes:
        return value
    low, high = 0, min(len(value), max_bytes)
    while low < high:
        middle = (low + high + 1) // 2
        if _encoded_len(cut(middle)) <= max_bytes:
            low = middle
        else:
            high = middle - 1
    return cut(low)


def _encoded_len(value: str) -> int:
    return len(json.dumps(value, ensure_ascii=True)) - 2


def install(app: Any, *, redact: Redact | None = None, stream: TextIO | None = None) -> TaskEventEmitter:
    """Write one task-event line per task outcome of `app`'s tasks, to stdout (or `stream`).

    `redact` sees the arguments of failed tasks before they are shown (see `Redact`). Installing
    again replaces the previous emitter. Returns the emitter (its `errors` counts lines not written).
    """
    uninstall()
    emitter = TaskEventEmitter(
        app, write=_stream_writer(stream) if stream is not None else _fd_writer(1), redact=redact
    )
    for signal, receiver in _receivers(emitter, signals):
        signal.connect(receiver, weak=False, dispatch_uid=f"celery_fleet.events.{receiver.__name__}")
    _INSTALLED.append(emitter)
    return emitter


def uninstall() -> None:
    """Disconnect the installed emitter, if any."""
    if _INSTALLED:
        _disconnect(_INSTALLED.pop())


# The emitter connected now (at most one): signals are process-wide.
_INSTALLED: list[TaskEventEmitter] = []


def _receivers(emitter: TaskEventEmitter, signals: Any) -> list[tuple[Any, Callable[..., None]]]:
    return [
        (signals.task_received, emitter.on_task_received),
        (signals.task_prerun, emitter.on_task_prerun),
        (signals.task_failure, emitter.on_task_failure),
        (signals.task_retry, emitter.on_task_retry),
        (signals.task_postrun, emitter.on_task_postrun),
        (signals.task_internal_error, emitter.on_task_internal_error),
        (signals.task_revoked, emitter.on_task_revoked),
        (signals.task_rejected, emitter.on_task_rejected),
    ]


def _disconnect(emitter: TaskEventEmitter) -> None:
    for signal, receiver in _receivers(emitter, signals):
        signal.disconnect(receiver, dispatch_uid=f"celery_fleet.events.{receiver.__name__}")


def _fd_writer(fd: int) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    return write


def _stream_writer(stream: TextIO) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        stream.write(data.decode("ascii"))
        stream.flush()

    return write


def _dumps(record: Mapping[str, Any]) -> bytes:
    # ASCII escapes: the line's byte length is then known exactly and no encoding can fail.
    return _ENCODER.encode(record).encode("ascii")


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
    if isinstance(exc, TimeLimitExceeded):
        return EventType.TIME_LIMIT_EXCEEDED
    if _is_worker_lost(exc):
        return EventType.WORKER_LOST
    return EventType.FAILED


def _is_worker_lost(exc: object) -> bool:
    return isinstance(exc, WorkerLostError)


def _is_soft_time_limit(exc: object) -> bool:
    return isinstance(exc, SoftTimeLimitExceeded)


def _unwrap(exc: object) -> object:
    # The pool sends exceptions back wrapped with their traceback text.
    inner = getattr(exc, "exc", None)
    return inner if type(exc).__name__ == "ExceptionWithTraceback" and inner is not None else exc


def _own_request(task: Any, task_id: str) -> Any:
    # Celery pushes the request's context before firing task_failure from the main process.
    request = getattr(task, "request", None)
    return request if _get(request, "id") == task_id else {"id": task_id}


def _get(context: Any, key: str) -> Any:
    # dicts, Mappings and Celery's Context (whose get() reads an attribute) all answer get().
    if context is None:
        return None
    get = getattr(context, "get", None)
    return get(key) if get is not None else getattr(context, key, None)


def _queue_wait(context: Any, started_at: float) -> float | None:
    """Seconds the attempt waited: from its send stamp, or its ETA if later, to `started_at`."""
    sent_at = _get(context, SENT_AT_HEADER)
    if sent_at is None:
        headers = _get(context, "headers")
        sent_at = headers.get(SENT_AT_HEADER) if isinstance(headers, Mapping) else None
    if isinstance(sent_at, bool) or not isinstance(sent_at, int | float):
        return None
    due = float(sent_at)
    eta = _get(context, "eta")
    if isinstance(eta, str) and eta:
        # A countdown or ETA is not waiting: it was asked for.
        try:
            when = datetime.fromisoformat(eta)
        except ValueError:
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            due = max(due, when.timestamp())
    return max(0.0, started_at - due)


def _seconds(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, 6)


def _traceback_text(einfo: Any) -> str | None:
    if einfo is None:
        return None
    text = getattr(einfo, "traceback", None)
    return text if isinstance(text, str) else None


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__}>"


def _bounded_repr(value: Any) -> str:
    try:
        return _repr.repr(value)
    except Exception:
        return f"<unreprable {type(value).__name__}>"


__all__ = ["REDACTION_FAILED", "Redact", "TaskEventEmitter", "encode_line", "install", "uninstall"]
