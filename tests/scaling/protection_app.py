"""The Celery app the scale-in protection tests run in a real worker, configured by celery_fleet.

`ECS_AGENT_URI` points at the test's fake agent; the protection's timings are scaled down to
fractions of a second (production: a check every 5 s, 10 s of idleness before giving it up).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import celery_fleet
from celery import Celery
from celery_fleet import protection

app = Celery("protection_app")
celery_fleet.configure(
    app,
    max_task_runtime_s=30,
    max_countdown_s=10,
    visibility_margin_s=5,
    stop_timeout_s=5,
    shutdown_margin_s=2,
    task_events=False,
    healthcheck=False,
)
protection.install_from_env(
    os.environ,
    check_interval_s=float(os.environ.get("PROTECTION_TEST_CHECK_S", "0.2")),
    idle_grace_s=float(os.environ.get("PROTECTION_TEST_GRACE_S", "0.5")),
    request_timeout_s=1.0,
)


@app.task(name="protection.hold")  # type: ignore[untyped-decorator]  # Celery has no type hints
def hold(seconds: float, record: str) -> None:
    """Run for `seconds`, writing when it started and ended (monotonic) to `record`."""
    path = Path(record)
    with path.open("a") as out:
        out.write(f"start {time.monotonic()}\n")
    time.sleep(seconds)
    with path.open("a") as out:
        out.write(f"end {time.monotonic()}\n")
