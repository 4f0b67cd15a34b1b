"""A pool child killed mid-task (OOM killer, max-memory-per-child) does not lose its task.

`task_reject_on_worker_lost` with late acks: Celery rejects the message with requeue on
WorkerLostError (celery/worker/request.py Request.on_failure), so it runs again from the start.
Guarantee checked: at least once; the killed run never completes, the requeued one does.
"""

from __future__ import annotations

import os
import signal

import pytest
import redis
from celery import Celery

from tests.runtime.conftest import WorkerFactory
from tests.runtime.workers import done, started, wait_for

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
