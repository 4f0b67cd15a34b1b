"""The container health check: healthy while the worker consumes, unhealthy once it stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from celery import Celery
from celery_fleet import health
from celery_fleet.contract import worker_env

from tests.runtime.conftest import WorkerFactory
from tests.runtime.workers import WorkerProcess, started, wait_for
from tests.support.redis_server import RedisServer

HEALTHCHECK = str(Path(sys.executable).with_name("celery-fleet-healthcheck"))
# fleet_app touches the file every 0.5 s.
MAX_AGE_S = 3.0


def run_healthcheck(worker: WorkerProcess) -> subprocess.CompletedProcess[str]:
    """The console script, as the container's health check runs it."""
    env = {
        **os.environ,
        worker_env.HEALTH_FILE_ENV: str(worker.health_file),
        worker_env.HEALTH_MAX_AGE_ENV: str(MAX_AGE_S),
    }
    return subprocess.run([HEALTHCHECK], env=env, capture_output=True, text=True, timeout=30, check=False)


def healthy(worker: WorkerProcess) -> bool:
    return run_healthcheck(worker).returncode == 0


def test_check_accepts_a_fresh_heartbeat(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    beat.write_text("{}")
    ok, reason = health.check(beat, max_age_s=60, now=beat.stat().st_mtime + 59)
    assert ok
    assert reason.startswith("healthy: last heartbeat 59.0 s ago")


def test_check_rejects_a_stale_heartbeat(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    beat.write_text("{}")
    ok, reason = health.check(beat, max_age_s=60, now=beat.stat().st_mtime + 61)
    assert not ok
    assert reason == "unhealthy: last heartbeat 61.0 s ago (max 60 s): worker not consuming"


def test_check_rejects_a_missing_heartbeat(tmp_path: Path) -> None:
    ok, reason = health.check(tmp_path / "absent", max_age_s=60, now=time.time())
    assert not ok
    assert "no heartbeat file" in reason


def test_main_reads_file_and_max_age_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    beat = tmp_path / "beat"
    beat.write_text("{}")
    old = time.time() - 30
    os.utime(beat, (old, old))
    env = {worker_env.HEALTH_FILE_ENV: str(beat)}
    assert health.main([], {**env, worker_env.HEALTH_MAX_AGE_ENV: "60"}) == 0
    assert health.main([], {**env, worker_env.HEALTH_MAX_AGE_ENV: "10"}) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["healthy", "unhealthy"]


def test_main_rejects_a_max_age_that_is_not_a_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {worker_env.HEALTH_FILE_ENV: str(tmp_path / "beat"), worker_env.HEALTH_MAX_AGE_ENV: "soon"}
    assert health.main([], env) == 1
    assert "CELERY_FLEET_HEALTH_MAX_AGE_S='soon' is not a number" in capsys.readouterr().out


@pytest.mark.slow
def test_worker_is_healthy_while_every_child_is_busy_and_tasks_wait(
    redis_server: RedisServer, workers: WorkerFactory, publisher: Celery, ledger_client: redis.Redis
) -> None:
    worker = workers("worker", concurrency=2)
    wait_for(lambda: healthy(worker), 30, "a healthy check", worker, interval_s=0.2)
    ids = [publisher.send_task("fleet.work", args=[MAX_AGE_S * 3]).id for _ in range(3)]
    wait_for(lambda: sum(bool(started(ledger_client, i)) for i in ids) == 2, 15, "both children busy", worker)
    # Longer than the maximum age: the heartbeat comes from the main process's event loop, which
    # keeps turning while the children work; the waiting task is no sign of a stall while the
    # worker has no room for it.
    time.sleep(MAX_AGE_S * 1.5)
    assert redis_server.client().llen("celery") == 1
    result = run_healthcheck(worker)
    assert result.returncode == 0, result.stdout
    assert result.stdout.startswith("healthy:")


@pytest.mark.slow
def test_worker_turns_unhealthy_when_the_broker_is_gone_and_healthy_when_it_is_back(
    redis_server: RedisServer, workers: WorkerFactory
) -> None:
    worker = workers("worker", concurrency=1)
    wait_for(lambda: healthy(worker), 30, "a healthy check", worker, interval_s=0.2)

    redis_server.stop()
    wait_for(lambda: not healthy(worker), MAX_AGE_S + 15, "an unhealthy check", worker, interval_s=0.2)
    result = run_healthcheck(worker)
    assert result.returncode == 1
    assert result.stdout.startswith("unhealthy: last heartbeat")
    assert result.stdout.strip().endswith("worker not consuming")

    redis_server.start()
    wait_for(
        lambda: healthy(worker), 60, "a healthy check after the broker came back", worker, interval_s=0.2
    )


@pytest.mark.slow
def test_worker_turns_unhealthy_when_it_stops_fetching_while_tasks_wait(
    redis_server: RedisServer, workers: WorkerFactory, publisher: Celery
) -> None:
    worker = workers("worker", concurrency=1)
    wait_for(lambda: healthy(worker), 30, "a healthy check", worker, interval_s=0.2)
    # The worker's event loop keeps turning and its broker connections answer, but it no longer
    # fetches: what a consumer whose BRPOP never returns looks like from outside.
    publisher.control.cancel_consumer("celery", destination=[f"worker@{socket.gethostname()}"], reply=True)
    time.sleep(1.0)
    assert healthy(worker), "no task waits yet: nothing to fetch"
    publisher.send_task("fleet.work", args=[0.1])

    wait_for(lambda: not healthy(worker), MAX_AGE_S + 10, "an unhealthy check", worker, interval_s=0.2)
    assert redis_server.client().llen("celery") == 1
    assert "1 task(s) wait in celery and this worker has room, but it received none" in worker.log()


@pytest.mark.slow
def test_stopped_worker_leaves_no_heartbeat(workers: WorkerFactory) -> None:
    worker = workers("worker", concurrency=1)
    wait_for(worker.health_file.exists, 30, "the first heartbeat", worker)
    worker.signal(signal.SIGTERM)
    worker.wait_exit(timeout_s=30)
    assert not worker.health_file.exists()
    assert not healthy(worker)
