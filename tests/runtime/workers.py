"""Real `celery worker` processes for the reliability tests, and the waits the tests need."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import redis

REPO_ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))
TEST_APP = "tests.runtime.fleet_app"

# fleet_app's `fleet.flaky` retry options; here so that tests need not import fleet_app (which
# configures itself from a worker's environment).
FLAKY_RETRY = {"retry_backoff": 1, "retry_backoff_max": 3, "retry_jitter": True, "max_retries": 4}


class WorkerProcess:
    """One `celery -A tests.runtime.fleet_app worker --pool prefork`, its output kept in a log file."""

    def __init__(
        self,
        name: str,
        *,
        broker_url: str,
        ledger_url: str,
        log_dir: Path,
        concurrency: int = 2,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.health_file = log_dir / f"{name}.heartbeat"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "CELERY_FLEET_BROKER_URL": broker_url,
            "FLEET_TEST_LEDGER_URL": ledger_url,
            "FLEET_TEST_WORKER_NAME": name,
            "CELERY_FLEET_HEALTH_FILE": str(self.health_file),
            # As the container sets it: SIGTERM starts Celery's soft (then cold) shutdown.
            "REMAP_SIGTERM": "SIGQUIT",
            **(env or {}),
        }
        self.args = [
            CELERY, "-A", TEST_APP, "worker",
            "--pool", "prefork",
            "--concurrency", str(concurrency),
            "--hostname", f"{name}@%h",
            "--loglevel", "INFO",
            # Fewer moving parts: no worker-to-worker traffic on the broker.
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.args,
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        wait_for(lambda: " ready." in self.log(), timeout_s, f"worker {self.name} ready", self)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait_exit(self, timeout_s: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.name} still running after {timeout_s} s\n{self.log()}"
            ) from None

    def kill(self) -> None:
        """Stop the worker and its pool children (its own process group, started by us)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        else:
            # Children outlive a main process that died abnormally; the group goes with them.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class EcsTask(WorkerProcess):
    """A worker run as ECS runs the task definition's container, `command` and `env` its own.

    A PID namespace of its own with tini as PID 1 (what `initProcessEnabled` gives), the worker its
    child; `stop` is ECS's: SIGTERM to PID 1 only, which tini passes to its child, the worker's main
    process (never to the pool's children), then SIGKILL to everything at the stop timeout. The
    broker and ledger variables of the other workers are added to `env`.
    """

    def __init__(
        self,
        name: str,
        *,
        command: list[str],
        broker_url: str,
        ledger_url: str,
        log_dir: Path,
        env: Mapping[str, str],
    ) -> None:
        super().__init__(name, broker_url=broker_url, ledger_url=ledger_url, log_dir=log_dir, env=env)
        namespace = ["unshare", "--fork", "--pid", "--mount-proc"]
        if os.geteuid() != 0:
            namespace[1:1] = ["--user", "--map-root-user"]
        executable = CELERY if command[0] == "celery" else command[0]
        self.args = [*namespace, "tini", "--", executable, *command[1:]]

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        # The task definition's --loglevel=WARNING hides Celery's "ready"; the first heartbeat shows it.
        wait_for(self.health_file.exists, timeout_s, f"worker {self.name} consuming", self)

    def init_pid(self) -> int:
        """tini's PID outside the namespace: unshare's only child."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        wait_for(lambda: bool(children.read_text().split()), 10, "unshare's child (tini)", self)
        return int(children.read_text().split()[0])

    def signal(self, signum: int) -> None:
        os.kill(self.init_pid(), signum)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(AssertionError, ProcessLookupError):
                os.kill(self.init_pid(), signal.SIGKILL)
        super().kill()

    def stop(self, stop_timeout_s: float) -> bool:
        """ECS's stop; whether the worker was gone before the SIGKILL."""
        assert self.process is not None
        init = self.init_pid()
        os.kill(init, signal.SIGTERM)
        try:
            self.process.wait(timeout=stop_timeout_s)
        except subprocess.TimeoutExpired:
            # PID 1 dying takes every process of its namespace with it.
            os.kill(init, signal.SIGKILL)
            self.process.wait(timeout=10)
            return False
        return True


def wait_for(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    *workers: WorkerProcess,
    interval_s: float = 0.05,
) -> None:
    """Poll `condition` until true; fail naming `what`, with the workers' logs, after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    logs = "\n".join(f"--- {worker.name} ---\n{worker.log()[-4000:]}" for worker in workers)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{logs}")


def started(client: redis.Redis, task_id: str) -> list[str]:
    """`worker:pid` of every run of `task_id` that began (fleet_app's ledger)."""
    return [text(entry) for entry in client.lrange(f"started:{task_id}", 0, -1)]


def done(client: redis.Redis, task_id: str) -> list[str]:
    """The worker name of every run of `task_id` that completed (fleet_app's ledger)."""
    return [text(entry) for entry in client.lrange(f"done:{task_id}", 0, -1)]


def text(entry: bytes | str) -> str:
    """A ledger entry as text (the ledger client does not decode replies)."""
    return entry.decode() if isinstance(entry, bytes) else entry
