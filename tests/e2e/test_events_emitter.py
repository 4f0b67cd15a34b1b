"""The worker-side emitter inside real Celery task tracing (`Task.apply`), writing to a stream."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from celery_fleet import events
from celery_fleet.contract import task_events as te
from celery_fleet.contract.queue_metrics import SENT_AT_HEADER


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("emitter_test", set_as_current=False)
    yield app
    events.uninstall()


def one() -> int:
    return 1


def seven() -> int:
    return 7


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_success_writes_one_schema_line(app: Celery) -> None:
    stream = io.StringIO()
    events.install(app, stream=stream)
    task = app.task(name="t.ok")(one)

    result = task.apply(task_id="id-1")

    (line,) = _lines(stream)
    assert result.get() == 1
    assert {k: line[k] for k in (te.MARKER_KEY, te.F_VERSION, te.F_EVENT, te.F_TASK_ID, te.F_TASK)} == {
        te.MARKER_KEY: te.MARKER_VALUE,
        te.F_VERSION: te.SCHEMA_VERSION,
        te.F_EVENT: "succeeded",
        te.F_TASK_ID: "id-1",
        te.F_TASK: "t.ok",
    }
    assert line[te.F_RUNTIME] >= 0
    assert te.F_TRACEBACK not in line


def test_queue_wait_is_measured_from_the_send_stamp(app: Celery) -> None:
    stream = io.StringIO()
    events.install(app, stream=stream)
    task = app.task(name="t.ok")(one)

    task.apply(headers={SENT_AT_HEADER: time.time() - 30})

    (line,) = _lines(stream)
    assert 30 <= line[te.F_QUEUE_WAIT] < 60


def test_without_a_send_stamp_queue_wait_is_null(app: Celery) -> None:
    stream = io.StringIO()
    events.install(app, stream=stream)
    task = app.task(name="t.ok")(one)

    task.apply()

    assert _lines(stream)[0][te.F_QUEUE_WAIT] is None


def test_a_failure_line_stays_within_pipe_buf_with_huge_arguments_and_traceback(app: Celery) -> None:
    stream = io.StringIO()
    events.install(app, stream=stream)

    def deep(n: int, blob: str) -> None:
        if n:
            deep(n - 1, blob)
        raise RuntimeError("é" * 5000)

    task = app.task(name="t.deep")(deep)

    task.apply(args=(60, "x" * 100_000))

    (line,) = _lines(stream)
    assert len(stream.getvalue().encode()) <= te.MAX_LINE_BYTES
    assert (line[te.F_EVENT], line[te.F_EXC_TYPE]) == ("failed", "RuntimeError")
    assert line[te.F_TRACEBACK].rstrip().endswith("é")
    assert line[te.F_ARGS].startswith("(60, 'xxx")


def test_the_redact_hook_sees_the_arguments_before_they_are_shown(app: Celery) -> None:
    stream = io.StringIO()

    def redact(
        name: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> tuple[Sequence[Any], Mapping[str, Any]]:
        return ["<hidden>"] * len(args), dict.fromkeys(kwargs, "<hidden>")

    events.install(app, stream=stream, redact=redact)

    def charge(card: str, *, cvv: str) -> None:
        raise ValueError("declined")

    app.task(name="t.charge")(charge).apply(args=("4111111111111111",), kwargs={"cvv": "123"})

    (line,) = _lines(stream)
    assert (line[te.F_ARGS], line[te.F_KWARGS]) == ("['<hidden>']", "{'cvv': '<hidden>'}")


def test_a_failing_redact_hook_shows_no_arguments(app: Celery) -> None:
    stream = io.StringIO()

    def redact(
        name: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> tuple[Sequence[Any], Mapping[str, Any]]:
        raise KeyError("oops")

    emitter = events.install(app, stream=stream, redact=redact)

    def charge(card: str) -> None:
        raise ValueError("declined")

    app.task(name="t.charge")(charge).apply(args=("4111111111111111",))

    (line,) = _lines(stream)
    assert (line[te.F_ARGS], line[te.F_KWARGS]) == (events.REDACTION_FAILED, events.REDACTION_FAILED)
    assert emitter.errors == 1


def test_a_broken_stream_never_reaches_the_task(app: Celery) -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("stdout closed")

    emitter = events.install(app, stream=Broken())
    task = app.task(name="t.ok")(seven)

    result = task.apply()

    assert (result.get(), emitter.errors) == (7, 1)


def test_an_uncaught_soft_time_limit_is_a_time_limit_event(app: Celery) -> None:
    stream = io.StringIO()
    events.install(app, stream=stream)

    def slow() -> None:
        raise SoftTimeLimitExceeded()

    app.task(name="t.slow")(slow).apply()

    assert _lines(stream)[0][te.F_EVENT] == "time_limit_exceeded"


def test_installing_again_replaces_the_previous_emitter(app: Celery) -> None:
    first, second = io.StringIO(), io.StringIO()
    events.install(app, stream=first)
    events.install(app, stream=second)

    app.task(name="t.ok")(one).apply()

    assert (len(_lines(first)), len(_lines(second))) == (0, 1)


def test_tasks_of_another_app_are_not_reported(app: Celery) -> None:
    stream = io.StringIO()
    events.install(app, stream=stream)
    other = Celery("other", set_as_current=False)

    other.task(name="t.other")(one).apply()

    assert stream.getvalue() == ""


def test_encode_line_cuts_the_traceback_from_its_start() -> None:
    record = {te.F_TASK: "t", te.F_TRACEBACK: "start\n" + "frame\n" * 2000 + "ValueError: last line"}

    line = events.encode_line(record)

    assert len(line) <= te.MAX_LINE_BYTES
    decoded = json.loads(line)
    assert decoded[te.F_TRACEBACK].endswith("ValueError: last line")
    assert decoded[te.F_TRACEBACK].startswith(te.TRUNCATED_MARK)
