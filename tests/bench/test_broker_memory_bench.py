"""The broker memory benchmark runs end to end on small queues, and the sizing model stays above it.

Only the structure, the direction of the figures and the model's bound are checked, never timings:
the numbers themselves are what the benchmark is for.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import celery_fleet
import pytest
from celery import Celery
from celery.signals import before_task_publish

from bench import broker_memory
from infra.broker.sizing import modelled_bytes_per_task

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL_QUEUE = 2_000


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    # Through the CLI, as people run it, so argument parsing and the JSON output are covered too.
    completed = subprocess.run(
        [sys.executable, "-m", "bench.broker_memory", "--tasks", str(SMALL_QUEUE), "--json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    parsed: dict[str, Any] = json.loads(completed.stdout)
    return parsed


def test_report_has_every_shape_row_and_setting(report: dict[str, Any]) -> None:
    assert report["tasks"] == SMALL_QUEUE
    # A small queue goes entirely through apply_async: nothing is repeated.
    assert (report["apply_async_tasks"], report["replayed_tasks"]) == (SMALL_QUEUE, 0)
    assert set(report["shapes"]) == set(broker_memory.SHAPES)
    for shape in report["shapes"].values():
        for producer, setting in broker_memory.ROWS:
            assert shape["results"][producer][setting]["bytes_per_task"] > 0
        assert set(shape["publish"]) == set(broker_memory.PRODUCERS)


def test_servers_ran_with_the_requested_list_settings(report: dict[str, Any]) -> None:
    assert report["list_settings"]["stack"] == broker_memory.STACK_LIST_SETTINGS
    stack = report["effective_config"]["stack"]
    assert int(stack["list-compress-depth"]) == broker_memory.STACK_LIST_SETTINGS["list-compress-depth"]
    assert int(report["effective_config"]["defaults"]["list-compress-depth"]) == 0


def test_figures_point_the_right_way(report: dict[str, Any]) -> None:
    for name, shape in report["shapes"].items():
        sizes, results = shape["message_bytes"], shape["results"]
        assert sizes["bodies"] < sizes["configure"] < sizes["celery"], name
        # An uncompressed list holds at least the message itself for every task.
        assert results["celery"]["defaults"]["bytes_per_task"] >= sizes["celery"], name
        assert (
            results["configure"]["stack"]["bytes_per_task"] < results["celery"]["stack"]["bytes_per_task"]
        ), name
        assert (
            results["bodies"]["stack"]["bytes_per_task"] < results["configure"]["stack"]["bytes_per_task"]
        ), name
        assert shape["overhead_bytes"] == pytest.approx(
            results["configure"]["stack"]["bytes_per_task"] - results["bodies"]["stack"]["bytes_per_task"]
        )


def test_each_queue_reports_how_many_tasks_share_a_list_node(report: dict[str, Any]) -> None:
    for name, shape in report["shapes"].items():
        for producer, setting in broker_memory.ROWS:
            result = shape["results"][producer][setting]
            assert result["list_nodes"] >= 1, (name, producer, setting)
            assert result["tasks_per_node"] == pytest.approx(SMALL_QUEUE / result["list_nodes"])
        stack = {kind: shape["results"][kind]["stack"]["tasks_per_node"] for kind in ("configure", "bodies")}
        # A body alone is smaller than the message that carries it, so at least as many fit a node.
        assert stack["bodies"] >= stack["configure"], name


def test_the_sizing_model_is_above_every_measured_shape(report: dict[str, Any]) -> None:
    for name, shape in report["shapes"].items():
        for producer in broker_memory.PRODUCERS:
            measured = shape["results"][producer]["stack"]["bytes_per_task"]
            message_bytes = round(shape["message_bytes"][producer])
            assert modelled_bytes_per_task(message_bytes) >= measured, (
                name,
                producer,
                message_bytes,
                measured,
            )


def test_main_prints_the_table_with_the_goals(capsys: pytest.CaptureFixture[str]) -> None:
    # A sample smaller than the queue exercises the refill path the default run takes.
    assert (
        broker_memory.main(["--tasks", "600", "--sample", "200", "--shape", "bench", "--shape", "nested_1kb"])
        == 0
    )
    out = capsys.readouterr().out
    assert "the other 400 per queue repeat those stored messages in order" in out
    # One row per shape in each of the three tables: bytes, tasks per list node, GiB.
    assert out.count("bench ") == 3
    assert out.count("nested_1kb ") == 3
    assert "<= 250 B/task" in out
    assert "overhead <= 120 B" in out
    assert "GiB per 1,000,000 tasks" in out
    assert "tasks per list node on the stack's settings" in out


def _fleet_handlers() -> list[Any]:
    return [receiver for key, receiver in before_task_publish.receivers if key[0] == "celery_fleet.publish"]


def test_the_bench_puts_back_the_processes_publish_handler(capsys: pytest.CaptureFixture[str]) -> None:
    celery_fleet.configure(
        Celery(set_as_current=False), broker_url="redis://127.0.0.1:1/0", task_events=False, healthcheck=False
    )
    before = _fleet_handlers()
    assert broker_memory.main(["--tasks", "100", "--shape", "ids_urls"]) == 0
    capsys.readouterr()
    assert _fleet_handlers() == before
    assert len(before) == 1
