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
  with it (`retry_on_worker_lost`); `task_rejected` (a message it cannot decode); `task_unknown`
  (a message for a task it does not have).
* With `acks_late` and `reject_on_worker_lost`, a lost worker's task is requeued and Celery fires
  no signal at all. To still count it, the main process wraps each received request's
  `on_failure` (the pool's error callback) and writes `worker_lost` when a `WorkerLostError` went
  through it without a signal.

Every line is signed (`celery_fleet.contract.task_events.sign`) with the stage's key, read once from
`EVENT_KEY_ENV` and removed from the environment: whatever a task prints, logs or raises may look
like a line, but only the emitter can sign one. Every value a task controls (arguments, exception
messages, the exception lines of tracebacks, a rejected message's arguments) passes through the
redaction hook first, and every field is cut to its bound in encoded bytes.

Lines go to file descriptor 1 with one `write()` each, not through `sys.stdout`: the worker
redirects `sys.stdout` into its logger by default, and buffered writers from several processes
could interleave. Every line fits in PIPE_BUF (`MAX_LINE_BYTES`), which makes each write atomic.
Nothing here raises into a task: errors are counted and the first one is reported on stderr.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import reprlib
import sys
import sysconfig
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from traceback import StackSummary, extract_tb
from typing import Any, TextIO

from celery import signals
from celery.exceptions import (
    NotRegistered,
    Reject,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
    WorkerLostError,
)

from celery_fleet import keep
from celery_fleet.contract import task_events as te
from celery_fleet.contract.kept_messages import REPLAY_OF_HEADER
from celery_fleet.contract.queue_metrics import SENT_AT_HEADER
from celery_fleet.contract.task_events import EventType
from celery_fleet.worker_lost import InnerOnFailure, PoisonMessageError, chain_on_failure

Redact = Callable[[str, Sequence[Any], Mapping[str, Any]], tuple[Sequence[Any], Mapping[str, Any]]]
"""`redact(task_name, args, kwargs) -> (args, kwargs)`: what a failure line may show of the arguments.

Called once per failure line, before the arguments are turned into bounded reprs. Every argument
value the hook changed is also cut out of the exception message and of the exception lines of the
traceback (a `ValueError(f"bad password {password}")` does not show the password the hook hid). If
the hook raises, the line shows none of them (`REDACTION_FAILED`), never the unredacted values.
Text that never was an argument (a secret read from a database) cannot be found this way: keep it
out of exception messages.
"""

REDACTION_FAILED = "<redaction failed>"
# What replaces an argument value the hook hid, wherever it appears in text.
REDACTED = "<redacted>"
UNDECODABLE = "<undecodable message>"

# Both hard-limit signals come from one pool callback, microseconds apart.
_DUPLICATE_WINDOW_S = 1.0
# The outcomes already written for a delivery, on its Request.
_REPORTED_ATTR = "_celery_fleet_reported"
_RECENT_MAX = 256
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)
# Encoded bytes each of the exception message, args and kwargs may keep when a line is too long.
_FIELD_SHARE_BYTES = 512
_EXCEPTION_EVENTS = te.FAILURE_EVENTS | {EventType.RETRIED}
# Shorter values are left in text: hiding every "1" or "ok" would garble messages, not protect them.
_MIN_SECRET_CHARS = 3
_MAX_SECRETS = 64
_MAX_CHAIN = 8

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
    # The exception chain with its frames, taken when the task raised (the traceback objects do not
    # outlive Celery's failure handling): rendered with the redacted text at task_postrun.
    chain: list[tuple[BaseException, StackSummary, str]] = field(default_factory=list)
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
                if exception is not None:
                    attempt.chain = _exception_chain(exception)
                    attempt.frame = _user_frame(exception)
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
                chain=attempt.chain if exc is attempt.exc else None,
                frame=attempt.frame if exc is attempt.exc else "",
                args=_get(request, "args") if event in _EXCEPTION_EVENTS else None,
                kwargs=_get(request, "kwargs") if event in _EXCEPTION_EVENTS else None,
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
                    chain=_exception_chain(exception) if exception is not None else None,
                    frame=_user_frame(exception) if exception is not None else "",
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
            self._emit_message_outcome(EventType.REJECTED, sender, message, exc)
        except Exception as error:
            self._failed(error)

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
        try:
            if message is None or getattr(sender, "app", self.app) is not self.app:
                return
            # Celery passes the KeyError of its lookup; what it stores as the result is NotRegistered.
            failure = NotRegistered(name) if isinstance(name, str) else exc
            self._emit_message_outcome(
                EventType.UNKNOWN_TASK, sender, message, failure, name=name, task_id=id
            )
        except Exception as error:
            self._failed(error)

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
        args, kwargs = _message_arguments(message)
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
            if self._reported_already(held, task_id, event):
                return
        # time_start is the main process's wall-clock time of the child's acceptance.
        time_start = getattr(held, "time_start", None)
        runtime_s = now - time_start if isinstance(time_start, float) else None
        queue_wait_s = _queue_wait(context, time_start) if isinstance(time_start, float) else None
        # A retry shows no arguments, but its message is cleaned of what the hook hides too.
        failure = event in _EXCEPTION_EVENTS
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

    def _watch_worker_lost(self, request: Any) -> None:
        """Wrap this request's pool error callback to see lost workers Celery fires no signal for."""
        chain_on_failure(request, self._watched_on_failure)

    def _watched_on_failure(self, request: Any, exc_info: Any, inner: InnerOnFailure) -> Any:
        lines_before = self._parent_lines
        try:
            return inner(exc_info)
        finally:
            if self._parent_lines == lines_before:
                self._after_silent_failure(request, exc_info)

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
        chain: list[tuple[BaseException, StackSummary, str]] | None = None,
        frame: str = "",
        args: Any = None,
        kwargs: Any = None,
    ) -> bytes:
        delivery_info = _get(context, "delivery_info") or {}
        queue = delivery_info.get("routing_key") if isinstance(delivery_info, Mapping) else None
        worker = _get(context, "hostname")
        values: dict[str, Any] = {
            te.F_EVENT: event,
            te.F_TASK_ID: task_id,
            te.F_TASK: name,
            te.F_QUEUE: queue if isinstance(queue, str) else None,
            te.F_WORKER: worker if isinstance(worker, str) else None,
            te.F_RETRIES: _get(context, "retries"),
            te.F_TIMESTAMP: datetime.now(UTC).isoformat(timespec="milliseconds"),
            te.F_RUNTIME: runtime_s,
            te.F_QUEUE_WAIT: queue_wait_s,
        }
        replay_of = _get(context, REPLAY_OF_HEADER)
        if isinstance(replay_of, str) and replay_of:
            values[te.F_REPLAY_OF] = replay_of
        if event in _EXCEPTION_EVENTS:
            shown = self._shown(name, args, kwargs)
            if exc is not None:
                values[te.F_EXC_TYPE] = type(exc).__name__
                values[te.F_EXC_MESSAGE] = shown.scrub(_safe_str(exc))
            if event in te.FAILURE_EVENTS:
                values[te.F_EXC_FRAME] = frame
                values[te.F_TRACEBACK] = (
                    _render_traceback(chain, shown.scrub) if chain else shown.scrub(traceback or "")
                )
                values[te.F_ARGS] = shown.args
                values[te.F_KWARGS] = shown.kwargs
                # The keeper ran first on the same failure (celery_fleet.keep): its key, if any.
                kept = keep.kept_key(task_id)
                if kept is not None:
                    values[te.F_KEPT_MESSAGE] = kept
        return encode_line(build_record(values), key=self.key)

    def _shown(self, name: str, args: Any, kwargs: Any) -> _Shown:
        """What a failure line shows of the arguments, and how text is cleaned of what was hidden."""
        args = args if args is not None else ()
        kwargs = kwargs if kwargs is not None else {}
        if self.redact is None:
            return _Shown(_bounded_repr(args), _bounded_repr(kwargs), _no_scrub)
        try:
            shown_args, shown_kwargs = self.redact(name, args, kwargs)
            secrets: list[str] = []
            _changed(args, shown_args, secrets, 0)
            _changed(kwargs, shown_kwargs, secrets, 0)
        except Exception as exc:
            self._failed(exc)
            return _Shown(REDACTION_FAILED, REDACTION_FAILED, _hide_all)
        return _Shown(_bounded_repr(shown_args), _bounded_repr(shown_kwargs), _scrubber(secrets))

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self.errors == 1:
            try:
                message = f"celery_fleet.events: task event not written ({type(exc).__name__}: {exc}); "
                message += "further errors are counted, not reported\n"
                _warn(message)
            except Exception:
                pass


def build_record(values: Mapping[str, Any]) -> dict[str, Any]:
    """The line's fields from `values` (by field key), in the contract's order, each within its bounds.

    Constant fields (marker, version) are filled in; an `always` field missing from `values`, or a
    key the contract does not define, is a ValueError.
    """
    event = EventType(values[te.F_EVENT])
    exception = event in _EXCEPTION_EVENTS
    failure = event in te.FAILURE_EVENTS
    record: dict[str, Any] = {}
    for key, presence, constant, bound in _plan():
        if constant is not None:
            record[key] = constant
        elif key in values:
            if (presence is te.Presence.EXCEPTION and not exception) or (
                presence is te.Presence.FAILURE and not failure
            ):
                continue
            record[key] = bound(values[key])
        elif presence is te.Presence.ALWAYS:
            raise ValueError(f"task event field {key!r} has no value")
    if len(values) + 2 > len(record):
        unknown = set(values) - te.FIELD_BY_KEY.keys()
        if unknown:
            raise ValueError(f"task event fields {sorted(unknown)} are not in the contract")
    return record


_Plan = tuple[tuple[str, te.Presence, object, Callable[[Any], Any]], ...]
_PLANS: list[tuple[tuple[te.FieldSpec, ...], _Plan]] = []


def _plan() -> _Plan:
    """Per contract field: its key, presence, constant and a function bounding a value for it
    (made once: the common values, short ASCII strings and numbers in range, pass at C speed)."""
    if not _PLANS or _PLANS[0][0] is not te.FIELDS:
        _PLANS[:] = [(te.FIELDS, tuple((s.key, s.presence, s.constant, _bounder(s)) for s in te.FIELDS))]
    return _PLANS[0][1]


def _bounder(spec: te.FieldSpec) -> Callable[[Any], Any]:
    def slow(value: Any) -> Any:
        return _bounded(spec, value)

    if spec.type is str and spec.max_bytes is not None:
        cap = spec.max_bytes + 2  # with the quotes

        def text(value: Any) -> Any:
            if type(value) is str and value.isascii() and len(encode_basestring_ascii(value)) <= cap:
                return value
            return slow(value)

        return text
    if spec.type in (int, float) and spec.minimum is not None and spec.maximum is not None:
        low, high, kind = spec.minimum, spec.maximum, spec.type

        def number(value: Any) -> Any:
            # NaN fails both comparisons, infinities one: they take the slow path.
            if type(value) is kind and low <= value <= high:
                return value if kind is int else round(value, 6)
            return slow(value)

        return number
    return slow


def _bounded(spec: te.FieldSpec, value: Any) -> Any:  # noqa: PLR0911 (one return per type)
    if value is None and spec.nullable:
        return None
    if spec.type is str:
        text = value if isinstance(value, str) else ("" if value is None else str(value))
        if not text.isascii():
            # A lone surrogate is valid in a Python str, not in JSON: it would void the line.
            text = text.encode("utf-8", "replace").decode("utf-8")
        return _fit(text, spec.max_bytes, keep_end=spec.keep_end) if spec.max_bytes is not None else text
    if spec.type is int:
        number = value if isinstance(value, int) and not isinstance(value, bool) else 0
        low = int(spec.minimum) if spec.minimum is not None else number
        high = int(spec.maximum) if spec.maximum is not None else number
        return min(max(number, low), high)
    if spec.type is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return None if spec.nullable else 0.0
        seconds = round(float(value), 6)
        if (spec.minimum is not None and seconds < spec.minimum) or (
            spec.maximum is not None and seconds > spec.maximum
        ):
            # Out of any real range: a clock jump, never a measurement.
            return None if spec.nullable else 0.0
        return seconds
    return spec.type(value).value


def encode_line(record: dict[str, Any], *, key: bytes | None = None) -> bytes:
    """`record` as one JSON line of at most `MAX_LINE_BYTES` bytes, signed with `key` when given,
    shortening its long fields.

    The exception message and the argument reprs are held to their share first; the traceback
    then gets what room is left, keeping its end.
    """
    limit = te.MAX_LINE_BYTES - 1 - (_SIGNATURE_BYTES if key is not None else 0)
    data = _dumps(record)
    if len(data) > limit:
        for name in (te.F_EXC_MESSAGE, te.F_ARGS, te.F_KWARGS):
            value = record.get(name)
            if isinstance(value, str):
                record[name] = _fit(value, _FIELD_SHARE_BYTES, keep_end=False)
        traceback = record.get(te.F_TRACEBACK)
        if isinstance(traceback, str):
            record[te.F_TRACEBACK] = ""
            room = limit - len(_dumps(record))
            record[te.F_TRACEBACK] = _fit(traceback, max(0, room), keep_end=True)
        data = _dumps(record)
        if len(data) > limit:
            raise ValueError(f"task event line of {len(data)} bytes exceeds {limit} with its fields cut")
    if key is not None:
        data = te.sign(data, key)
    return data + b"\n"


# `,"mac":"` + 64 hex digits + `"`: what signing adds to a line.
_SIGNATURE_BYTES = len(te.sign(b"{}", b"k")) - len(b"{}")


def _fit(value: str, max_bytes: int, *, keep_end: bool) -> str:
    """`value` cut (with a mark) to the longest piece whose JSON encoding takes at most `max_bytes`."""

    def cut(chars: int) -> str:
        return te.truncate_head(value, chars) if keep_end else te.truncate(value, chars)

    # 12 bytes a character at most: an astral one is escaped as a surrogate pair.
    if len(value) * 12 <= max_bytes or _encoded_len(value) <= max_bytes:
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
    return len(encode_basestring_ascii(value)) - 2


def install(
    app: Any, *, redact: Redact | None = None, stream: TextIO | None = None, key: bytes | None = None
) -> TaskEventEmitter:
    """Write one signed task-event line per task outcome of `app`'s tasks, to stdout (or `stream`).

    `redact` sees the arguments of failed tasks before they are shown (see `Redact`). The signing
    key is `key`, else the value of `EVENT_KEY_ENV`, which is then removed from the environment;
    without either, lines are unsigned and the ingester counts them as forged (a warning on stderr
    says so). Installing again replaces the previous emitter. Returns the emitter (its `errors`
    counts lines not written).
    """
    uninstall()
    if key is None:
        secret = os.environ.pop(te.EVENT_KEY_ENV, None)
        key = te.key_from_secret(secret) if secret else _INSTALLED_KEYS[-1] if _INSTALLED_KEYS else None
        if key is not None:
            # Kept for a later install in this process (the variable is gone from the environment).
            _INSTALLED_KEYS[:] = [key]
        else:
            _warn(
                f"celery_fleet.events: {te.EVENT_KEY_ENV} is not set; task-event lines are unsigned "
                "and the ingester counts them as ForgedEvents, not as outcomes\n"
            )
    emitter = TaskEventEmitter(
        app,
        write=_stream_writer(stream) if stream is not None else _fd_writer(1),
        redact=redact,
        key=key,
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
_INSTALLED_KEYS: list[bytes] = []


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
        (signals.task_unknown, emitter.on_task_unknown),
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


def _warn(message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, message.encode("utf-8", "backslashreplace"))


@dataclass(frozen=True, slots=True)
class _Shown:
    args: str
    kwargs: str
    scrub: Callable[[str], str]


def _no_scrub(text: str) -> str:
    return text


def _hide_all(text: str) -> str:
    return REDACTION_FAILED if text else text


def _scrubber(secrets: list[str]) -> Callable[[str], str]:
    if not secrets:
        return _no_scrub
    # Longest first: a secret that contains another is cut whole.
    ordered = sorted(set(secrets), key=len, reverse=True)

    def scrub(text: str) -> str:
        for secret in ordered:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    return scrub


def _changed(original: Any, shown: Any, secrets: list[str], depth: int) -> None:
    """Collect in `secrets` the text of every value of `original` the hook changed in `shown`."""
    if len(secrets) >= _MAX_SECRETS or original is shown:
        return
    if depth < 4 and isinstance(original, Mapping) and isinstance(shown, Mapping):
        for key, value in original.items():
            if key in shown:
                _changed(value, shown[key], secrets, depth + 1)
            else:
                _leaves(value, secrets, depth + 1)
        return
    if (
        depth < 4
        and isinstance(original, list | tuple)
        and isinstance(shown, list | tuple)
        and len(original) == len(shown)
    ):
        for value, shown_value in zip(original, shown, strict=True):
            _changed(value, shown_value, secrets, depth + 1)
        return
    try:
        same = bool(original == shown)
    except Exception:
        same = False
    if not same:
        _leaves(original, secrets, depth)


def _leaves(value: Any, secrets: list[str], depth: int) -> None:
    if len(secrets) >= _MAX_SECRETS:
        return
    if isinstance(value, str):
        text = value
    elif isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        text = str(value)
    elif depth < 4 and isinstance(value, Mapping):
        for item in list(value.values())[:_MAX_SECRETS]:
            _leaves(item, secrets, depth + 1)
        return
    elif depth < 4 and isinstance(value, list | tuple | set | frozenset):
        for item in list(value)[:_MAX_SECRETS]:
            _leaves(item, secrets, depth + 1)
        return
    else:
        return
    if len(text) >= _MIN_SECRET_CHARS:
        secrets.append(text)


def _exception_chain(exc: BaseException) -> list[tuple[BaseException, StackSummary, str]]:
    """`exc` and its causes, outermost cause first as Python prints them: (exception, frames, the
    sentence that links it to the next one)."""
    chain: list[tuple[BaseException, StackSummary, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link = ""
    while current is not None and id(current) not in seen and len(chain) < _MAX_CHAIN:
        seen.add(id(current))
        chain.insert(0, (current, extract_tb(current.__traceback__, limit=64), link))
        if current.__cause__ is not None:
            current, link = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, _CONTEXT
        else:
            current = None
    return chain


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def _render_traceback(
    chain: list[tuple[BaseException, StackSummary, str]], scrub: Callable[[str], str]
) -> str:
    """The traceback as Python prints it, each exception line passed through `scrub`."""
    parts: list[str] = []
    for exc, stack, link in chain:
        if stack:
            parts.append("Traceback (most recent call last):\n")
            # As Python prints frames, without 3.11's caret lines: they cost a parse of each line.
            for frame in stack:
                parts.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}\n')
                if frame.line:
                    parts.append(f"    {frame.line.strip()}\n")
        kind = type(exc)
        name = kind.__qualname__
        if kind.__module__ not in ("builtins", "__main__"):
            name = f"{kind.__module__}.{name}"
        message = scrub(_safe_str(exc))
        parts.append(f"{name}: {message}\n" if message else f"{name}\n")
        # The link printed after an exception introduces the one raised while handling it.
        if link:
            parts.append(link)
    return "".join(parts)


def _library_prefixes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Directories of Python and Celery's own code, and of installed third-party packages."""
    paths = sysconfig.get_paths()
    own = {paths[name] for name in ("stdlib", "platstdlib") if name in paths}
    for module_name in ("celery", "billiard", "kombu", "vine", "celery_fleet"):
        module = sys.modules.get(module_name)
        location = getattr(module, "__file__", None)
        if isinstance(location, str):
            own.add(os.path.dirname(location))
    installed = {paths[name] for name in ("purelib", "platlib") if name in paths}
    return tuple(os.path.join(p, "") for p in own), tuple(os.path.join(p, "") for p in installed)


_LIBRARIES: list[tuple[tuple[str, ...], tuple[str, ...]]] = []


def _user_frame(exc: BaseException) -> str:
    """`path:function` of the innermost frame of `exc`'s traceback in the application's code: not
    Python's, Celery's or celery_fleet's, and preferably not an installed package's. "" if none."""
    try:
        if not _LIBRARIES:
            _LIBRARIES.append(_library_prefixes())
        own, installed = _LIBRARIES[0]
        tb = exc.__traceback__
        best = fallback = None
        while tb is not None:
            code = tb.tb_frame.f_code
            filename = code.co_filename
            if not filename.startswith("<") and not filename.startswith(own):
                fallback = code
                if not filename.startswith(installed):
                    best = code
            tb = tb.tb_next
        chosen = best or fallback
        if chosen is None:
            return ""
        return f"{_relative(chosen.co_filename)}:{chosen.co_qualname}"
    except Exception:
        return ""


def _relative(filename: str) -> str:
    # Relative to the import root it was found under, so the same code gives the same path anywhere.
    path = tuple(sys.path)
    if not _ROOTS or _ROOTS[0][0] != path:
        _ROOTS[:] = [(path, [os.path.join(p, "") for p in path if p and os.path.isabs(p)])]
    matching = [root for root in _ROOTS[0][1] if filename.startswith(root)]
    if matching:
        return filename[len(max(matching, key=len)) :]
    return os.path.basename(filename)


_ROOTS: list[tuple[tuple[str, ...], list[str]]] = []


def _message_arguments(message: Any) -> tuple[Any, Any]:
    """The (args, kwargs) a message's body holds (task protocol 2 or 1), or text saying it has none."""
    try:
        body = message.decode()
    except Exception:
        return UNDECODABLE, UNDECODABLE
    if isinstance(body, list | tuple) and len(body) >= 2:
        return body[0], body[1]
    if isinstance(body, Mapping):
        return body.get("args", ()), body.get("kwargs", {})
    return UNDECODABLE, UNDECODABLE


__all__ = [
    "REDACTED",
    "REDACTION_FAILED",
    "Redact",
    "TaskEventEmitter",
    "build_record",
    "encode_line",
    "install",
    "uninstall",
]
