"""Slim messages and stock Celery mix: each kind of worker runs what each kind of producer sent.

Two real producers, each in its own process (stock Celery; celery_fleet's configure), publish onto
one queue of a real redis-server; then one real worker, stock or configured, runs all of it. The
ledger records what each task decoded from its message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery_fleet.contract.task_events import F_TASK_ID, MARKER_KEY
from celery_fleet.contract.worker_env import EVENT_KEY_ENV

from tests.runtime.interop_app import QUEUE, TRICKY_ARGS
from tests.runtime.workers import REPO_ROOT, WorkerProcess, wait_for
from tests.support.redis_server import RedisServer
from tools.cost import load_prices

INTEROP_APP = "tests.runtime.interop_app"
MODES = ("plain", "fleet")
# plain + countdown + retried (twice: first run and its retry) + two chain steps, per producer.
RUNS_PER_PRODUCER = 5


def publish(mode: str, broker: RedisServer, ledger: RedisServer) -> dict[str, str]:
    completed = subprocess.run(
        [sys.executable, "-m", INTEROP_APP, "publish"],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "INTEROP_MODE": mode,
            "CELERY_FLEET_BROKER_URL": broker.url,
            "FLEET_TEST_LEDGER_URL": ledger.url,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    ids: dict[str, str] = json.loads(completed.stdout.strip().splitlines()[-1])
    return ids


def runs(client: redis.Redis, task_id: str) -> list[dict[str, Any]]:
    return [json.loads(entry) for entry in client.lrange(f"ran:{task_id}", 0, -1)]


@pytest.fixture
def interop_worker(
    redis_server: RedisServer, ledger: RedisServer, tmp_path: Path
) -> Iterator[Callable[[str], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(mode: str) -> WorkerProcess:
        worker = WorkerProcess(
            f"{mode}-worker",
            broker_url=redis_server.url,
            ledger_url=ledger.url,
            log_dir=tmp_path,
            # Signed event lines, as the stack's workers write them.
            env={"INTEROP_MODE": mode, EVENT_KEY_ENV: "interop-test-key-" * 4},
        )
        worker.args[worker.args.index("tests.runtime.fleet_app")] = INTEROP_APP
        started.append(worker.start())
        return worker

    yield start
    for worker in started:
        worker.kill()


@pytest.fixture
def mixed_queue(redis_server: RedisServer, ledger: RedisServer) -> dict[str, dict[str, str]]:
    """Both producers' messages on one queue, checked to be of the kind each producer sends."""
    by_producer = {mode: publish(mode, redis_server, ledger) for mode in MODES}
    messages = {
        json.loads(raw)["headers"]["id"]: json.loads(raw)
        for raw in redis_server.client().lrange(QUEUE, 0, -1)
    }
    for mode, ids in by_producer.items():
        for kind in ("plain", "countdown", "retried", "chain_first"):
            message = messages[ids[kind]]
            if mode == "fleet":
                assert message["properties"]["body_encoding"] is None
                assert "argsrepr" not in message["headers"]
                assert "reply_to" not in message["properties"]
            else:
                assert message["properties"]["body_encoding"] == "base64"
                assert "argsrepr" in message["headers"]
    return by_producer


def check_every_task_ran_once(
    client: redis.Redis, by_producer: dict[str, dict[str, str]], worker: str
) -> None:
    for producer, ids in by_producer.items():
        plain = runs(client, ids["plain"])
        assert len(plain) == 1, (producer, plain)
        assert plain[0]["worker"] == worker
        assert plain[0]["args"] == TRICKY_ARGS
        assert plain[0]["kwargs"] == {"url": "https://example.com/a?b=1"}
        assert (plain[0]["retries"], plain[0]["root_id"], plain[0]["parent_id"], plain[0]["eta"]) == (
            0,
            ids["plain"],
            None,
            None,
        )
        later = runs(client, ids["countdown"])
        assert len(later) == 1, (producer, later)
        assert later[0]["eta"], (producer, later)
        retried = runs(client, ids["retried"])
        assert [run["retries"] for run in retried] == [1], (producer, retried)
        assert retried[0]["args"] == [f"{producer}-token"]
        first = runs(client, ids["chain_first"])
        second = runs(client, ids["chain_second"])
        assert [run["args"] for run in first + second] == [["step-1"], ["step-2"]], (producer, first, second)
        assert (second[0]["parent_id"], second[0]["root_id"]) == (ids["chain_first"], ids["chain_first"])


def wait_all_ran(client: redis.Redis, by_producer: dict[str, dict[str, str]], worker: WorkerProcess) -> None:
    keys = [f"ran:{task_id}" for ids in by_producer.values() for task_id in ids.values()]
    wait_for(lambda: all(client.exists(key) for key in keys), 30, "every task to run", worker)


def test_stock_worker_runs_slim_and_stock_messages(
    mixed_queue: dict[str, dict[str, str]],
    interop_worker: Callable[[str], WorkerProcess],
    ledger_client: redis.Redis,
) -> None:
    worker = interop_worker("plain")
    wait_all_ran(ledger_client, mixed_queue, worker)
    check_every_task_ran_once(ledger_client, mixed_queue, "plain")


def test_fleet_worker_runs_stock_and_slim_messages(
    mixed_queue: dict[str, dict[str, str]],
    interop_worker: Callable[[str], WorkerProcess],
    ledger_client: redis.Redis,
) -> None:
    worker = interop_worker("fleet")
    wait_all_ran(ledger_client, mixed_queue, worker)
    check_every_task_ran_once(ledger_client, mixed_queue, "fleet")
    # The task-event emitter reads slim messages too: one line for each run, stock or slim.
    lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    reported = [line[F_TASK_ID] for line in lines if MARKER_KEY in line]
    assert len(reported) == RUNS_PER_PRODUCER * len(MODES) + len(MODES)
    for ids in mixed_queue.values():
        assert set(ids.values()) <= set(reported)
    # The cost estimate prices CloudWatch Logs ingestion from this size (tools/prices/*.toml).
    succeeded = [
        len(line.encode()) + 1 for line in worker.log().splitlines() if '"event":"succeeded"' in line
    ]
    assert succeeded
    assert max(succeeded) <= load_prices()["assumptions"]["event_line_bytes"], succeeded
