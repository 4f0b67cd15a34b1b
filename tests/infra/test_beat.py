"""Beat starts as the image's non-root user in a read-only working directory, and publishes.

The command is the one the synthesized task definition gives the Beat container, run for real
against a real redis-server: the schedule file must land somewhere any user can write (the sample
image's /app belongs to root, and ECS would restart a beat that exits on PermissionError forever).
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from infra.workers.beat import BEAT_SCHEDULE_PATH
from tests.support.redis_server import RedisServer
from tests.support.synth import ROOT, config_with, synth

# tests/infra/beat_app.py's task_default_queue (not imported: the app needs its broker at import).
QUEUE = "beat-test"
# The user the test runs beat as when it runs as root: a user who owns nothing here, like the
# image's `worker` (uid 10001), which owns nothing in /app.
UNPRIVILEGED = "nobody"


@pytest.fixture(scope="module")
def beat_command(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    config = config_with(
        "dev", {"workers": {"beat": {"enabled": True}, "image": {"app_module": "tests.infra.beat_app"}}}
    )
    template = synth(config, tmp_path_factory.mktemp("cdk-beat"), nag=False).template("stateless")
    definitions: Mapping[str, Any] = template.find_resources("AWS::ECS::TaskDefinition")
    beats = [
        container
        for definition in definitions.values()
        for container in definition["Properties"]["ContainerDefinitions"]
        if container["Name"] == "Beat"
    ]
    assert len(beats) == 1
    # No user override: beat runs as the image's USER, as the test below does.
    assert "User" not in beats[0]
    command: list[str] = beats[0]["Command"]
    return command


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


def _schedule_files() -> list[Path]:
    return list(Path(BEAT_SCHEDULE_PATH).parent.glob(Path(BEAT_SCHEDULE_PATH).name + "*"))


def test_beat_runs_as_a_non_root_user_from_a_read_only_directory_and_publishes(
    beat_command: list[str], redis_server: RedisServer, tmp_path: Path
) -> None:
    for leftover in _schedule_files():
        leftover.unlink()
    workdir = tmp_path / "app"
    workdir.mkdir()
    workdir.chmod(0o555)
    tmp_path.chmod(0o755)
    if os.geteuid() == 0:
        user = pwd.getpwnam(UNPRIVILEGED)
        prefix = _as_user(user.pw_uid, user.pw_gid, stash=tmp_path / "interpreter")
        expected_uid = user.pw_uid
    else:
        prefix, expected_uid = [], os.geteuid()
    assert expected_uid != 0
    celery = shutil.which("celery", path=str(Path(sys.executable).parent))
    assert celery is not None
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "HOME": str(workdir),
        "CELERY_FLEET_BROKER_URL": redis_server.url,
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    process = subprocess.Popen(
        [*prefix, celery, *beat_command[1:]],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    client = redis_server.client()
    try:
        deadline = time.monotonic() + 30
        while client.llen(QUEUE) == 0 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        running_uid = _uid_of(process.pid) if process.poll() is None else None
        published = client.llen(QUEUE)
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0].decode(errors="replace")
        for leftover in _schedule_files():
            leftover.unlink()
    assert published > 0, output
    assert running_uid == expected_uid, output
    assert "PermissionError" not in output
    assert list(workdir.iterdir()) == []


def _as_user(uid: int, gid: int, *, stash: Path) -> list[str]:
    """A command prefix that runs the rest as `uid` (no supplementary groups, as a container's USER).

    When this interpreter lives under a directory other users cannot enter (a pyenv under a 0700
    /root), the command runs in a private mount namespace where that directory is an empty, readable
    tmpfs with only the interpreter bound back in: the image's Python is readable by its user, and
    nothing outside the namespace changes.
    """
    drop = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    interpreter = Path(sys.base_prefix).resolve()
    closed = next((p for p in reversed(interpreter.parents) if not p.stat().st_mode & 0o001), None)
    if closed is None:
        return drop
    stash.mkdir()
    script = " && ".join(
        [
            f"mount --bind {shlex.quote(str(interpreter))} {shlex.quote(str(stash))}",
            f"mount -t tmpfs -o mode=0755 tmpfs {shlex.quote(str(closed))}",
            f"mkdir -p {shlex.quote(str(interpreter))}",
            f"mount --bind {shlex.quote(str(stash))} {shlex.quote(str(interpreter))}",
            'exec "$@"',
        ]
    )
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *drop]


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")
