"""One task-event line, two sides: a field the emitter writes and the Lambda does not read, or the
reverse, fails here.

The producer is the real emitter (`celery_fleet.events`) inside a real worker on a real
redis-server, with the failed-message keeper installed as `configure` installs it; between them its
outcomes carry every field a line may have. The consumer is the ingest Lambda's own model and
failure records (`task_events.models`, `task_events.logic`), fed those very lines.
"""

from __future__ import annotations

import io
import json
import time
import typing
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from celery import Celery, Task
from celery.contrib.testing.worker import start_worker
from celery.exceptions import DuplicateTaskNameWarning
from celery_fleet import configure, events, keep
from celery_fleet.contract import task_events as te
from celery_fleet.contract.kept_messages import REPLAY_OF_HEADER
from task_events import models
from task_events.logic import failure_record

from tests.support.redis_server import RedisServer

KEY = b"contract-test-key"
QUEUE = "contract"
ENVELOPE = {te.MARKER_KEY, te.F_VERSION}

pytestmark = pytest.mark.slow


class DictStore:
    """A message store in memory: what the keeper wrote, by key."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, data: bytes) -> None:
        self.objects[key] = data


@dataclass
class Emitted:
    lines: list[str]
    emitter_errors: int
    keeper_errors: int


def _wait(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    # No assertion here: the tests say what is missing.
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture(scope="module")
def emitted() -> Iterator[Emitted]:
    stream = io.StringIO()
    with RedisServer() as server:
        app = Celery("contract", set_as_current=False)
        configure(
            app,
            broker_url=server.url,
            max_task_runtime_s=30,
            max_countdown_s=5,
            stop_timeout_s=4,
            shutdown_margin_s=2,
            healthcheck=False,
            scale_in_protection=False,
            task_events=False,
            failed_message_store=DictStore(),
            task_default_queue=QUEUE,
        )
        # After the keeper, as configure installs them: a failure line carries the kept key.
        emitter = events.install(app, stream=stream, key=KEY)

        def ok() -> int:
            return 1

        def boom(item: int, *, flag: str) -> None:
            raise ValueError(f"boom {item} {flag}")

        def flaky(self: Task) -> int:
            if self.request.retries == 0:
                raise self.retry(exc=ConnectionError("down"), countdown=0.1)
            return 2

        # Not shared: these tasks stay in this app, not in every app finalized after it.
        app.task(name="contract.ok", shared=False)(ok)
        app.task(name="contract.boom", shared=False)(boom)
        app.task(name="contract.flaky", bind=True, max_retries=1, shared=False)(flaky)
        try:
            # A replayed task's lines name the task it replays.
            app.send_task("contract.ok", headers={REPLAY_OF_HEADER: "original-task-id"})
            app.send_task("contract.boom", args=[1], kwargs={"flag": "x"})
            app.send_task("contract.flaky")
            with warnings.catch_warnings():
                # Finalizing the app registers the shared tasks other test modules left behind, some
                # under one name: none of them is sent here.
                warnings.simplefilter("ignore", DuplicateTaskNameWarning)
                app.finalize()
            with start_worker(
                app, pool="threads", concurrency=2, perform_ping_check=False, shutdown_timeout=5
            ):
                _wait(lambda: len(stream.getvalue().splitlines()) >= 4 or emitter.errors > 0)
            keeper_errors = keep._INSTALLED[0].errors
        finally:
            events.uninstall()
            keep.uninstall()
        yield Emitted(stream.getvalue().splitlines(), emitter.errors, keeper_errors)


def _body(line: str) -> str:
    body = te.verify(line, [KEY])
    assert body is not None, line
    return body


def test_the_emitter_wrote_every_outcome_without_an_error(emitted: Emitted) -> None:
    events_written = sorted(json.loads(line)[te.F_EVENT] for line in emitted.lines)

    # An error is a line not written: build_record refuses a value the contract does not define.
    assert (emitted.emitter_errors, emitted.keeper_errors) == (0, 0), "see the emitter's error on stderr"
    assert events_written == ["failed", "retried", "succeeded", "succeeded"]


def test_the_emitter_writes_every_field_the_contract_defines_and_no_other(emitted: Emitted) -> None:
    written = set().union(*(json.loads(_body(line)) for line in emitted.lines))

    assert written == {spec.key for spec in te.FIELDS}


def test_the_lambda_reads_every_field_the_emitter_writes(emitted: Emitted) -> None:
    model_keys = set(typing.get_type_hints(models.TaskEventLine))

    for line in emitted.lines:
        body = _body(line)
        # The model drops keys it does not define: a field it lacked would vanish here silently.
        assert set(models.validate_line(body)) == set(json.loads(body)) <= model_keys


def test_a_failure_record_repeats_every_field_of_the_failure_line(emitted: Emitted) -> None:
    lines = [json.loads(_body(line)) for line in emitted.lines]
    (failure,) = [line for line in lines if line[te.F_EVENT] == "failed"]
    validated = models.validate_line(json.dumps(failure))

    record = failure_record(validated, log_group="g", log_stream="s")

    shown = {key: value for key, value in failure.items() if key not in ENVELOPE}
    assert {key: record[key] for key in shown} == shown
    assert te.F_KEPT_MESSAGE in shown


def test_every_line_passes_the_lambdas_validation_as_emitted(emitted: Emitted) -> None:
    bodies = [_body(line) for line in emitted.lines]

    results: list[Any] = models.validate_lines(bodies)

    assert [type(result).__name__ for result in results] == ["dict"] * len(bodies)
