"""ECS task scale-in protection from a real worker, against a fake ECS agent endpoint on loopback.

The fake answers as the ECS developer guide's "Task scale-in protection endpoint" documents: PUT
`/task-protection/v1/state` with `{"ProtectionEnabled": ..., "ExpiresInMinutes": ...}`, a
`{"protection": {...}}` object on success, `{"error": {"Code", "Message"}}` on failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery_fleet.protection import PROTECTION_PATH, ProtectionError, ProtectionKeeper, put_protection

from tests.support.redis_server import RedisServer

REPO_ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))
TASK_ARN = "arn:aws:ecs:eu-west-1:111122223333:task/fleet/0123456789abcdef0"


@dataclass
class FakeAgent:
    """Records every protection request (monotonic time, body); answers success or a documented error."""

    failing: bool = False
    requests: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for _, body in self.requests]

    def first(self, enabled: bool, after: float = 0.0) -> float | None:
        with self.lock:
            return next(
                (at for at, body in self.requests if body["ProtectionEnabled"] is enabled and at >= after),
                None,
            )


@pytest.fixture
def agent() -> Iterator[tuple[FakeAgent, str]]:
    fake = FakeAgent()

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with fake.lock:
                fake.requests.append((time.monotonic(), body))
            if self.path != PROTECTION_PATH:
                self._answer(404, {"error": {"Code": "NotFound", "Message": self.path}})
            elif fake.failing:
                self._answer(
                    400,
                    {
                        "requestID": "12345-abc",
                        "error": {
                            "Arn": TASK_ARN,
                            "Code": "AccessDeniedException",
                            "Message": "not authorized to perform: ecs:UpdateTaskProtection",
                        },
                    },
                )
            else:
                expires = "2026-12-02T03:00:00Z" if body["ProtectionEnabled"] else None
                self._answer(
                    200,
                    {
                        "protection": {
                            "ExpirationDate": expires,
                            "ProtectionEnabled": body["ProtectionEnabled"],
                            "TaskArn": TASK_ARN,
                        }
                    },
                )

        def _answer(self, status: int, answer: dict[str, Any]) -> None:
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{tail}")


@pytest.fixture
def worker(
    redis_server: RedisServer, agent: tuple[FakeAgent, str], tmp_path: Path
) -> Iterator[Callable[[], Path]]:
    processes: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "worker.log"

    def start() -> Path:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "CELERY_FLEET_BROKER_URL": redis_server.url,
            "ECS_AGENT_URI": agent[1],
            "REMAP_SIGTERM": "SIGQUIT",
        }
        args = [
            CELERY, "-A", "tests.scaling.protection_app", "worker", "--pool", "prefork", "--concurrency", "2",
            "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        with log.open("ab") as out:
            processes.append(
                subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
            )
        wait_for(lambda: " ready." in log.read_text(errors="replace"), 30, "the worker ready", log)
        return log

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def client_app(redis_server: RedisServer) -> Iterator[Celery]:
    app = Celery("protection-client", broker=redis_server.url, set_as_current=False)
    yield app
    app.close()


def events(record: Path, kind: str) -> list[float]:
    if not record.exists():
        return []
    return [float(line.split()[1]) for line in record.read_text().splitlines() if line.startswith(kind)]


def test_a_worker_is_protected_while_it_runs_a_task_and_released_once_idle(
    agent: tuple[FakeAgent, str], worker: Callable[[], Path], client_app: Celery, tmp_path: Path
) -> None:
    fake, _ = agent
    log = worker()
    record = tmp_path / "task.record"
    sent = time.monotonic()

    client_app.send_task("protection.hold", args=(1.5, str(record)))
    wait_for(lambda: events(record, "end"), 20, "the task to finish", log)
    ended = events(record, "end")[0]
    wait_for(lambda: fake.first(False, after=ended), 10, "protection released after the task", log)

    protected_at = fake.first(True, after=sent)
    assert protected_at is not None
    assert protected_at < ended
    released_at = fake.first(False, after=protected_at)
    assert released_at is not None
    assert released_at > ended
    enabling = [body for body in fake.bodies() if body["ProtectionEnabled"]]
    # The expiry is the backstop for a worker that hangs with its task: always sent.
    assert {body["ExpiresInMinutes"] for body in enabling} == {60}


def test_a_failing_agent_never_stops_the_worker_from_consuming(
    agent: tuple[FakeAgent, str], worker: Callable[[], Path], client_app: Celery, tmp_path: Path
) -> None:
    fake, _ = agent
    fake.failing = True
    log = worker()
    records = [tmp_path / f"task-{n}.record" for n in range(4)]

    for record in records:
        client_app.send_task("protection.hold", args=(0.3, str(record)))
    wait_for(lambda: all(events(record, "end") for record in records), 30, "every task to finish", log)

    assert any(body["ProtectionEnabled"] for body in fake.bodies())
    text = log.read_text(errors="replace")
    assert "could not set ECS task scale-in protection (HTTP 400: error AccessDeniedException" in text
    # Reported once, not once per retry.
    assert text.count("could not set ECS task scale-in protection") == 1


def test_an_answer_without_a_protection_object_is_an_error(agent: tuple[FakeAgent, str]) -> None:
    _, uri = agent

    with pytest.raises(ProtectionError, match="HTTP 404: error NotFound"):
        put_protection(uri + "/elsewhere", enabled=True, expires_in_minutes=5, timeout_s=1)


def test_a_busy_worker_renews_its_protection_at_half_its_life(agent: tuple[FakeAgent, str]) -> None:
    fake, uri = agent
    now = [0.0]
    held = [{"a"}]
    keeper = ProtectionKeeper(uri, expires_in_minutes=10, held=lambda: held[0], clock=lambda: now[0])

    keeper.check()
    now[0] = 299.0
    held[0] = {"b"}
    keeper.check()
    now[0] = 300.0
    keeper.check()

    assert fake.bodies() == [{"ProtectionEnabled": True, "ExpiresInMinutes": 10}] * 2


def test_an_idle_worker_gives_up_protection_only_after_the_grace_period(agent: tuple[FakeAgent, str]) -> None:
    fake, uri = agent
    now = [0.0]
    held = [{"a"}]
    keeper = ProtectionKeeper(uri, idle_grace_s=10, held=lambda: held[0], clock=lambda: now[0])
    keeper.check()
    held[0] = set()

    for at in (1.0, 9.9):
        now[0] = at
        keeper.check()
    assert [body["ProtectionEnabled"] for body in fake.bodies()] == [True]
    now[0] = 11.0
    keeper.check()
    now[0] = 20.0
    keeper.check()

    assert [body["ProtectionEnabled"] for body in fake.bodies()] == [True, False]
    assert keeper.protected is False


def test_a_worker_holding_the_same_task_past_the_expiry_lets_its_protection_expire(
    agent: tuple[FakeAgent, str],
) -> None:
    fake, uri = agent
    now = [0.0]
    keeper = ProtectionKeeper(uri, expires_in_minutes=10, held=lambda: {"hung"}, clock=lambda: now[0])

    for minute in range(0, 31):
        now[0] = minute * 60.0
        keeper.check()

    # Set at 0 and renewed at 5 minutes; from 10 minutes on the same task is not worth renewing for.
    assert len(fake.bodies()) == 2


def test_the_agents_expiry_bounds_are_enforced() -> None:
    with pytest.raises(ValueError, match="expires_in_minutes=2881: the ECS agent takes 1 to 2880 minutes"):
        ProtectionKeeper("http://127.0.0.1:1", expires_in_minutes=2881)
