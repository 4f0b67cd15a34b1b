"""A Celery app with one periodic task, for running the synthesized beat command for real."""

from __future__ import annotations

import celery_fleet
from celery import Celery

QUEUE = "beat-test"

app = Celery("beat_app")
celery_fleet.configure(app, max_task_runtime_s=60, healthcheck=False, task_events=False)
app.conf.update(
    task_default_queue=QUEUE,
    beat_schedule={"tick": {"task": "beat_app.tick", "schedule": 1.0}},
)


@app.task(name="beat_app.tick")  # type: ignore[untyped-decorator]  # Celery has no type hints
def tick() -> None:
    """Never run here: the test only checks that beat sends it."""
