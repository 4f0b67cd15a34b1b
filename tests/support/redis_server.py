"""Real redis-server processes for tests and benchmarks: started on loopback, never mocked."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server on 127.0.0.1 with no persistence, started and stopped by the caller.

    `settings` are extra config directives (e.g. the broker's list settings); `restart()` stops and
    starts the same server on the same port, for tests of workers surviving a broker restart.
    """

    def __init__(
        self, settings: dict[str, str] | None = None, port: int | None = None, binary: str | None = None
    ) -> None:
        binary = binary or shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server; .ci/run does)")
        self.binary = binary
        self.port = port or free_port()
        self.settings = dict(settings or {})
        self._dir = tempfile.TemporaryDirectory(prefix="celery-fleet-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=0)

    def start(self) -> RedisServer:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir.name,
        ]
        for key, value in self.settings.items():
            args += [f"--{key}", value]
        with Path(self._dir.name, "redis.log").open("ab") as log:
            # The child keeps its own copy of the descriptor after ours is closed.
            self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                log = Path(self._dir.name, "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server exited at start:\n{log}")
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} not ready after {timeout_s} s")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the server (its data is lost: no persistence) and start it again on the same port."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
