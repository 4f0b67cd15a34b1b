"""The poll benchmark runs end to end on a small broker; only its counts are checked, never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_the_benchmark_reports_one_round_trip_per_poll_against_one_per_command() -> None:
    # As people run it: a script from the repository root.
    completed = subprocess.run(
        [
            sys.executable,
            "bench/queue_depth_poll.py",
            "--queues=4",
            "--per-priority=3",
            "--in-flight=2",
            "--polls=5",
            "--json",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)

    publisher, default_steps, naive = report["figures"]
    assert publisher["approach"].startswith("scripts, 10 sibling lists")
    lists = report["lists_per_queue_read"] * report["queues"]
    assert publisher["round_trips_per_poll"] == default_steps["round_trips_per_poll"] == 1
    # One script per queue and one for `unacked`; the naive way: LLEN and both ends of each list,
    # then HLEN and HSCAN of `unacked`.
    assert publisher["commands_per_poll"] == report["queues"] + 1
    assert naive["round_trips_per_poll"] == naive["commands_per_poll"] == 3 * lists + 2
    assert (report["messages_waiting"], report["messages_in_flight"]) == (4 * 4 * 3 - 2, 2)
    assert report["in_flight_by_queue_published"] is True
    # 4 depths, 4 ages, 4 in flight per queue, in flight broker-wide
    assert (report["metric_data_items"], report["put_metric_data_calls"]) == (13, 1)
