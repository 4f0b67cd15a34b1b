"""A pool child killed mid-task (OOM killer, a crashing extension) does not lose its task, and a
task that kills its child every time does not loop for ever.

With late acks and `task_reject_on_worker_lost` the message is delivered again after the child's
death, counted in its `celery_fleet_deaths` header (celery_fleet.worker_lost); at
`max_worker_deaths` (3) the task is failed instead. Guarantees checked: at least once for a task
whose child was killed; a poison task runs exactly three times, ends as one `poison_message` event
after one `worker_lost` event per earlier death, and leaves nothing on the broker.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
import redis
from celery import Celery

from tests.runtime.conftest import WorkerFactory
from tests.runtime.workers import WorkerProcess, done, started, wait_for
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow


def test_sigkill_of_a_pool_child_requeues_its_task(
    workers: WorkerFactory, publisher: Celery, ledger_client: redis.Redis
) -> None:
    victim = publisher.send_task("fleet.work", args=[3.0]).id
    others = [publisher.send_task("fleet.work", args=[0.5]).id for _ in range(3)]
    worker = workers("worker", concurrency=2)
    wait_for(lambda: bool(started(ledger_client, victim)), 30, "the victim started", worker)

    _, child_pid = started(ledger_client, victim)[0].split(":")
    os.kill(int(child_pid), signal.SIGKILL)

    wait_for(lambda: all(done(ledger_client, i) for i in [victim, *others]), 30, "every task done", worker)
    runs = started(ledger_client, victim)
    assert len(runs) == 2, runs
    assert runs[1] != runs[0], "the second run is in a new child"
    assert done(ledger_client, victim) == ["worker"]
    assert all(done(ledger_client, i) == ["worker"] for i in others)


# configure's default max_worker_deaths.
MAX_DEATHS = 3


def task_events(worker: WorkerProcess, task_id: str) -> list[str]:
    """The `event` of every task-event line the worker wrote for `task_id`, in order."""
    events = []
    for line in worker.log().splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record.get("celery_fleet") == "task_event" and record.get("task_id") == task_id:
            events.append(record["event"])
    return events


def test_a_poison_task_fails_at_its_last_allowed_death_and_the_others_complete(
    redis_server: RedisServer, workers: WorkerFactory, publisher: Celery, ledger_client: redis.Redis
) -> None:
    poison = publisher.send_task("fleet.poison").id
    others = [publisher.send_task("fleet.work", args=[0.2]).id for _ in range(4)]
    worker = workers("worker", concurrency=2)
    broker = redis_server.client()

    def settled() -> bool:
        # Acknowledgements go out on the event loop's next turn, after the event line.
        return (
            all(done(ledger_client, i) for i in others)
            and "poison_message" in task_events(worker, poison)
            and broker.hlen("unacked") == 0
        )

    wait_for(settled, 60, "the poison task failed, the others done, nothing unacknowledged", worker)
    assert broker.llen("celery") == 0
    assert task_events(worker, poison) == ["worker_lost"] * (MAX_DEATHS - 1) + ["poison_message"]
    assert len(started(ledger_client, poison)) == MAX_DEATHS
    assert all(done(ledger_client, i) == ["worker"] for i in others)
    assert f"failed as a poison message: its worker process died under it {MAX_DEATHS} times" in worker.log()


def test_a_worker_killed_outright_leaves_its_tasks_to_the_visibility_timeout(
    redis_server: RedisServer, workers: WorkerFactory, publisher: Celery, ledger_client: redis.Redis
) -> None:
    # What a container killed as a whole (its memory limit, a host failure) leaves behind. A 7 s
    # visibility timeout for both workers.
    limits = {
        "FLEET_TEST_MAX_RUNTIME_S": "5",
        "FLEET_TEST_MAX_COUNTDOWN_S": "0",
        "FLEET_TEST_VISIBILITY_MARGIN_S": "2",
    }
    running = [publisher.send_task("fleet.work", args=[3.0]).id for _ in range(2)]
    waiting = publisher.send_task("fleet.work", args=[0.1]).id
    first = workers("first", concurrency=2, env=limits)
    wait_for(lambda: all(started(ledger_client, i) for i in running), 30, "both running", first)

    first.kill()
    assert redis_server.client().hlen("unacked") == 2, "delivered, never acknowledged"

    second = workers("second", concurrency=2, env=limits)
    wait_for(lambda: all(done(ledger_client, i) for i in [*running, waiting]), 40, "every task done", second)
    for task_id in running:
        assert done(ledger_client, task_id) == ["second"]
        assert len(started(ledger_client, task_id)) == 2
