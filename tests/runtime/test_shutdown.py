"""SIGTERM, as ECS sends it on stop, loses no task.

With REMAP_SIGTERM=SIGQUIT the worker starts Celery's soft shutdown: running tasks get
`worker_soft_shutdown_timeout` to finish; what still runs then is cancelled and its message put back
on the queue (celery/apps/worker.py on_cold_shutdown -> WorkController.wait_for_soft_shutdown, then
Consumer.cancel_active_requests; kombu restores the unacked messages when the channel closes).
Guarantee checked: at least once for every task, and exactly once, on the first worker, for a task
that finished within the budget. An idle worker stops at once (no soft-shutdown wait) and loses no
ETA task it holds.
"""

from __future__ import annotations

import json
import signal

import pytest
import redis
from celery import Celery

from tests.runtime.conftest import WorkerFactory
from tests.runtime.workers import done, started, wait_for
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow

# fleet_app's defaults: stop timeout 5 s, margin 2 s, so a 3 s soft shutdown.
SHORT_S = 1.0  # finishes within the soft shutdown
LONG_S = 6.0  # outlives it
QUEUE = "celery"


def test_sigterm_lets_short_tasks_finish_and_requeues_long_ones(
    workers: WorkerFactory, publisher: Celery, ledger_client: redis.Redis
) -> None:
    durations = [SHORT_S, LONG_S, SHORT_S, LONG_S]
    ids = [publisher.send_task("fleet.work", args=[seconds]).id for seconds in durations]
    first = workers("first", concurrency=2)
    first.wait_ready()
    # Both children busy: one short and one long task running when the signal comes.
    wait_for(lambda: sum(bool(started(ledger_client, i)) for i in ids) == 2, 15, "two tasks started", first)
    running = [i for i in ids if started(ledger_client, i)]
    assert sorted(durations[ids.index(i)] for i in running) == [SHORT_S, LONG_S]
    first.signal(signal.SIGTERM)
    first.wait_exit(timeout_s=20)

    second = workers("second", concurrency=2)
    wait_for(lambda: all(done(ledger_client, i) for i in ids), 40, "every task done", first, second)

    for task_id, seconds in zip(ids, durations, strict=True):
        if task_id in running and seconds == SHORT_S:
            assert done(ledger_client, task_id) == ["first"], "finished within the budget, acked once"
        elif task_id in running:
            assert done(ledger_client, task_id) == ["second"], "cancelled at the deadline, run again"
            assert len(started(ledger_client, task_id)) == 2
        else:
            assert done(ledger_client, task_id) == ["second"], "still queued at shutdown"


def test_sigterm_puts_an_eta_task_held_by_an_idle_worker_back_on_its_queue(
    redis_server: RedisServer, workers: WorkerFactory, publisher: Celery, ledger_client: redis.Redis
) -> None:
    # Within fleet_app's visibility timeout (45 s) less its task time limit (30 s).
    task_id = publisher.send_task("fleet.work", args=[0.1], countdown=12).id
    worker = workers("worker", concurrency=1)
    broker = redis_server.client()
    wait_for(lambda: broker.hlen("unacked") == 1, 15, "the worker holding the ETA task", worker)
    assert broker.llen(QUEUE) == 0

    worker.signal(signal.SIGTERM)
    worker.wait_exit(timeout_s=20)

    assert broker.hlen("unacked") == 0
    assert [json.loads(raw)["headers"]["id"] for raw in broker.lrange(QUEUE, 0, -1)] == [task_id]
    assert not started(ledger_client, task_id)
