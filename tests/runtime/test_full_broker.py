"""A broker that runs out of memory (`noeviction`), with real workers and a real redis-server.

At `maxmemory` Redis refuses what may grow its memory and every command inside a MULTI, so a worker
can neither record a delivery nor acknowledge a task, and dies (celery_fleet.reserve). Two things
keep tasks from being lost:

* producers configured by celery_fleet are refused first, at 95 % of maxmemory, so the workers keep
  room to drain what is queued;
* when the broker is full anyway (another producer filled it), the runbook's steps (docs/runbooks.md
  "Broker full") bring it back: here `CONFIG SET maxmemory` stands for a larger node type, which is
  what raises maxmemory on ElastiCache, and a new worker stands for the one ECS starts in place of
  the dead one.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator

import celery_fleet
import pytest
import redis
from celery import Celery
from celery_fleet.reserve import REFRESH_S, BrokerFullError

from tests.runtime.conftest import WorkerFactory
from tests.runtime.workers import done, started, wait_for
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow

MAXMEMORY = 2 * 1024 * 1024
VISIBILITY_TIMEOUT_S = 7.0
QUEUE = "celery"
# A 7 s visibility timeout, so a task finished but never acknowledged comes back within the test.
LIMITS = {
    "FLEET_TEST_MAX_RUNTIME_S": "5",
    "FLEET_TEST_MAX_COUNTDOWN_S": "0",
    "FLEET_TEST_VISIBILITY_MARGIN_S": "2",
}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A small broker with the stack's eviction policy (overrides the shared fixture)."""
    with RedisServer(settings={"maxmemory": str(MAXMEMORY), "maxmemory-policy": "noeviction"}) as server:
        yield server


def producer(broker: RedisServer) -> Celery:
    app = Celery("producer", set_as_current=False)
    celery_fleet.configure(app, broker_url=broker.url, task_events=False, healthcheck=False)
    return app


def fill(app: Celery, queue: str = QUEUE) -> tuple[list[str], Exception]:
    """Send short tasks to `queue` until the broker or the reserve refuses one: (ids sent, the refusal)."""
    ids: list[str] = []
    while True:
        try:
            ids.append(app.send_task("fleet.work", args=[0], queue=queue).id)
        except Exception as exc:
            return ids, exc


def stored_ids(client: redis.Redis) -> set[str]:
    queued = {json.loads(raw)["headers"]["id"] for raw in client.lrange(QUEUE, 0, -1)}
    unacked = {json.loads(raw)[0]["headers"]["id"] for raw in client.hvals("unacked")}
    return queued | unacked


def test_the_reserve_refuses_producers_and_the_workers_drain_the_broker(
    redis_server: RedisServer, workers: WorkerFactory, ledger_client: redis.Redis
) -> None:
    app = producer(redis_server)
    worker = workers("worker", concurrency=2, env=LIMITS)
    worker.wait_ready()
    running = [app.send_task("fleet.work", args=[2.0]).id for _ in range(2)]
    wait_for(lambda: all(started(ledger_client, i) for i in running), 20, "both children busy", worker)

    ids, refusal = fill(app)
    assert isinstance(refusal, BrokerFullError), refusal
    assert str(refusal).startswith("broker memory at ")
    info = redis_server.client().info("memory")
    assert info["used_memory"] < info["maxmemory"], "the workers' share is still free"

    everything = running + ids
    wait_for(lambda: all(done(ledger_client, i) for i in everything), 60, "the broker drained", worker)
    assert worker.process is not None
    assert worker.process.poll() is None, "the worker never died"
    assert all(len(done(ledger_client, i)) == 1 for i in everything)
    assert stored_ids(redis_server.client()) == set()
    app.close()


def test_a_full_broker_comes_back_with_the_runbooks_steps_and_loses_nothing(
    redis_server: RedisServer, workers: WorkerFactory, ledger_client: redis.Redis
) -> None:
    app = producer(redis_server)
    first = workers("first", concurrency=2, env=LIMITS)
    first.wait_ready()
    # Still running when the broker is full.
    running = [app.send_task("fleet.work", args=[4.0]).id for _ in range(2)]
    wait_for(lambda: all(started(ledger_client, i) for i in running), 20, "both children busy", first)
    # Queued behind them: the worker reserves no more than its two children run.
    ids = [app.send_task("fleet.work", args=[0]).id for _ in range(10)]
    # Something else that keeps no reserve (a script, another app) fills the broker and keeps
    # taking what is freed: maxmemory just under what is used stands for that producer.
    client = redis_server.client()
    with contextlib.suppress(redis.exceptions.OutOfMemoryError):
        while True:
            client.lpush("elsewhere", "x" * 10_000)
    client.config_set("maxmemory", str(client.info("memory")["used_memory"] - 256 * 1024))
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.lpush("elsewhere", "x")
    # celery_fleet's producers, which read the broker's memory at most REFRESH_S apart when far
    # from the limit, refuse as well.
    time.sleep(REFRESH_S)
    with pytest.raises(BrokerFullError):
        app.send_task("fleet.work", args=[0])

    # The running tasks finish, but their acknowledgement is refused: the worker gives up.
    wait_for(
        lambda: "Unrecoverable error: server:OutOfMemoryError" in first.log(), 30, "the worker failing", first
    )
    assert all(done(ledger_client, i) == ["first"] for i in running)
    # What ECS does to a worker whose health check fails, if it has not exited by itself.
    first.kill()

    # Runbook: give the broker room (a larger node), then workers start again (ECS replaces them).
    redis_server.client().config_set("maxmemory", str(2 * MAXMEMORY))
    second = workers("second", concurrency=2, env=LIMITS)

    everything = running + ids
    wait_for(lambda: all(done(ledger_client, i) for i in ids), 60, "the backlog drained", second)
    # A task finished while the broker was full may have had its acknowledgement refused: it comes
    # back once the visibility timeout has passed, and runs again.
    time.sleep(VISIBILITY_TIMEOUT_S + 3)
    assert stored_ids(redis_server.client()) == set()
    assert all(done(ledger_client, i) for i in everything), "every task ran at least once"
    assert all(len(done(ledger_client, i)) == 1 for i in ids)
    app.close()
