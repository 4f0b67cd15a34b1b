"""In a real prefork worker: the pool child keeps a 1 MiB message byte for byte before the ack, and the
main process keeps a task the pool killed at its hard time limit."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery_fleet.contract import kept_messages as km

from tests.support.redis_server import RedisServer

REPO_ROOT = Path(__file__).resolve().parents[2]
MESSAGE_CHARS = 1024 * 1024

pytestmark = pytest.mark.slow


def test_a_prefork_worker_keeps_a_one_mib_message_and_a_killed_task_exactly_as_queued(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELERY_FLEET_BROKER_URL", redis_server.url)
    monkeypatch.setenv("KEPT_DIR", str(tmp_path))
    sys.modules.pop("tests.replay.prefork_app", None)
    worker_app = importlib.import_module("tests.replay.prefork_app")
    client = redis_server.client()
    result = worker_app.app.send_task("prefork.fail", args=["x" * MESSAGE_CHARS])
    (queued,) = client.lrange(worker_app.QUEUE, 0, -1)
    assert len(queued) > MESSAGE_CHARS
    killed = worker_app.app.send_task("prefork.sleep", args=[30])
    killed_queued = client.lindex(worker_app.QUEUE, 0)

    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tests.replay.prefork_app",
        "worker",
        "--pool=prefork",
        "--concurrency=1",
        f"--queues={worker_app.QUEUE}",
        "--loglevel=ERROR",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    stderr_path = tmp_path / "worker.log"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=dict(os.environ),
            stderr=stderr,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
    kept_file = tmp_path / km.message_key(result.id).replace("/", "__")
    killed_file = tmp_path / km.message_key(killed.id).replace("/", "__")
    try:
        deadline = time.monotonic() + 30
        while not (kept_file.exists() and killed_file.exists() and client.hlen("unacked") == 0):
            assert time.monotonic() < deadline, stderr_path.read_text(errors="replace")[-4000:]
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)

    envelope = json.loads(kept_file.read_bytes())
    assert envelope["message"].encode() == queued
    assert (envelope["task_id"], envelope["routing_key"]) == (result.id, worker_app.QUEUE)
    assert client.llen(worker_app.QUEUE) == 0
    # The hard time limit is reported by the worker's main process, which keeps it the same way.
    assert json.loads(killed_file.read_bytes())["message"].encode() == killed_queued
