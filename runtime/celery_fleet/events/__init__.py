"""Task events: exactly one JSON line on stdout per task outcome, for the ingest Lambda.

`install(app)` connects Celery's signals; nothing is kept per task beyond the tasks running now.
By job:

* `receivers`: the signal receivers (`TaskEventEmitter`): which signal reports which outcome, in
  which process, written once per delivery;
* `lost`: the worker-lost hook, for the lost workers Celery requeues without any signal;
* `line`: one outcome's line: the contract's fields within their bounds, cut to fit, signed
  (`build_record`, `encode_line`);
* `redaction` and `tracebacks`: what a failure line shows of the arguments and of the exception;
* `context`: reading the request contexts, messages and failure info the signals hand over.

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

import os
from collections.abc import Callable
from typing import Any, TextIO

from celery import signals

from celery_fleet.celery_support import check_celery
from celery_fleet.contract import task_events as te
from celery_fleet.contract import worker_env
from celery_fleet.events.context import UNDECODABLE
from celery_fleet.events.line import build_record, encode_line
from celery_fleet.events.receivers import TaskEventEmitter, warn
from celery_fleet.events.redaction import REDACTED, REDACTION_FAILED, Redact


def install(
    app: Any, *, redact: Redact | None = None, stream: TextIO | None = None, key: bytes | None = None
) -> TaskEventEmitter:
    """Write one signed task-event line per task outcome of `app`'s tasks, to stdout (or `stream`).

    `redact` sees the arguments of failed tasks before they are shown (see `Redact`). The signing
    key is `key`, else the value of `EVENT_KEY_ENV`, which is then removed from the environment;
    without either, lines are unsigned and the ingester counts them as forged (a warning on stderr
    says so). Installing again replaces the previous emitter. Returns the emitter (its `errors`
    counts lines not written). Raises `UnsupportedCeleryError` when the installed Celery lacks an
    internal the emitter relies on (`celery_fleet.celery_support`).
    """
    check_celery()
    return install_checked(app, redact=redact, stream=stream, key=key)


def install_checked(
    app: Any, *, redact: Redact | None = None, stream: TextIO | None = None, key: bytes | None = None
) -> TaskEventEmitter:
    """`install`, for a caller that has just run `check_celery()` itself (`celery_fleet.configure`):
    the check, and its warning for a Celery outside the supported range, once per configure."""
    uninstall()
    if key is None:
        secret = os.environ.pop(worker_env.EVENT_KEY_ENV, None)
        key = te.key_from_secret(secret) if secret else _INSTALLED_KEYS[-1] if _INSTALLED_KEYS else None
        if key is not None:
            # Kept for a later install in this process (the variable is gone from the environment).
            _INSTALLED_KEYS[:] = [key]
        else:
            warn(
                f"celery_fleet.events: {worker_env.EVENT_KEY_ENV} is not set; task-event lines are "
                "unsigned and the ingester counts them as ForgedEvents, not as outcomes\n"
            )
    emitter = TaskEventEmitter(
        app,
        write=_stream_writer(stream) if stream is not None else _fd_writer(1),
        redact=redact,
        key=key,
    )
    for signal, receiver in _receivers(emitter):
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


def _receivers(emitter: TaskEventEmitter) -> list[tuple[Any, Callable[..., None]]]:
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
    for signal, receiver in _receivers(emitter):
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


__all__ = [
    "REDACTED",
    "REDACTION_FAILED",
    "UNDECODABLE",
    "Redact",
    "TaskEventEmitter",
    "build_record",
    "encode_line",
    "install",
    "install_checked",
    "uninstall",
]
