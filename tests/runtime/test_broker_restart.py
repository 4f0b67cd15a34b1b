"""A broker restart in the middle of a run: what survives, what runs twice, what is lost.

A restart of a broker that keeps its data (append-only file, fsync on every write) stands for a
failover to a replica holding a copy, as ElastiCache promotes one; a restart of a broker without
persistence stands for a failover to an empty primary. Workers reconnect by themselves
(`broker_connection_max_retries=None`). Tasks running at the loss go on
(`worker_cancel_long_running_tasks_on_connection_loss` off): their acknowledgement, a delete of the
delivery tag from the `unacked` hash, goes out over the new connection.

Measured here with the setting on (`FLEET_TEST_CANCEL_ON_LOSS=1`, same scenario, twice each): with
the data kept, both running tasks were cancelled and ran a second time once the visibility timeout
had passed; with an empty broker, the cancelled tasks were gone with the hash, so both were lost.
With it off: no second run, and the running tasks completed in both cases.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import celery_fleet
import pytest
import redis
from celery import Celery

from tests.runtime.conftest import WorkerFactory
from tests.runtime.workers import done, started, wait_for
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow

PERSISTENT = {"appendonly": "yes", "appendfsync": "always"}
# Short limits so the visibility timeout (runtime + countdown + margin) is 12 s.
LIMITS = {
    "FLEET_TEST_MAX_RUNTIME_S": "10",
    "FLEET_TEST_MAX_COUNTDOWN_S": "0",
    "FLEET_TEST_VISIBILITY_MARGIN_S": "2",
}
VISIBILITY_TIMEOUT_S = 12.0
TASK_S = 5.0


def run_into_a_restart(
    broker: RedisServer, workers: WorkerFactory, ledger_client: redis.Redis
) -> tuple[list[str], list[str]]:
    """Four tasks, two running when the broker goes away for 2 s: (running ids, waiting ids)."""
    publisher = Celery("publisher", set_as_current=False)
    celery_fleet.configure(publisher, broker_url=broker.url, task_events=False, healthcheck=False)
    ids = [publisher.send_task("fleet.work", args=[TASK_S]).id for _ in range(4)]
    publisher.close()
    worker = workers("worker", concurrency=2, env=LIMITS)
    wait_for(lambda: sum(bool(started(ledger_client, i)) for i in ids) == 2, 30, "two tasks running", worker)
    running = [i for i in ids if started(ledger_client, i)]
    time.sleep(1.0)

    broker.restart(down_s=2.0)

    wait_for(lambda: all(done(ledger_client, i) for i in running), 30, "the running tasks done", worker)
    assert "Connection to broker lost" in worker.log()
    return running, [i for i in ids if i not in running]


@pytest.fixture
def redis_server(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """The broker, with the settings a test passes (overrides the shared fixture)."""
    with RedisServer(settings=getattr(request, "param", None)) as server:
        yield server


@pytest.mark.parametrize("redis_server", [PERSISTENT], indirect=True)
def test_a_broker_that_keeps_its_data_loses_nothing_and_reruns_nothing(
    redis_server: RedisServer, workers: WorkerFactory, ledger_client: redis.Redis
) -> None:
    running, waiting = run_into_a_restart(redis_server, workers, ledger_client)
    wait_for(lambda: all(done(ledger_client, i) for i in waiting), 30, "the waiting tasks done")
    # Past the visibility timeout: a running task whose acknowledgement had not reached the broker
    # would be delivered again now.
    time.sleep(VISIBILITY_TIMEOUT_S + 2)
    for task_id in running + waiting:
        assert len(started(ledger_client, task_id)) == 1
        assert done(ledger_client, task_id) == ["worker"]
    broker = redis_server.client()
    assert broker.hlen("unacked") == 0
    assert broker.llen("celery") == 0


def test_an_emptied_broker_loses_what_waited_but_running_tasks_finish(
    redis_server: RedisServer, workers: WorkerFactory, ledger_client: redis.Redis
) -> None:
    running, waiting = run_into_a_restart(redis_server, workers, ledger_client)
    assert all(done(ledger_client, i) == ["worker"] for i in running)
    time.sleep(TASK_S)
    # Gone with the broker's data: nothing on the worker's side can bring them back.
    assert not any(started(ledger_client, i) for i in waiting)
