"""End to end: a real worker's stdout, through a real subscription payload, into the ingest Lambda.

One real `celery worker` (prefork, configured by `celery_fleet.configure`) on a real redis-server
runs a known mix of outcomes; its stdout is captured as the container's log stream would be. The
lines the subscription filter would select are packed into a CloudWatch Logs subscription payload
and given to the handler, with moto standing in for CloudWatch Logs.
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

from tests.lambdas.task_events.support import (
    FakeLambdaContext,
    emf_documents,
    failure_records,
    load_handler,
    mocked_aws,
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
    }
)


@dataclass
class WorkerRun:
    stdout_lines: list[bytes]
    task_ids: dict[str, list[str]]
    stderr: str

    @property
    def event_lines(self) -> list[str]:
        """What the subscription filter `{ $.celery_fleet = "task_event" }` would select."""
        selected = []
        for raw in self.stdout_lines:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get(te.MARKER_KEY) == te.MARKER_VALUE:
                selected.append(raw.decode().rstrip("\n"))
        return selected

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
    ]
    ids: dict[str, list[str]] = {}
    for task, args, kwargs in calls:
        ids.setdefault(task.name, []).append(task.apply_async(args, kwargs).id)
    return ids


@pytest.fixture(scope="module")
def worker_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerRun]:
    stderr_path = tmp_path_factory.mktemp("e2e") / "worker.stderr"
    with RedisServer() as server:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "CELERY_FLEET_BROKER_URL": server.url}
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
            while sum(b'"task_event"' in line for line in list(lines)) < sum(EXPECTED.values()):
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


def test_failure_lines_show_redacted_arguments(worker_run: WorkerRun) -> None:
    (line,) = [e for e in worker_run.events if e[te.F_TASK] == "e2e.login"]

    # Arguments arrive from JSON, so positional ones are a list.
    assert (line[te.F_ARGS], line[te.F_KWARGS]) == ("['ann']", "{'password': '***'}")
    assert "hunter2" not in json.dumps(line)
    assert line[te.F_TRACEBACK].rstrip().endswith("PermissionError: login refused for ann")


def test_the_handler_counts_the_worker_outcomes_exactly(
    worker_run: WorkerRun, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with mocked_aws(monkeypatch):
        load_handler().handler(subscription_event(worker_run.event_lines), FakeLambdaContext())

    metrics = task_metrics(emf_documents(capsys.readouterr().out))
    by_metric: Counter[tuple[str, str]] = Counter()
    for (task, queue), entry in metrics.items():
        assert queue == QUEUE
        for event, name in tm.COUNT_BY_EVENT.items():
            by_metric[task, event.value] += int(entry.counts[name])
    assert +by_metric == EXPECTED
    assert len(metrics["e2e.add", QUEUE].values[tm.RUNTIME]) == 5


def test_the_handler_records_every_worker_failure_with_its_arguments(
    worker_run: WorkerRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mocked_aws(monkeypatch) as logs:
        load_handler().handler(subscription_event(worker_run.event_lines), FakeLambdaContext())
        records = failure_records(logs)

    expected = {
        (e[te.F_TASK_ID], e[te.F_EVENT]) for e in worker_run.events if e[te.F_EVENT] in te.FAILURE_EVENTS
    }
    assert {(r["task_id"], r["event"]) for r in records} == expected
    assert len(records) == 3 + 1 + 2 + 2
    boom = sorted(r["args"] for r in records if r["task"] == "e2e.boom")
    assert boom == ["[0]", "[1]", "[2]"]
    assert all(r["traceback"] for r in records)
