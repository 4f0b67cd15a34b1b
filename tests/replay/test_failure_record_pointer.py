"""A failure line's kept-message key and replay link reach the failure record the CLI reads."""

from __future__ import annotations

from celery_fleet.contract import kept_messages as km
from celery_fleet.contract import task_events as te
from celery_fleet.events import build_record, encode_line
from task_events.logic import failure_record
from task_events.models import LINE


def test_the_failure_record_points_to_the_kept_message_and_the_replayed_task() -> None:
    values = {
        te.F_EVENT: "failed",
        te.F_TASK_ID: "new-1",
        te.F_TASK: "app.charge",
        te.F_QUEUE: "default",
        te.F_WORKER: "celery@w1",
        te.F_RETRIES: 0,
        te.F_TIMESTAMP: "2026-11-30T14:00:00.000+00:00",
        te.F_RUNTIME: 0.1,
        te.F_QUEUE_WAIT: None,
        te.F_EXC_TYPE: "ConnectionError",
        te.F_EXC_MESSAGE: "down",
        te.F_EXC_FRAME: "app.py:charge",
        te.F_TRACEBACK: "Traceback ...",
        te.F_ARGS: "(1,)",
        te.F_KWARGS: "{}",
        te.F_KEPT_MESSAGE: km.message_key("new-1"),
        te.F_REPLAY_OF: "orig-1",
    }
    line = LINE.validate_json(encode_line(build_record(values)).rstrip(b"\n"))

    record = failure_record(line, log_group="workers", log_stream="w1")

    assert (record["kept_message"], record["replay_of"]) == ("messages/new-1.json", "orig-1")
