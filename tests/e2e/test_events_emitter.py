"""The worker-side emitter inside real Celery task tracing (`Task.apply`), writing to a stream."""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from celery_fleet import events
from celery_fleet.contract import task_events as te
from celery_fleet.contract import worker_env
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


KEY = b"emitter-test-key"


def _allowed(event: str, *, required: bool = False) -> set[str]:
    """The contract's fields a line of `event` may carry (`required`: must carry)."""
    presences = {te.Presence.ALWAYS}
    if event in te.FAILURE_EVENTS or event == te.EventType.RETRIED:
        presences.add(te.Presence.EXCEPTION)
    if event in te.FAILURE_EVENTS:
        presences.add(te.Presence.FAILURE)
    if not required:
        presences |= set(te.Presence) - {te.Presence.EXCEPTION, te.Presence.FAILURE}
    return {spec.key for spec in te.FIELDS if spec.presence in presences and not (required and spec.optional)}


def test_each_line_carries_exactly_the_contracts_fields_for_its_outcome(app: Celery) -> None:
    stream = io.StringIO()
    events.install(app, stream=stream, key=KEY)

    def flaky() -> None:
        raise flaky_task.retry(exc=ConnectionError("down"), countdown=60)

    def boom() -> None:
        raise ValueError("boom")

    app.task(name="t.ok")(one).apply()
    app.task(name="t.boom")(boom).apply()
    flaky_task = app.task(name="t.flaky", bind=False)(flaky)
    flaky_task.apply()

    lines = stream.getvalue().splitlines()
    records = [json.loads(te.verify(line, [KEY]) or "null") for line in lines]
    # Eager retries run at once, until Celery's default max_retries ends them in a failure.
    assert {r[te.F_EVENT] for r in records} == {"succeeded", "failed", "retried"}
    for record in records:
        assert _allowed(record[te.F_EVENT], required=True) <= set(record) <= _allowed(record[te.F_EVENT])


def test_build_record_refuses_a_field_the_contract_does_not_define() -> None:
    values = {te.F_EVENT: "succeeded", te.F_TASK_ID: "i", te.F_TASK: "t", te.F_QUEUE: None, te.F_WORKER: None,
              te.F_RETRIES: 0, te.F_TIMESTAMP: "2026-01-01T00:00:00.000+00:00", te.F_RUNTIME: 1.0,
              te.F_QUEUE_WAIT: None}  # fmt: skip

    assert set(events.build_record(values)) == _allowed("succeeded", required=True)
    with pytest.raises(ValueError, match="not in the contract"):
        events.build_record({**values, "replays": "abc"})
    with pytest.raises(ValueError, match="'task' has no value"):
        events.build_record({k: v for k, v in values.items() if k != te.F_TASK})


def test_lines_are_signed_with_the_key_from_the_environment_which_is_then_removed(
    app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "_INSTALLED_KEYS", [])
    monkeypatch.setenv(worker_env.EVENT_KEY_ENV, "stage-key\n")
    stream = io.StringIO()
    events.install(app, stream=stream)

    app.task(name="t.ok")(one).apply()

    assert worker_env.EVENT_KEY_ENV not in os.environ
    assert te.verify(stream.getvalue().rstrip("\n"), [b"stage-key"]) is not None


def test_without_a_key_lines_are_unsigned_and_a_warning_says_so(
    app: Celery, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(events, "_INSTALLED_KEYS", [])
    monkeypatch.delenv(worker_env.EVENT_KEY_ENV, raising=False)
    stream = io.StringIO()
    events.install(app, stream=stream)

    app.task(name="t.ok")(one).apply()

    (line,) = _lines(stream)
    assert te.F_MAC not in line
    assert "ForgedEvents" in capfd.readouterr().err


def test_an_argument_the_hook_hides_is_cut_from_the_message_and_the_traceback(app: Celery) -> None:
    stream = io.StringIO()

    def redact(
        name: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> tuple[Sequence[Any], Mapping[str, Any]]:
        return args, {k: "***" if k == "token" else v for k, v in kwargs.items()}

    events.install(app, stream=stream, redact=redact)

    def call(url: str, *, token: str) -> None:
        try:
            raise KeyError(f"no session for token={token}")
        except KeyError as exc:
            raise RuntimeError(f"call to {url} failed: Bearer {token}") from exc

    app.task(name="t.call")(call).apply(args=("https://x",), kwargs={"token": "s3cr3t-t0ken"})

    (line,) = _lines(stream)
    assert "s3cr3t-t0ken" not in json.dumps(line)
    assert line[te.F_EXC_MESSAGE] == f"call to https://x failed: Bearer {events.REDACTED}"
    assert f"KeyError: 'no session for token={events.REDACTED}'" in line[te.F_TRACEBACK]
    assert "direct cause of the following exception" in line[te.F_TRACEBACK]


def test_a_failing_hook_hides_the_message_and_the_tracebacks_exception_lines(app: Celery) -> None:
    stream = io.StringIO()

    def redact(
        name: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> tuple[Sequence[Any], Mapping[str, Any]]:
        raise KeyError("oops")

    events.install(app, stream=stream, redact=redact)

    def charge(card: str) -> None:
        raise ValueError(f"card {card} declined")

    app.task(name="t.charge")(charge).apply(args=("4111111111111111",))

    (line,) = _lines(stream)
    assert "4111111111111111" not in json.dumps(line)
    assert line[te.F_EXC_MESSAGE] == events.REDACTION_FAILED
    assert line[te.F_TRACEBACK].rstrip().endswith(f"ValueError: {events.REDACTION_FAILED}")
    assert "in charge" in line[te.F_TRACEBACK]


def test_the_failure_frame_is_the_innermost_frame_of_application_code(app: Celery) -> None:
    stream = io.StringIO()
    events.install(app, stream=stream)

    def parse(text: str) -> int:
        return int(text)  # the innermost frame is int(), in no file: this one is the app's

    app.task(name="t.parse")(parse).apply(args=("x",))

    (line,) = _lines(stream)
    test = "test_the_failure_frame_is_the_innermost_frame_of_application_code"
    assert line[te.F_EXC_FRAME] == f"tests/e2e/test_events_emitter.py:{test}.<locals>.parse"


def test_text_json_cannot_carry_still_makes_a_valid_line(
    app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    # Celery logs the failure with its message, lone surrogate included: kept out of the test report,
    # which pytest-xdist must send between processes as UTF-8.
    caplog.set_level(logging.CRITICAL, logger="celery.app.trace")
    stream = io.StringIO()
    events.install(app, stream=stream, key=KEY)

    def odd() -> None:
        raise ValueError("lone \ud800 surrogate, NUL \x00, emoji 😀" + "é" * 3000)

    app.task(name="t.odd")(odd).apply()

    body = te.verify(stream.getvalue().rstrip("\n"), [KEY])
    assert body is not None
    assert body.isascii()
    line = json.loads(body)
    assert line[te.F_EXC_MESSAGE].startswith("lone ? surrogate, NUL \x00, emoji 😀")
    assert len(json.dumps(line[te.F_EXC_MESSAGE])) - 2 <= te.MAX_EXC_MESSAGE_BYTES


def test_a_retry_message_is_cleaned_of_what_the_hook_hides(app: Celery) -> None:
    stream = io.StringIO()

    def redact(
        name: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> tuple[Sequence[Any], Mapping[str, Any]]:
        return args, dict.fromkeys(kwargs, "***")

    events.install(app, stream=stream, redact=redact)

    def fetch(*, token: str) -> None:
        raise fetch_task.retry(exc=ConnectionError(f"401 for token {token}"), countdown=60, max_retries=1)

    fetch_task = app.task(name="t.fetch")(fetch)
    fetch_task.apply(kwargs={"token": "tok-123456"})

    lines = _lines(stream)
    assert "retried" in {line[te.F_EVENT] for line in lines}
    assert "tok-123456" not in stream.getvalue()
    assert all(line[te.F_EXC_MESSAGE] == f"401 for token {events.REDACTED}" for line in lines)
