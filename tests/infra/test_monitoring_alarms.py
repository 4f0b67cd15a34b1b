"""Every alarm a stage deploys: actionable, explained, explicit about missing data; pages go through one
composite; thresholds and windows follow the stage's config."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aws_cdk.assertions import Template

from infra.broker import size_broker
from infra.broker.metrics import maxclients
from infra.config.workers import MAX_QUEUES_PER_GROUP
from infra.metric_math import MAX_METRICS_PER_ALARM
from infra.monitoring.alarms import MAX_DESCRIPTION_CHARS
from tests.support.synth import ROOT, Synthesized, config_with, stage_config, synth
from tools.alarm_inventory import composite_children

STAGES = sorted(p.stem for p in (ROOT / "config").glob("*.toml"))
ALARM = "AWS::CloudWatch::Alarm"
COMPOSITE = "AWS::CloudWatch::CompositeAlarm"
RUNBOOK = re.compile(r"Runbook: docs/runbooks\.md#[a-z0-9-]+$")


def _stateless(request: pytest.FixtureRequest, stage: str) -> Template:
    synthesized: Synthesized = request.getfixturevalue(stage)
    return synthesized.template("stateless")


def _alarms(template: Template) -> dict[str, dict[str, Any]]:
    return {k: dict(v) for k, v in template.find_resources(ALARM).items()}


def _by_description(template: Template, fragment: str) -> list[dict[str, Any]]:
    return [
        a["Properties"] for a in _alarms(template).values() if fragment in a["Properties"]["AlarmDescription"]
    ]


def _one(template: Template, fragment: str) -> dict[str, Any]:
    found = _by_description(template, fragment)
    assert len(found) == 1, f"{len(found)} alarms mention {fragment!r}"
    return found[0]


def _topic(template: Template) -> str:
    topics = template.find_resources("AWS::SNS::Topic")
    assert len(topics) == 1
    return next(iter(topics))


def _dimension_values(props: dict[str, Any], name: str) -> list[Any]:
    stats = [q["MetricStat"]["Metric"] for q in props.get("Metrics", []) if "MetricStat" in q]
    if "MetricName" in props:
        stats.append(props)
    return [d["Value"] for metric in stats for d in metric.get("Dimensions", []) if d["Name"] == name]


@pytest.mark.parametrize("stage", STAGES)
def test_every_alarm_acts_itself_or_through_the_paging_composite(
    request: pytest.FixtureRequest, stage: str
) -> None:
    template = _stateless(request, stage)
    children = composite_children(template.to_json())
    silent = [
        logical_id
        for logical_id, alarm in _alarms(template).items()
        if not alarm["Properties"].get("AlarmActions") and logical_id not in children
    ]
    assert silent == []
    for composite in template.find_resources(COMPOSITE).values():
        assert composite["Properties"]["AlarmActions"]


@pytest.mark.parametrize("stage", STAGES)
def test_every_alarm_description_ends_with_its_runbook_section(
    request: pytest.FixtureRequest, stage: str
) -> None:
    template = _stateless(request, stage)
    resources = {**_alarms(template), **template.find_resources(COMPOSITE)}
    unexplained = [
        k for k, a in resources.items() if not RUNBOOK.search(a["Properties"].get("AlarmDescription", ""))
    ]
    assert unexplained == []


@pytest.mark.parametrize("stage", STAGES)
def test_every_alarm_sets_missing_data_handling_explicitly(
    request: pytest.FixtureRequest, stage: str
) -> None:
    implicit = [
        k for k, a in _alarms(_stateless(request, stage)).items() if "TreatMissingData" not in a["Properties"]
    ]
    assert implicit == []


@pytest.mark.parametrize("stage", STAGES)
def test_every_alarm_stays_within_cloudwatch_limits(request: pytest.FixtureRequest, stage: str) -> None:
    for logical_id, alarm in _alarms(_stateless(request, stage)).items():
        props = alarm["Properties"]
        assert len(props["AlarmDescription"]) <= MAX_DESCRIPTION_CHARS, logical_id
        stats = [q for q in props.get("Metrics", []) if "MetricStat" in q]
        assert len(stats) <= MAX_METRICS_PER_ALARM, logical_id
        assert props.get("Period", 60) * props["EvaluationPeriods"] <= 86_400, logical_id


def test_paging_composite_reads_exactly_the_page_level_alarms(prod: Synthesized) -> None:
    template = prod.template("stateless")
    pages = {
        k for k, a in _alarms(template).items() if a["Properties"]["AlarmDescription"].startswith("[PAGE]")
    }
    assert len(template.find_resources(COMPOSITE)) == 1
    assert set(composite_children(template.to_json())) == pages


def test_page_level_alarms_notify_nobody_themselves(prod: Synthesized) -> None:
    pages = _by_description(prod.template("stateless"), "[PAGE]")
    assert pages
    assert [p for p in pages if p.get("AlarmActions") or p.get("OKActions")] == []


def test_warnings_notify_the_topic_on_alarm_and_on_ok(prod: Synthesized) -> None:
    template = prod.template("stateless")
    topic = [{"Ref": _topic(template)}]
    warnings = _by_description(template, "[WARNING]")
    assert warnings
    for props in warnings:
        assert (props["AlarmActions"], props["OKActions"]) == (topic, topic)


def test_paging_composite_notifies_the_topic_on_alarm_and_on_ok(prod: Synthesized) -> None:
    template = prod.template("stateless")
    topic = [{"Ref": _topic(template)}]
    template.has_resource_properties(COMPOSITE, {"AlarmActions": topic, "OKActions": topic})


def test_scaling_alarms_keep_their_scaling_actions(prod: Synthesized) -> None:
    template = prod.template("stateless")
    policies = template.find_resources("AWS::ApplicationAutoScaling::ScalingPolicy")
    scaling = _by_description(template, "Scaling signal, not a page")
    # From zero, surplus and idle per group.
    assert len(scaling) == 3 * len(stage_config("prod").workers.groups)
    for props in scaling:
        assert [action["Ref"] in policies for action in props["AlarmActions"]] == [True]


def test_replication_lag_is_alarmed_on_a_broker_with_a_replica(prod: Synthesized) -> None:
    assert _by_description(prod.template("stateless"), "trails the primary")


def test_no_replication_lag_alarm_on_a_single_node_broker(dev: Synthesized) -> None:
    assert _by_description(dev.template("stateless"), "trails the primary") == []


def test_broker_alarms_read_every_node_and_alarm_on_the_worst(prod: Synthesized) -> None:
    props = _one(prod.template("stateless"), "#broker-memory-critical")
    expressions = [q["Expression"] for q in props["Metrics"] if q.get("ReturnData")]
    assert expressions == ["MAX([m0, m1])"]
    suffixes = [value["Fn::Join"][1][-1] for value in _dimension_values(props, "CacheClusterId")]
    assert suffixes == ["-001", "-002"]


def test_connection_alarm_threshold_is_a_share_of_the_node_types_maxclients(
    dev: Synthesized, prod: Synthesized
) -> None:
    thresholds = {
        name: _one(stage.template("stateless"), "#broker-connections-high")["Threshold"]
        for name, stage in (("dev", dev), ("prod", prod))
    }
    # dev's burstable micro node accepts 20,000 clients, prod's node 65,000; the default warns at 80 %.
    assert thresholds == {"dev": 16_000, "prod": 52_000}
    assert maxclients(size_broker(stage_config("dev").broker).node_type) == 20_000


def test_evictions_page_on_the_first_one(prod: Synthesized) -> None:
    props = _one(prod.template("stateless"), "#broker-evictions")
    assert (props["Threshold"], props["ComparisonOperator"], props["EvaluationPeriods"]) == (
        0,
        "GreaterThanThreshold",
        1,
    )


def test_oldest_task_alarm_of_each_group_uses_its_slo(prod: Synthesized) -> None:
    template = prod.template("stateless")
    for name, group in stage_config("prod").workers.groups.items():
        props = _one(template, f"(worker group {name!r}) has waited")
        assert props["Threshold"] == group.oldest_task_slo_s
        assert _dimension_values(props, "Queue") == group.queues


def test_empty_queue_is_not_a_late_task(prod: Synthesized) -> None:
    for props in _by_description(prod.template("stateless"), "#oldest-task-late"):
        assert props["TreatMissingData"] == "notBreaching"


def test_backlog_without_workers_reads_a_service_without_data_as_none_running(prod: Synthesized) -> None:
    minutes = stage_config("prod").monitoring.backlog_without_workers_minutes
    for props in _by_description(prod.template("stateless"), "#backlog-without-workers"):
        returned = [q["Expression"] for q in props["Metrics"] if q.get("ReturnData")]
        assert returned == ["IF(FILL(running, 0) < 1, w0, 0)"]
        assert props["EvaluationPeriods"] == minutes


def test_silent_queue_depth_publisher_pages_after_the_configured_minutes(prod: Synthesized) -> None:
    props = _one(prod.template("stateless"), "#queue-metrics-missing")
    assert props["TreatMissingData"] == "breaching"
    assert (props["MetricName"], props["Statistic"]) == ("WaitingTasks", "SampleCount")
    assert props["EvaluationPeriods"] == stage_config("prod").monitoring.queue_metrics_missing_minutes


def test_failure_rate_counts_only_windows_with_the_minimum_volume(prod: Synthesized) -> None:
    config = stage_config("prod").monitoring
    props = _one(prod.template("stateless"), "(worker group 'default') failed")
    returned = [q["Expression"] for q in props["Metrics"] if q.get("ReturnData")]
    assert returned == [
        f"IF((FILL(s0, 0)) + (FILL(f0, 0)) >= {config.failure_rate_min_tasks}, "
        "100 * (FILL(f0, 0)) / ((FILL(s0, 0)) + (FILL(f0, 0))), 0)"
    ]
    assert props["Threshold"] == config.failure_rate_percent


def test_task_outcome_alarms_read_the_queue_only_dimension_set(prod: Synthesized) -> None:
    props = _one(prod.template("stateless"), "(worker group 'default') failed")
    for query in props["Metrics"]:
        if "MetricStat" in query:
            assert [d["Name"] for d in query["MetricStat"]["Metric"]["Dimensions"]] == ["Queue"]


def test_tasks_not_starting_compares_desired_with_running_tasks(prod: Synthesized) -> None:
    minutes = stage_config("prod").monitoring.tasks_not_starting_minutes
    props = _by_description(prod.template("stateless"), "#worker-tasks-not-starting")
    assert len(props) == len(stage_config("prod").workers.groups)
    for alarm in props:
        assert [q["Expression"] for q in alarm["Metrics"] if q.get("ReturnData")] == [
            "desired - FILL(running, 0)"
        ]
        assert alarm["EvaluationPeriods"] == minutes


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    overrides = {
        "monitoring": {
            "broker_memory_warning_percent": 80,
            "broker_memory_page_percent": 95,
            "failure_rate_percent": 25,
            "retry_surge_per_5min": 42,
        }
    }
    return synth(config_with("prod", overrides), tmp_path_factory.mktemp("tuned"))


def test_thresholds_follow_the_stage_config(tuned: Synthesized) -> None:
    template = tuned.template("stateless")
    assert _one(template, "#broker-memory-high")["Threshold"] == 80
    assert _one(template, "#broker-memory-critical")["Threshold"] == 95
    assert {p["Threshold"] for p in _by_description(template, "#failure-rate-high")} == {25}
    assert {p["Threshold"] for p in _by_description(template, "#retry-surge")} == {42}


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    groups = {"groups": {"wide": {"queues": [f"q{n}" for n in range(MAX_QUEUES_PER_GROUP)]}}}
    return synth(
        config_with("prod", {"workers": groups}, replace=("workers",)), tmp_path_factory.mktemp("wide")
    )


def test_alarms_of_a_group_with_the_most_queues_stay_within_ten_metrics(wide: Synthesized) -> None:
    for logical_id, alarm in _alarms(wide.template("stateless")).items():
        stats = [q for q in alarm["Properties"].get("Metrics", []) if "MetricStat" in q]
        assert len(stats) <= MAX_METRICS_PER_ALARM, logical_id
