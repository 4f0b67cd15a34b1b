"""`celery-fleet-healthcheck`: exit 0 when the worker was seen consuming recently, 1 otherwise.

The worker's heartbeat step (`celery_fleet.heartbeat`) rewrites the health file every few seconds
while its consumer runs and the broker answers. This check only reads the file's age, so it costs
no broker connection and starts fast (no Celery import): the container's health check runs it every
interval. Standard library only.

Environment: `CELERY_FLEET_HEALTH_FILE` (default /tmp/celery-fleet-heartbeat), the same one the
worker writes; `CELERY_FLEET_HEALTH_MAX_AGE_S` (default 60), how old the last touch may be.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from celery_fleet.contract import worker_env

# One worker per container, so the container's own /tmp is the worker's.
DEFAULT_HEALTH_FILE = "/tmp/celery-fleet-heartbeat"
# Six missed touches at the default 10 s interval: a broker failover (tens of seconds) does not
# fail the check, a consumer that stopped for a minute does.
DEFAULT_MAX_AGE_S = 60.0


def check(path: Path, *, max_age_s: float, now: float) -> tuple[bool, str]:
    """Whether the heartbeat at `path` is at most `max_age_s` old at `now`, and a one-line reason."""
    try:
        touched = path.stat().st_mtime
    except FileNotFoundError:
        return False, f"unhealthy: no heartbeat file at {path} (worker not started or not consuming)"
    except OSError as exc:
        return False, f"unhealthy: cannot read heartbeat file {path}: {exc.strerror}"
    age = now - touched
    if age > max_age_s:
        return False, f"unhealthy: last heartbeat {age:.1f} s ago (max {max_age_s:g} s): worker not consuming"
    return True, f"healthy: last heartbeat {max(age, 0.0):.1f} s ago (max {max_age_s:g} s)"


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Print one line and return the exit code (0 healthy, 1 unhealthy)."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="celery-fleet-healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("--file", default=env.get(worker_env.HEALTH_FILE_ENV) or DEFAULT_HEALTH_FILE)
    parser.add_argument(
        "--max-age", type=float, default=None, help=f"seconds (env {worker_env.HEALTH_MAX_AGE_ENV})"
    )
    args = parser.parse_args(argv)
    max_age_s = args.max_age
    if max_age_s is None:
        raw = env.get(worker_env.HEALTH_MAX_AGE_ENV, "").strip()
        try:
            max_age_s = float(raw) if raw else DEFAULT_MAX_AGE_S
        except ValueError:
            print(f"unhealthy: {worker_env.HEALTH_MAX_AGE_ENV}={raw!r} is not a number of seconds")
            return 1
    healthy, reason = check(Path(args.file), max_age_s=max_age_s, now=time.time())
    print(reason)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
