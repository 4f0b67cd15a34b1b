"""The Celery app the reliability tests run in real worker processes, configured by celery_fleet.

Each task writes what happened to a ledger: a second redis-server, apart from the broker, standing in
for the application's database (so a broker restart cannot erase the evidence). Limits come from
FLEET_TEST_* variables so each test can shrink the production budgets to seconds.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Any

import celery_fleet
import redis
from celery import Celery
from celery_fleet.contract.queue_metrics import SENT_AT_HEADER
from celery_fleet.contract.worker_env import TIME_LIMIT_ENV
from celery_fleet.publish import eta_delay_s

from tests.runtime.workers import FLAKY_RETRY


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


CANCEL_ON_LOSS = "FLEET_TEST_CANCEL_ON_LOSS"
_OVERRIDES: dict[str, Any] = {}
if CANCEL_ON_LOSS in os.environ:
    # For the A/B measurement in tests/runtime/test_broker_restart.py's docstring.
    _OVERRIDES["worker_cancel_long_running_tasks_on_connection_loss"] = os.environ[CANCEL_ON_LOSS] == "1"

app = Celery("fleet_app")
FLEET = celery_fleet.configure(
    app,
    # Started as the task definition starts it (tests.runtime.workers.EcsTask), the worker group's
    # limits reach the app through the environment, as in the sample app.
    max_task_runtime_s=(
        None if os.environ.get(TIME_LIMIT_ENV) else _env_float("FLEET_TEST_MAX_RUNTIME_S", 30)
    ),
    max_countdown_s=_env_float("FLEET_TEST_MAX_COUNTDOWN_S", 10),
    visibility_margin_s=_env_float("FLEET_TEST_VISIBILITY_MARGIN_S", 5),
    stop_timeout_s=_env_float("FLEET_TEST_STOP_TIMEOUT_S", 5),
    shutdown_margin_s=_env_float("FLEET_TEST_SHUTDOWN_MARGIN_S", 2),
    heartbeat_interval_s=_env_float("FLEET_TEST_HEARTBEAT_INTERVAL_S", 0.5),
    # Sweep the unacked set every second (production: every 100 s), so a message left there by a
    # lost connection comes back within a test's patience once its visibility timeout has passed.
    broker_transport_options={"unacked_restore_interval": 1, "unacked_restore_throttle": 1},
    **_OVERRIDES,
)

_ledgers: dict[int, redis.Redis] = {}


def ledger() -> redis.Redis:
    """This process's connection to the ledger (one per pool child, made after the fork)."""
    pid = os.getpid()
    if pid not in _ledgers:
        _ledgers[pid] = redis.Redis.from_url(os.environ["FLEET_TEST_LEDGER_URL"])
    return _ledgers[pid]


def worker_name() -> str:
    return os.environ.get("FLEET_TEST_WORKER_NAME", socket.gethostname())


@app.task(name="fleet.work", bind=True)  # type: ignore[untyped-decorator]  # Celery has no type hints
def work(self: Any, seconds: float) -> None:
    """Records its start (worker, child pid), sleeps, records its completion (worker)."""
    task_id = self.request.id
    ledger().rpush(f"started:{task_id}", f"{worker_name()}:{os.getpid()}")
    time.sleep(seconds)
    ledger().rpush(f"done:{task_id}", worker_name())


class UnavailableError(ConnectionError):
    """A transient failure of a service outside the fleet."""


@app.task(  # type: ignore[untyped-decorator]
    name="fleet.flaky",
    bind=True,
    autoretry_for=(UnavailableError,),
    **FLAKY_RETRY,
)
def flaky(self: Any, failures: int) -> int:
    """Fails `failures` times, then succeeds; records the delay each retry was published with."""
    retries = self.request.retries
    sent_at = getattr(self.request, SENT_AT_HEADER, None)
    delay = eta_delay_s(self.request.eta, sent_at) if sent_at is not None else None
    ledger().rpush(f"attempts:{self.request.id}", f"{retries}:{'' if delay is None else delay}")
    if retries < failures:
        raise UnavailableError(f"attempt {retries} failed on purpose")
    return int(retries)


@app.task(name="fleet.poison", bind=True)  # type: ignore[untyped-decorator]
def poison(self: Any) -> None:
    """Kills the pool child running it, every time: what a segfaulting extension looks like."""
    ledger().rpush(f"started:{self.request.id}", f"{worker_name()}:{os.getpid()}")
    os.kill(os.getpid(), signal.SIGKILL)
