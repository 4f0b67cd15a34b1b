"""End to end: a real worker's output, through a real subscription payload, into the ingest Lambda.

One real `celery worker` (prefork, configured by `celery_fleet.configure`, holding the stage's
signing key) on a real redis-server runs a known mix of outcomes, some of whose tasks print, log
and raise text with newlines followed by well-formed event lines (unsigned, or with a guessed MAC).
Its stdout and stderr are captured line by line, as the awslogs driver ships them to one log
stream. The lines the subscription filter would select are packed into a CloudWatch Logs
subscription payload and given to the handler, with moto standing in for CloudWatch Logs and
Secrets Manager.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery_fleet.contract import task_events as te
from celery_fleet.contract import task_metrics as tm
from celery_fleet.contract import worker_env

from tests.lambdas.task_events.support import (
    SECRET_VALUE,
    FakeLambdaContext,
    emf_documents,
    failure_records,
    load_handler,
    mocked_aws,
    pipeline_counts,
    subscription_event,
    task_metrics,
)
from tests.support.redis_server import RedisServer

REPO_ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))
QUEUE = "e2e"
WORKER_ARGS = [
    CELERY, "-A", "tests.e2e.worker_app", "worker", "--pool", "prefork", "--concurrency", "2",
    "--queues", QUEUE, "--hostname", "e2e@%h", "--loglevel", "INFO",
    "--without-gossip", "--without-mingle", "--without-heartbeat",
]  # fmt: skip

# (task name, event) -> lines the worker must write for the mix `_publish_mix` sends.
EXPECTED = Counter(
    {
        ("e2e.add", "succeeded"): 5,
        ("e2e.boom", "failed"): 3,
        ("e2e.login", "failed"): 1,
        ("e2e.flaky", "retried"): 4,
        ("e2e.flaky", "succeeded"): 2,
        ("e2e.stuck", "time_limit_exceeded"): 1,
        ("e2e.slow", "time_limit_exceeded"): 1,
        ("e2e.die_once", "worker_lost"): 1,
        ("e2e.die_once", "succeeded"): 1,
        ("e2e.die", "worker_lost"): 1,
        ("e2e.forge_print", "succeeded"): 1,
        ("e2e.forge_log", "succeeded"): 1,
        ("e2e.forge_raise", "failed"): 1,
        ("e2e.not_registered", "unknown_task"): 1,
    }
)
# Task ids of the forged lines the forging tasks plant (each once; Celery may log one twice).
PLANTED = {"forged-print-0", "forged-print-mac-0", "forged-log-0", "forged-raise-0", "forged-raise-mac-0"}


@dataclass
class WorkerRun:
    stdout_lines: list[bytes]
    task_ids: dict[str, list[str]]
    stderr: str

    @property
    def log_stream(self) -> list[str]:
        """Everything the container writes, one log event per line (stdout and stderr alike)."""
        return [
            raw.decode(errors="replace").rstrip("\n") for raw in self.stdout_lines
        ] + self.stderr.splitlines()

    @property
    def selected(self) -> list[str]:
        """What the subscription filter `{ $.celery_fleet = "task_event" }` would select."""
        selected = []
        for line in self.log_stream:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get(te.MARKER_KEY) == te.MARKER_VALUE:
                selected.append(line)
        return selected

    @property
    def event_lines(self) -> list[str]:
        """The lines the emitter wrote: signed with the stage's key."""
        key = te.key_from_secret(SECRET_VALUE)
        return [line for line in self.selected if te.verify(line, [key]) is not None]

    @property
    def forged_lines(self) -> list[str]:
        return [line for line in self.selected if line not in set(self.event_lines)]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.event_lines]


def _publish_mix(worker_app: Any) -> dict[str, list[str]]:
    calls = [
        *((worker_app.add, (i, i), {}) for i in range(5)),
        *((worker_app.boom, (i,), {}) for i in range(3)),
        (worker_app.login, ("ann",), {"password": "hunter2"}),
        (worker_app.flaky, ("a",), {}),
        (worker_app.flaky, ("b",), {}),
        (worker_app.stuck, (), {}),
        (worker_app.slow, (), {}),
        (worker_app.die_once, ("k",), {}),
        (worker_app.die, (), {}),
        (worker_app.forge_print, (0,), {}),
        (worker_app.forge_log, (0,), {}),
        (worker_app.forge_raise, (0,), {}),
    ]
    ids: dict[str, list[str]] = {}
    for task, args, kwargs in calls:
        ids.setdefault(task.name, []).append(task.apply_async(args, kwargs).id)
    # A task the worker does not have: Celery 5.7 fires task_unknown and drops the message.
    unknown = worker_app.app.send_task("e2e.not_registered", args=("secret-ish", 3), queue=QUEUE)
    ids["e2e.not_registered"] = [unknown.id]
    return ids


@pytest.fixture(scope="module")
def worker_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerRun]:
    stderr_path = tmp_path_factory.mktemp("e2e") / "worker.stderr"
    with RedisServer() as server:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "CELERY_FLEET_BROKER_URL": server.url,
            worker_env.EVENT_KEY_ENV: SECRET_VALUE,
        }
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                WORKER_ARGS,
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
            )
        lines: list[bytes] = []
        stdout = process.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, b"")), daemon=True)
        reader.start()
        try:
            os.environ["CELERY_FLEET_BROKER_URL"] = server.url
            # Imported once the broker URL is set: configure() reads it at import.
            task_ids = _publish_mix(importlib.import_module("tests.e2e.worker_app"))
            deadline = time.monotonic() + 90
            key = te.key_from_secret(SECRET_VALUE)
            while sum(te.verify(line.decode().rstrip(), [key]) is not None for line in list(lines)) < sum(
                EXPECTED.values()
            ):
                assert time.monotonic() < deadline, stderr_path.read_text(errors="replace")[-6000:]
                time.sleep(0.1)
            # Warm shutdown: anything still to be written (a duplicate, say) is flushed before exit.
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
            reader.join(timeout=10)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            os.environ.pop("CELERY_FLEET_BROKER_URL", None)
        yield WorkerRun(lines, task_ids, stderr_path.read_text(errors="replace"))


pytestmark = pytest.mark.slow


def test_worker_writes_exactly_one_line_per_task_outcome(worker_run: WorkerRun) -> None:
    assert Counter((e[te.F_TASK], e[te.F_EVENT]) for e in worker_run.events) == EXPECTED


def test_every_line_names_a_published_task_and_its_queue(worker_run: WorkerRun) -> None:
    published = {task_id for ids in worker_run.task_ids.values() for task_id in ids}

    assert {e[te.F_TASK_ID] for e in worker_run.events} == published
    assert {e[te.F_QUEUE] for e in worker_run.events} == {QUEUE}
    assert all(e[te.F_WORKER].startswith("e2e@") for e in worker_run.events)


def test_every_line_fits_in_one_atomic_pipe_write(worker_run: WorkerRun) -> None:
    assert max(len(line.encode()) + 1 for line in worker_run.event_lines) <= te.MAX_LINE_BYTES


def test_queue_wait_comes_from_the_send_stamp_of_configure(worker_run: WorkerRun) -> None:
    started = [e for e in worker_run.events if e[te.F_EVENT] == "succeeded"]

    assert all(e[te.F_QUEUE_WAIT] is not None and e[te.F_QUEUE_WAIT] >= 0 for e in started)
    assert all(e[te.F_RUNTIME] is not None and e[te.F_RUNTIME] >= 0 for e in started)


def test_retries_carry_their_attempt_number(worker_run: WorkerRun) -> None:
    flaky = [e for e in worker_run.events if e[te.F_TASK] == "e2e.flaky"]

    assert sorted((e[te.F_EVENT], e[te.F_RETRIES]) for e in flaky) == [
        ("retried", 0), ("retried", 0), ("retried", 1), ("retried", 1), ("succeeded", 2), ("succeeded", 2),
    ]  # fmt: skip


def test_hard_time_limit_is_reported_once_with_its_exception(worker_run: WorkerRun) -> None:
    (line,) = [e for e in worker_run.events if e[te.F_TASK] == "e2e.stuck"]

    assert (line[te.F_EXC_TYPE], line[te.F_RUNTIME] >= 1.5) == ("TimeLimitExceeded", True)


def test_a_requeued_lost_worker_is_reported_before_the_task_succeeds(worker_run: WorkerRun) -> None:
    events = [
        (e[te.F_EVENT], e.get(te.F_EXC_TYPE)) for e in worker_run.events if e[te.F_TASK] == "e2e.die_once"
    ]

    assert events == [("worker_lost", "WorkerLostError"), ("succeeded", None)]


def test_failure_lines_show_redacted_arguments_messages_and_tracebacks(worker_run: WorkerRun) -> None:
    (line,) = [e for e in worker_run.events if e[te.F_TASK] == "e2e.login"]

    # Arguments arrive from JSON, so positional ones are a list.
    assert (line[te.F_ARGS], line[te.F_KWARGS]) == ("['ann']", "{'password': '***'}")
    assert "hunter2" not in json.dumps(line)
    assert line[te.F_EXC_MESSAGE] == "login refused for ann (password '<redacted>')"
    assert (
        line[te.F_TRACEBACK]
        .rstrip()
        .endswith("PermissionError: login refused for ann (password '<redacted>')")
    )
    assert line[te.F_EXC_FRAME] == "tests/e2e/worker_app.py:login"


def test_an_unknown_task_is_an_outcome_with_its_arguments_from_the_body(worker_run: WorkerRun) -> None:
    (line,) = [e for e in worker_run.events if e[te.F_EVENT] == "unknown_task"]

    assert (line[te.F_TASK], line[te.F_EXC_TYPE], line[te.F_QUEUE]) == (
        "e2e.not_registered",
        "NotRegistered",
        QUEUE,
    )
    assert line[te.F_ARGS] == "['secret-ish', 3]"


def test_the_forged_lines_really_reached_the_log_stream(worker_run: WorkerRun) -> None:
    # Otherwise the test below proves nothing: every planted line is on a line of its own.
    assert {json.loads(line)[te.F_TASK_ID] for line in worker_run.forged_lines} == PLANTED


def test_the_handler_counts_forged_lines_and_records_no_forged_failure(
    worker_run: WorkerRun, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with mocked_aws(monkeypatch) as logs:
        result = load_handler().handler(subscription_event(worker_run.selected), FakeLambdaContext())
        records = failure_records(logs)

    documents = emf_documents(capsys.readouterr().out)
    assert result["forged"] == len(worker_run.forged_lines) >= len(PLANTED)
    assert pipeline_counts(documents, tm.FORGED_EVENTS) == [len(worker_run.forged_lines)]
    assert not [r for r in records if r["task_id"].startswith("forged") or r["task"] == "e2e.victim"]
    assert ("e2e.victim", QUEUE) not in task_metrics(documents)


def test_the_handler_counts_the_worker_outcomes_exactly(
    worker_run: WorkerRun, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with mocked_aws(monkeypatch):
        load_handler().handler(subscription_event(worker_run.selected), FakeLambdaContext())

    metrics = task_metrics(emf_documents(capsys.readouterr().out))
    by_metric: Counter[tuple[str, str]] = Counter()
    for (task, queue), entry in metrics.items():
        assert queue == QUEUE
        for event, name in tm.COUNT_BY_EVENT.items():
            by_metric[task, event.value] += int(entry.counts[name])
    # The unknown task's name came from the message: it is counted, but never a dimension value.
    expected = EXPECTED - Counter({("e2e.not_registered", "unknown_task"): 1})
    expected[tm.UNKNOWN_TASK, "unknown_task"] = 1
    assert +by_metric == expected
    assert len(metrics["e2e.add", QUEUE].values[tm.RUNTIME]) == 5


def test_the_handler_records_every_worker_failure_with_its_arguments(
    worker_run: WorkerRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mocked_aws(monkeypatch) as logs:
        load_handler().handler(subscription_event(worker_run.selected), FakeLambdaContext())
        records = failure_records(logs)

    expected = {
        (e[te.F_TASK_ID], e[te.F_EVENT]) for e in worker_run.events if e[te.F_EVENT] in te.FAILURE_EVENTS
    }
    assert {(r["task_id"], r["event"]) for r in records} == expected
    assert len(records) == 3 + 1 + 2 + 2 + 1 + 1
    boom = sorted(r["args"] for r in records if r["task"] == "e2e.boom")
    assert boom == ["[0]", "[1]", "[2]"]
    # An unknown task never ran: it has no traceback.
    assert all(r["traceback"] for r in records if r["event"] != "unknown_task")
