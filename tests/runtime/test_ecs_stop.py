"""An ECS stop loses no task that ran long, and the limits that once lost them are refused at start.

Workers start as the task definition starts them: the worker service's own command line and plain
environment (`worker_command`, `worker_environment`), in a PID namespace with tini as PID 1; the stop
is ECS's: SIGTERM to PID 1 only, SIGKILL to everything at the stop timeout. Timings are production's
scaled down a hundredfold: a group with `--soft-time-limit 15 --time-limit 18` (prod: 1500/1800 s)
and a 3 s soft shutdown (90 s); the stop timeout keeps 5 s after it (prod: 30 s of 120 s) for the
cancel, the requeue and the pool's exit on a busy test machine.

The loss this guards against: the sample app passed `max_task_runtime_s=600` (here 6 s) to a group
running 1500/1800 s. The pool applies each task's own 600 s limit when it stops, so every task that
had run longer than 600 s less the soft shutdown at SIGTERM was acknowledged as timed out, silently.
"""

from __future__ import annotations

import time

import pytest
import redis
from celery import Celery
from celery_fleet.contract.worker_env import MAX_TASK_RUNTIME_ENV

from infra.config.workers import WorkerGroupConfig
from infra.workers.service import worker_command, worker_environment
from tests.runtime.conftest import EcsTaskFactory
from tests.runtime.workers import TEST_APP, done, started, wait_for

pytestmark = pytest.mark.slow

GROUP = WorkerGroupConfig(queues=["celery"], concurrency=2, time_limit_s=18, soft_time_limit_s=15)
STOP_TIMEOUT_S = 8.0
SOFT_SHUTDOWN_S = 3.0
# The sample app's old max_task_runtime_s=600, scaled as the group's limits are.
OLD_APP_LIMIT_S = 6.0
TASK_S = 8.0


def command(name: str) -> list[str]:
    return worker_command(TEST_APP, name, GROUP)


def environment() -> dict[str, str]:
    return {
        **worker_environment(GROUP, longest_time_limit_s=GROUP.time_limit_s),
        # fleet_app's stand-ins for configure's stop_timeout_s and shutdown_margin_s.
        "FLEET_TEST_STOP_TIMEOUT_S": str(STOP_TIMEOUT_S),
        "FLEET_TEST_SHUTDOWN_MARGIN_S": str(STOP_TIMEOUT_S - SOFT_SHUTDOWN_S),
    }


def test_tasks_past_the_old_app_limit_at_sigterm_complete_on_the_next_worker(
    ecs_tasks: EcsTaskFactory, publisher: Celery, ledger_client: redis.Redis
) -> None:
    ids = [publisher.send_task("fleet.work", args=[TASK_S]).id for _ in range(4)]
    first = ecs_tasks("first", command=command("first"), env=environment())
    first.wait_ready()
    wait_for(lambda: sum(bool(started(ledger_client, i)) for i in ids) == 2, 20, "two tasks running", first)
    running = [i for i in ids if started(ledger_client, i)]
    # Past the point where the old limit lost them: at pool stop they would be older than 6 s.
    time.sleep(OLD_APP_LIMIT_S - SOFT_SHUTDOWN_S + 1.0)

    assert first.stop(STOP_TIMEOUT_S), "the worker put its tasks back and left before the SIGKILL"

    second = ecs_tasks("second", command=command("second"), env=environment())
    wait_for(lambda: all(done(ledger_client, i) for i in ids), 60, "every task done", first, second)
    for task_id in ids:
        assert done(ledger_client, task_id) == ["second"]
    for task_id in running:
        assert len(started(ledger_client, task_id)) == 2, "cancelled at the deadline, run again in full"


def test_worker_refuses_an_app_limit_below_the_groups_soft_limit(ecs_tasks: EcsTaskFactory) -> None:
    # The old combination: the app's own limit, the group's command line, no group limits in the
    # environment for configure to take.
    env = {
        "REMAP_SIGTERM": "SIGQUIT",
        MAX_TASK_RUNTIME_ENV: str(GROUP.time_limit_s),
        "FLEET_TEST_MAX_RUNTIME_S": str(OLD_APP_LIMIT_S),
    }
    worker = ecs_tasks("worker", command=command("worker"), env=env)
    assert worker.wait_exit(timeout_s=30) != 0
    log = worker.log()
    assert "celery_fleet: refusing to start: the worker's --time-limit=18 differs from the app's " in log
    assert "task_time_limit=6, which is what every task gets." in log
    assert "Soft time limit above the hard one for fleet.flaky (soft 15 s > hard 6 s), " in log
    assert "fleet.work (soft 15 s > hard 6 s)" in log
    assert not worker.health_file.exists()
