"""The worker throughput benchmark runs end to end on a handful of tasks (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import worker_throughput

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_benchmark_reports_both_profiles_and_their_ratio() -> None:
    completed = subprocess.run(
        [sys.executable, "bench/worker_throughput.py", "--tasks", "30", "--json", "--timeout", "60"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["tasks"] == 30
    assert set(report["runs"]) == set(worker_throughput.PROFILES)
    for profile, run in report["runs"].items():
        assert run["profile"] == profile
        assert run["tasks"] == 30
        assert run["seconds"] > 0
        assert run["tasks_per_s"] == pytest.approx(29 / run["seconds"])
    assert report["ratio_fleet_vs_defaults"] == pytest.approx(
        report["runs"]["fleet"]["tasks_per_s"] / report["runs"]["defaults"]["tasks_per_s"]
    )
