"""A broker restart in the middle of a run loses no task.

The broker keeps its data across the restart (append-only file, fsync on every write), as an
ElastiCache replication group keeps it across a failover; without that, a restart empties every
queue and "nothing lost" cannot hold for any client. Workers reconnect by themselves
(`broker_connection_max_retries=None`); tasks running at the loss are cancelled
(`worker_cancel_long_running_tasks_on_connection_loss`) and their messages, left in the unacked
set, come back once the visibility timeout has passed. Guarantee checked: at least once.
"""

from __future__ import annotations

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
# Short limits so the visibility timeout (runtime + countdown + margin) is 12 s. The time limit stays
# above the outage plus the reconnect back-off (2 + 4 s): billiard checks time limits from the event
# loop, which stands still while the consumer reconnects, and a task whose limit passed meanwhile is
# reported as timed out and acknowledged (task_acks_on_failure_or_timeout) instead of requeued.
LIMITS = {
    "FLEET_TEST_MAX_RUNTIME_S": "10",
    "FLEET_TEST_MAX_COUNTDOWN_S": "0",
    "FLEET_TEST_VISIBILITY_MARGIN_S": "2",
}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """The broker, persistent for this module (overrides the shared fixture)."""
    with RedisServer(settings=PERSISTENT) as server:
        yield server


def test_tasks_complete_after_the_broker_restarts(
    redis_server: RedisServer, workers: WorkerFactory, ledger_client: redis.Redis
) -> None:
    publisher = Celery("publisher", set_as_current=False)
    celery_fleet.configure(publisher, broker_url=redis_server.url, task_events=False, healthcheck=False)
    ids = [publisher.send_task("fleet.work", args=[1.5]).id for _ in range(8)]
    publisher.close()
    worker = workers("worker", concurrency=2, env=LIMITS)
    wait_for(lambda: sum(bool(done(ledger_client, i)) for i in ids) >= 2, 30, "two tasks done", worker)

    redis_server.restart(down_s=2.0)

    wait_for(lambda: all(done(ledger_client, i) for i in ids), 60, "every task done", worker)
    assert "Connection to broker lost" in worker.log()
    # The tasks running at the restart were cancelled and ran again.
    assert any(len(started(ledger_client, i)) == 2 for i in ids)
