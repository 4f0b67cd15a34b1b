"""The worker-lost hook: the lost workers Celery reports with no signal at all.

With `acks_late` and `reject_on_worker_lost`, a task whose pool child died is requeued and Celery
fires no signal. To still count it, the main process wraps each received request's `on_failure`
(the pool's error callback, `celery_fleet.worker_lost.chain_on_failure`) and writes `worker_lost`
when a lost worker's failure went through it without a line from the main process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery.exceptions import WorkerLostError

from celery_fleet.celery_support import unwrap_pool_exception
from celery_fleet.contract.task_events import EventType
from celery_fleet.events.context import traceback_text
from celery_fleet.never_raise import never_raise
from celery_fleet.worker_lost import InnerOnFailure, chain_on_failure

if TYPE_CHECKING:
    from celery_fleet.events.receivers import TaskEventEmitter


class WorkerLostHook:
    """Wraps the requests `emitter` receives; reports through it, and counts its errors there."""

    def __init__(self, emitter: TaskEventEmitter) -> None:
        self._emitter = emitter

    def watch(self, request: Any) -> None:
        """Wrap this request's pool error callback to see lost workers Celery fires no signal for."""
        chain_on_failure(request, self._on_failure)

    def _on_failure(self, request: Any, exc_info: Any, inner: InnerOnFailure) -> Any:
        lines_before = self._emitter.main_lines
        try:
            return inner(exc_info)
        finally:
            if self._emitter.main_lines == lines_before:
                self._after_silent_failure(request, exc_info)

    @never_raise
    def _after_silent_failure(self, request: Any, exc_info: Any) -> None:
        exc = unwrap_pool_exception(getattr(exc_info, "exception", None))
        # Celery treats a child's SystemExit as a lost worker too.
        if not isinstance(exc, WorkerLostError | SystemExit | KeyboardInterrupt):
            return
        if request._already_revoked or request._already_cancelled:
            return
        self._emitter.emit_from_main(
            EventType.WORKER_LOST,
            request.task.name,
            request.request_dict,
            request,
            exc=exc,
            traceback=traceback_text(exc_info),
        )

    def _failed(self, exc: BaseException) -> None:
        self._emitter._failed(exc)
