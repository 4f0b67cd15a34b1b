"""Fixtures for the runtime tests: a broker, a ledger, worker processes and a publishing app."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import celery_fleet
import pytest
import redis
from celery import Celery

from tests.runtime.workers import EcsTask, WorkerProcess
from tests.support.redis_server import RedisServer

WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def ledger() -> Iterator[RedisServer]:
    """Where tasks record their runs: apart from the broker, as an application's database is."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def ledger_client(ledger: RedisServer) -> redis.Redis:
    return ledger.client()


@pytest.fixture
def workers(redis_server: RedisServer, ledger: RedisServer, tmp_path: Path) -> Iterator[WorkerFactory]:
    """Starts worker processes on `redis_server`; every one is killed at teardown."""
    started: list[WorkerProcess] = []

    def start(name: str, *, concurrency: int = 2, env: Mapping[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(
            name,
            broker_url=redis_server.url,
            ledger_url=ledger.url,
            log_dir=tmp_path,
            concurrency=concurrency,
            env=env,
        )
        started.append(worker.start())
        return worker

    yield start
    for worker in started:
        worker.kill()


EcsTaskFactory = Callable[..., EcsTask]


@pytest.fixture
def ecs_tasks(redis_server: RedisServer, ledger: RedisServer, tmp_path: Path) -> Iterator[EcsTaskFactory]:
    """Starts workers as ECS starts a task (see `EcsTask`); every one is killed at teardown."""
    started: list[EcsTask] = []

    def start(name: str, *, command: list[str], env: Mapping[str, str]) -> EcsTask:
        task = EcsTask(
            name,
            command=command,
            broker_url=redis_server.url,
            ledger_url=ledger.url,
            log_dir=tmp_path,
            env=env,
        )
        started.append(task)
        task.start()
        return task

    yield start
    for task in started:
        task.kill()


@pytest.fixture
def publisher(redis_server: RedisServer) -> Iterator[Celery]:
    """A producer-only app on `redis_server`, configured as an API process would be."""
    app = Celery("publisher", set_as_current=False)
    celery_fleet.configure(app, broker_url=redis_server.url, task_events=False, healthcheck=False)
    yield app
    app.close()
