"""Worker throughput (tasks/s) with celery_fleet's production settings against Celery's defaults.

The production settings trade some throughput for safety: one reserved message per pool process
(`worker_prefetch_multiplier=1` instead of 4), an acknowledgement after each task instead of before
it (`task_acks_late`), a JSON task-event line per task on stdout, and the health heartbeat. This
measures what that costs on one task mix, both figures and their ratio from one run:

* a throwaway ``redis-server`` on loopback per profile (tests.support.redis_server);
* N tasks published to it first (every tenth sleeps 50 ms, the others return at once), with a plain
  Celery app, so both profiles consume byte-identical queues;
* one real ``celery worker --pool prefork`` per profile (this module is the app: ``BENCH_PROFILE``
  picks ``defaults`` or ``fleet``), started once the queue is full; every task INCRs a counter;
* the time from the first task's completion to the N-th: startup is not counted, and the figure
  is (N - 1) / that time.

Run from the repository root: ``python bench/worker_throughput.py [--tasks N] [--concurrency C]
[--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import redis
from celery import Celery

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # Run as a script from anywhere: tests.support and the runtime package resolve from the root.
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.redis_server import RedisServer  # noqa: E402 - after the sys.path fix above

PROFILES = ("defaults", "fleet")
PROFILE_LABELS = {
    "defaults": "Celery defaults (prefetch x4, early ack)",
    "fleet": "celery_fleet.configure (prefetch x1, late ack, task events, heartbeat)",
}
PROFILE_ENV = "BENCH_PROFILE"
COUNTER_ENV = "BENCH_COUNTER_URL"
DONE_KEY = "bench:done"
SLEEP_EVERY = 10
SLEEP_S = 0.05
DEFAULT_TASKS = 2_000
DEFAULT_CONCURRENCY = 2
QUEUE = "celery"


def _worker_app() -> Celery:
    """The app the benchmark's worker processes load (`celery -A bench.worker_throughput`)."""
    profile = os.environ.get(PROFILE_ENV, "defaults")
    app = Celery("bench", broker=os.environ.get("CELERY_FLEET_BROKER_URL"))
    if profile == "fleet":
        import celery_fleet  # noqa: PLC0415 - only the fleet profile's workers configure it

        celery_fleet.configure(app)
    return app


app = _worker_app()
_counter: list[redis.Redis] = []


def _count() -> None:
    if not _counter:
        _counter.append(redis.Redis.from_url(os.environ[COUNTER_ENV]))
    _counter[0].incr(DONE_KEY)


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]  # Celery has no type hints
def noop(item: int) -> int:
    """A task that does nothing but report that it ran."""
    _count()
    return item


@app.task(name="bench.sleep")  # type: ignore[untyped-decorator]
def sleep(item: int) -> int:
    """A task that waits 50 ms, as one waiting on a database or an HTTP call would."""
    time.sleep(SLEEP_S)
    _count()
    return item


@dataclass(frozen=True)
class Run:
    """One profile's figures."""

    profile: str
    tasks: int
    seconds: float
    tasks_per_s: float


def publish(broker_url: str, tasks: int) -> None:
    producer = Celery("bench-producer", broker=broker_url, set_as_current=False)
    try:
        with producer.producer_or_acquire() as connection_producer:
            for item in range(tasks):
                name = "bench.sleep" if item % SLEEP_EVERY == 0 else "bench.noop"
                producer.send_task(name, args=[item], producer=connection_producer)
    finally:
        producer.close()


def measure(profile: str, *, tasks: int, concurrency: int, workdir: Path, timeout_s: float) -> Run:
    with RedisServer() as server:
        counter_url = f"redis://127.0.0.1:{server.port}/1"
        publish(server.url, tasks)
        queued = server.client().llen(QUEUE)
        if queued != tasks:
            raise RuntimeError(f"{queued} of {tasks} tasks reached the queue")
        log_path = workdir / f"worker-{profile}.log"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
            PROFILE_ENV: profile,
            COUNTER_ENV: counter_url,
            "CELERY_FLEET_BROKER_URL": server.url,
            "CELERY_FLEET_HEALTH_FILE": str(workdir / f"heartbeat-{profile}"),
        }
        args = [
            sys.executable, "-m", "celery", "-A", "bench.worker_throughput", "worker",
            "--pool", "prefork", "--concurrency", str(concurrency), "--loglevel", "WARNING",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                args, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            return _time_run(
                profile=profile,
                tasks=tasks,
                server=server,
                worker=worker,
                log_path=log_path,
                timeout_s=timeout_s,
            )
        finally:
            # The whole group (main process and pool children), which this run started. SIGKILL:
            # the fleet profile would otherwise wait out its soft shutdown.
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def _time_run(
    *,
    profile: str,
    tasks: int,
    server: RedisServer,
    worker: subprocess.Popen[bytes],
    log_path: Path,
    timeout_s: float,
) -> Run:
    counter = redis.Redis(host="127.0.0.1", port=server.port, db=1)
    deadline = time.monotonic() + timeout_s
    # The clock starts at the first completed task, so that worker startup is not counted.
    while int(counter.get(DONE_KEY) or 0) < 1:
        _check_alive(worker, log_path, deadline, "start")
        time.sleep(0.002)
    started = time.perf_counter()
    while int(counter.get(DONE_KEY) or 0) < tasks:
        _check_alive(worker, log_path, deadline, "finish")
        time.sleep(0.005)
    seconds = time.perf_counter() - started
    # The first task finished at the start of the clock: N - 1 tasks ran in `seconds`.
    return Run(profile=profile, tasks=tasks, seconds=seconds, tasks_per_s=(tasks - 1) / max(seconds, 1e-9))


def _check_alive(worker: subprocess.Popen[bytes], log_path: Path, deadline: float, what: str) -> None:
    if worker.poll() is not None or time.monotonic() > deadline:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"worker did not {what} (exit code {worker.poll()}):\n{tail}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tasks", type=int, default=DEFAULT_TASKS, help=f"tasks per profile ({DEFAULT_TASKS})"
    )
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="pool processes (2)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per profile (600)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.tasks < 2:
        parser.error("--tasks must be at least 2 (the clock starts at the first task)")

    with tempfile.TemporaryDirectory(prefix="celery-fleet-bench-") as workdir:
        runs = {
            profile: measure(
                profile,
                tasks=args.tasks,
                concurrency=args.concurrency,
                workdir=Path(workdir),
                timeout_s=args.timeout,
            )
            for profile in PROFILES
        }
    ratio = runs["fleet"].tasks_per_s / runs["defaults"].tasks_per_s
    if args.json:
        report = {
            "tasks": args.tasks,
            "concurrency": args.concurrency,
            "mix": f"every {SLEEP_EVERY}th task sleeps {SLEEP_S * 1000:.0f} ms, the others return at once",
            "runs": {profile: asdict(run) for profile, run in runs.items()},
            "ratio_fleet_vs_defaults": ratio,
        }
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"{args.tasks:,} tasks per profile, prefork x{args.concurrency}; every {SLEEP_EVERY}th task sleeps "
        f"{SLEEP_S * 1000:.0f} ms, the others return at once. Worker startup not counted."
    )
    for profile, run in runs.items():
        print(f"  {PROFILE_LABELS[profile]:<75} {run.tasks_per_s:8.1f} tasks/s  ({run.seconds:.2f} s)")
    print(f"  ratio production / defaults: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
