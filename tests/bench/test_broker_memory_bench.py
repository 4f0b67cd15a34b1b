"""The broker memory benchmark runs end to end on a small queue and reports sane figures.

Only the structure and the direction of the figures are checked, never timings: the numbers
themselves are what the benchmark is for.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import broker_memory
from infra.broker.sizing import MEASURED_BYTES_PER_TASK, MEASURED_MESSAGE_BYTES

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL_QUEUE = 3_000

FIGURE_KEYS = {
    "used_memory_before",
    "used_memory_after",
    "used_memory_delta",
    "bytes_per_task",
    "memory_usage_bytes",
    "memory_usage_per_task",
    "projected_gib",
    "ratio_vs_defaults",
    "ratio_vs_full_headers_defaults",
    "llen",
}


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    # Through the CLI, as people run it, so argument parsing and the JSON output are covered too.
    completed = subprocess.run(
        [sys.executable, "-m", "bench.broker_memory", "--tasks", str(SMALL_QUEUE), "--json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    parsed: dict[str, Any] = json.loads(completed.stdout)
    return parsed


def test_report_has_every_variant_and_key(report: dict[str, Any]) -> None:
    assert report["tasks"] == SMALL_QUEUE
    # A small queue goes entirely through apply_async: nothing is repeated.
    assert report["apply_async_tasks"] == SMALL_QUEUE
    assert report["replayed_tasks"] == 0
    assert set(report["publish"]) == set(broker_memory.HEADER_VARIANTS)
    assert set(report["results"]) == set(broker_memory.HEADER_VARIANTS)
    for variant in broker_memory.HEADER_VARIANTS:
        assert set(report["results"][variant]) == set(broker_memory.LIST_SETTING_VARIANTS)
        for figures in report["results"][variant].values():
            assert set(figures) == FIGURE_KEYS
            assert figures["llen"] == SMALL_QUEUE


def test_servers_ran_with_the_requested_list_settings(report: dict[str, Any]) -> None:
    stack = report["effective_config"]["stack"]
    assert report["list_settings"]["stack"] == broker_memory.STACK_LIST_SETTINGS
    assert int(stack["list-compress-depth"]) == broker_memory.STACK_LIST_SETTINGS["list-compress-depth"]
    assert int(report["effective_config"]["large_nodes"]["list-max-listpack-size"]) == -5
    assert int(report["effective_config"]["defaults"]["list-compress-depth"]) == 0


def test_figures_point_the_right_way(report: dict[str, Any]) -> None:
    sizes = report["message_bytes"]
    assert 0 < sizes["no_argsrepr"] < sizes["full_headers"]
    for variant in broker_memory.HEADER_VARIANTS:
        results = report["results"][variant]
        defaults = results["defaults"]["bytes_per_task"]
        # An uncompressed list holds at least the message itself for every task.
        assert defaults >= sizes[variant]
        assert 0 < results["stack"]["bytes_per_task"] < defaults
        assert 0 < results["large_nodes"]["bytes_per_task"] < results["stack"]["bytes_per_task"]
        assert results["defaults"]["ratio_vs_defaults"] == pytest.approx(1.0)
        for figures in results.values():
            assert figures["memory_usage_per_task"] > 0
            assert figures["projected_gib"] == pytest.approx(
                figures["bytes_per_task"] * broker_memory.PROJECTION_TASKS / 2**30
            )
    for setting in broker_memory.LIST_SETTING_VARIANTS:
        assert (
            report["results"]["no_argsrepr"][setting]["bytes_per_task"]
            < report["results"]["full_headers"][setting]["bytes_per_task"]
        )


def test_main_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    # A sample smaller than the queue exercises the refill path the default run takes.
    assert broker_memory.main(["--tasks", "1500", "--sample", "500"]) == 0
    out = capsys.readouterr().out
    assert "the other 1,000 tasks per queue repeat those stored messages" in out
    for setting in broker_memory.LIST_SETTING_VARIANTS:
        assert out.count(f"{setting} (compress-depth") == len(broker_memory.HEADER_VARIANTS)
    assert "GiB per 1M" in out


def test_sizing_model_uses_what_the_bench_measures(report: dict[str, Any]) -> None:
    measured = report["results"]["full_headers"]["stack"]["bytes_per_task"]
    # A small queue carries a little more fixed overhead per task than the 200,000-task run the
    # constant comes from, hence the tolerance.
    assert measured == pytest.approx(MEASURED_BYTES_PER_TASK, rel=0.1)
    assert report["message_bytes"]["full_headers"] == pytest.approx(MEASURED_MESSAGE_BYTES, rel=0.02)
