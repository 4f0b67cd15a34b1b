"""The stage's dashboard: alarms, queues, outcomes, per-task percentiles, workers, broker, pipeline."""

from __future__ import annotations

import json
from typing import Any

from celery_fleet.contract import task_metrics

from tests.support.synth import Synthesized, stage_config

DASHBOARD = "AWS::CloudWatch::Dashboard"


def _widgets(stage: Synthesized) -> list[dict[str, Any]]:
    """The dashboard body's widgets, with every token (ARN, name) replaced by a placeholder string."""
    dashboards = stage.template("stateless").find_resources(DASHBOARD)
    assert len(dashboards) == 1
    body = next(iter(dashboards.values()))["Properties"]["DashboardBody"]
    parts = body["Fn::Join"][1] if isinstance(body, dict) else [body]
    text = "".join(part if isinstance(part, str) else "TOKEN" for part in parts)
    widgets: list[dict[str, Any]] = json.loads(text)["widgets"]
    return widgets


def _graph(stage: Synthesized, title: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        w["properties"] for w in _widgets(stage) if w["properties"].get("title") == title
    ]
    assert len(found) == 1, f"{len(found)} widgets titled {title!r}"
    return found[0]


def _expressions(graph: dict[str, Any]) -> list[str]:
    return [
        row[-1]["expression"]
        for row in graph["metrics"]
        if isinstance(row[-1], dict) and "expression" in row[-1]
    ]


def test_default_stage_deploys_a_dashboard(dev: Synthesized) -> None:
    dev.template("stateless").resource_count_is(DASHBOARD, 1)


def test_every_alarm_of_the_stage_is_on_the_dashboard(dev: Synthesized) -> None:
    template = dev.template("stateless")
    monitoring_alarms = [
        k for k in template.find_resources("AWS::CloudWatch::Alarm") if k.startswith("Monitoring")
    ]
    composites = template.find_resources("AWS::CloudWatch::CompositeAlarm")
    [status] = [w["properties"] for w in _widgets(dev) if w["type"] == "alarm"]
    assert len(status["alarms"]) == len(monitoring_alarms) + len(composites)


def test_every_queue_has_its_depth_and_oldest_task_age(prod: Synthesized) -> None:
    queues = stage_config("prod").workers.queues
    depth = _graph(prod, "Waiting tasks per queue")
    age = _graph(prod, "Oldest waiting task age per queue (s)")
    assert [row[3] for row in depth["metrics"] if row[1] == "WaitingTasks"] == queues
    assert [row[3] for row in age["metrics"] if row[1] == "OldestWaitingTaskAge"] == queues


def test_oldest_task_graph_marks_each_groups_slo(prod: Synthesized) -> None:
    age = _graph(prod, "Oldest waiting task age per queue (s)")
    slos = {group.oldest_task_slo_s for group in stage_config("prod").workers.groups.values()}
    assert {line["value"] for line in age["annotations"]["horizontal"]} == slos


def test_throughput_shows_every_outcome_summed_over_queues(dev: Synthesized) -> None:
    expressions = _expressions(_graph(dev, "Task outcomes per minute (all queues)"))
    assert expressions == [
        f"SUM(SEARCH('{{\"CeleryFleet/dev\",Queue}} MetricName=\"{outcome}\"', 'Sum', 60))"
        for outcome in task_metrics.COUNT_BY_EVENT.values()
    ]


def test_failure_rate_graph_has_one_line_per_worker_group(prod: Synthesized) -> None:
    graph = _graph(prod, "Failed tasks, % of finished, per worker group (5 minutes)")
    labels = [row[-1]["label"] for row in graph["metrics"] if "expression" in row[-1]]
    assert labels == [
        f"{name} ({', '.join(g.queues)})" for name, g in stage_config("prod").workers.groups.items()
    ]


def test_runtime_and_queue_wait_percentiles_are_searched_per_task_name(dev: Synthesized) -> None:
    for metric_name, title in ((task_metrics.RUNTIME, "Runtime"), (task_metrics.QUEUE_WAIT, "Queue wait")):
        for percentile in ("p50", "p90", "p99"):
            graph = _graph(dev, f"{title} {percentile} per task (s)")
            schema = '{"CeleryFleet/dev",TaskName,Queue}'
            assert _expressions(graph) == [
                f"SEARCH('{schema} MetricName=\"{metric_name}\"', '{percentile}', 60)"
            ]


def test_workers_running_and_desired_are_graphed_per_group(prod: Synthesized) -> None:
    graph = _graph(prod, "Worker tasks: running vs desired")
    names = [row[1] for row in graph["metrics"]]
    groups = stage_config("prod").workers.groups
    assert names == ["RunningTaskCount", "DesiredTaskCount"] * len(groups)


def test_broker_memory_is_graphed_per_node_with_both_alarm_levels(prod: Synthesized) -> None:
    graph = _graph(prod, "Broker memory, % of usable")
    config = stage_config("prod").monitoring
    assert [row[1] for row in graph["metrics"]] == ["DatabaseMemoryUsagePercentage"] * 2
    levels = {line["value"] for line in graph["annotations"]["horizontal"]}
    assert levels == {config.broker_memory_warning_percent, config.broker_memory_page_percent}


def test_pipeline_health_shows_lost_and_unreadable_events(dev: Synthesized) -> None:
    graph = _graph(dev, "Task events lost or unreadable")
    assert [row[1] for row in graph["metrics"]] == [
        "ApproximateNumberOfMessagesVisible",
        task_metrics.MALFORMED_EVENTS,
        task_metrics.FORGED_EVENTS,
        task_metrics.FAILURE_RECORDS_DROPPED,
    ]


def test_the_top_failure_fingerprints_are_on_the_dashboard(dev: Synthesized) -> None:
    body = json.dumps(dev.template("stateless").find_resources("AWS::CloudWatch::Dashboard"))

    assert "Top failure fingerprints" in body
    assert "by fingerprint, task, exc_type, exc_frame" in body
