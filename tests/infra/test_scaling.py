"""Worker scaling: out from zero, proportional to backlog per task, in only after a quiet period."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match
from celery_fleet.contract import queue_metrics

from infra.workers.scaling import _from_zero_steps, surplus_steps
from tests.support.synth import Synthesized, stage_config


def _alarms(stage: Synthesized, marker: str) -> list[dict[str, Any]]:
    return [
        a["Properties"]
        for a in stage.template("stateless").find_resources("AWS::CloudWatch::Alarm").values()
        if marker in json.dumps(a["Properties"].get("AlarmDescription", ""))
    ]


def test_scalable_target_spans_min_to_max_tasks(prod: Synthesized) -> None:
    template = prod.template("stateless")
    for group in stage_config("prod").workers.groups.values():
        template.has_resource_properties(
            "AWS::ApplicationAutoScaling::ScalableTarget",
            {
                "MinCapacity": group.min_tasks,
                "MaxCapacity": group.max_tasks,
                "ScalableDimension": "ecs:service:DesiredCount",
            },
        )


def test_default_stage_scales_from_zero(dev: Synthesized) -> None:
    dev.template("stateless").all_resources_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget", {"MinCapacity": 0}
    )


def test_target_tracking_keeps_backlog_per_running_task_and_never_scales_in(prod: Synthesized) -> None:
    policies = prod.template("stateless").find_resources(
        "AWS::ApplicationAutoScaling::ScalingPolicy", {"Properties": {"PolicyType": "TargetTrackingScaling"}}
    )
    assert len(policies) == len(stage_config("prod").workers.groups)
    targets = set()
    for policy in policies.values():
        config = policy["Properties"]["TargetTrackingScalingPolicyConfiguration"]
        assert config["DisableScaleIn"] is True
        targets.add(config["TargetValue"])
        metrics = config["CustomizedMetricSpecification"]["Metrics"]
        returned = [m for m in metrics if m.get("ReturnData")]
        assert len(returned) == 1
        assert returned[0]["Expression"].endswith("/ running")
    assert targets == {100.0, 500.0}


def test_scaling_reads_the_publishers_metric_names_and_namespace(prod: Synthesized) -> None:
    policy = next(
        iter(
            prod.template("stateless")
            .find_resources(
                "AWS::ApplicationAutoScaling::ScalingPolicy",
                {"Properties": {"PolicyType": "TargetTrackingScaling"}},
            )
            .values()
        )
    )
    metrics = policy["Properties"]["TargetTrackingScalingPolicyConfiguration"][
        "CustomizedMetricSpecification"
    ]["Metrics"]
    waiting = [m["MetricStat"]["Metric"] for m in metrics if m["Id"].startswith("w")]
    assert waiting
    for metric in waiting:
        assert metric["Namespace"] == queue_metrics.namespace("prod")
        assert metric["MetricName"] == queue_metrics.WAITING_TASKS
        assert metric["Dimensions"][0]["Name"] == queue_metrics.QUEUE_DIMENSION


def test_from_zero_alarm_fires_on_the_first_minute_of_backlog_without_workers(prod: Synthesized) -> None:
    alarms = _alarms(prod, "while none of its workers runs")
    assert len(alarms) == 2
    for alarm in alarms:
        assert alarm["EvaluationPeriods"] == 1
        assert alarm["Threshold"] == 0
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
        assert alarm["TreatMissingData"] == "notBreaching"
        expression = next(m["Expression"] for m in alarm["Metrics"] if "Expression" in m)
        assert expression.startswith("IF(FILL(running, 0) < 1, ")


def test_idle_alarm_waits_for_the_quiet_period_with_nothing_waiting_or_in_flight(prod: Synthesized) -> None:
    alarms = _alarms(prod, "have been empty")
    assert len(alarms) == 2
    for alarm in alarms:
        assert alarm["EvaluationPeriods"] == 15
        assert alarm["DatapointsToAlarm"] == 15
        assert alarm["ComparisonOperator"] == "LessThanOrEqualToThreshold"
        # A publisher that stops reporting must not look like an empty queue.
        assert alarm["TreatMissingData"] == "notBreaching"
        expression = next(m["Expression"] for m in alarm["Metrics"] if "Expression" in m)
        assert expression == "w0 + f0"


def test_idle_alarm_reads_only_the_groups_own_queues_in_flight(prod: Synthesized) -> None:
    for alarm in _alarms(prod, "have been empty"):
        in_flight = [
            m["MetricStat"]["Metric"]
            for m in alarm["Metrics"]
            if m.get("MetricStat", {}).get("Metric", {}).get("MetricName") == queue_metrics.IN_FLIGHT_TASKS
        ]
        assert len(in_flight) == 1
        assert in_flight[0]["Dimensions"][0]["Name"] == queue_metrics.QUEUE_DIMENSION


def test_scale_in_sets_the_group_to_its_minimum(prod: Synthesized) -> None:
    prod.template("stateless").has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "PolicyType": "StepScaling",
            "StepScalingPolicyConfiguration": Match.object_like(
                {
                    "AdjustmentType": "ExactCapacity",
                    "StepAdjustments": [{"MetricIntervalUpperBound": 0, "ScalingAdjustment": 1}],
                }
            ),
        },
    )


def test_from_zero_sets_an_exact_capacity_so_re_firing_adds_nothing(prod: Synthesized) -> None:
    prod.template("stateless").has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "PolicyType": "StepScaling",
            "StepScalingPolicyConfiguration": Match.object_like(
                {
                    "AdjustmentType": "ExactCapacity",
                    "StepAdjustments": [
                        {
                            "MetricIntervalLowerBound": 0,
                            "MetricIntervalUpperBound": 100,
                            "ScalingAdjustment": 1,
                        },
                        {
                            "MetricIntervalLowerBound": 100,
                            "MetricIntervalUpperBound": 400,
                            "ScalingAdjustment": 2,
                        },
                        {"MetricIntervalLowerBound": 400, "ScalingAdjustment": 4},
                    ],
                }
            ),
        },
    )


def test_from_zero_steps_grow_with_the_backlog_within_min_and_max() -> None:
    group = stage_config("prod").workers.groups["default"]
    assert _from_zero_steps(group) == [(0, 100, 1), (100, 400, 2), (400, None, 4)]
    assert _from_zero_steps(group.model_copy(update={"max_tasks": 1})) == [(0, None, 1)]
    assert _from_zero_steps(group.model_copy(update={"max_tasks": 3})) == [
        (0, 100, 1),
        (100, 300, 2),
        (300, None, 3),
    ]
    assert _from_zero_steps(group.model_copy(update={"min_tasks": 5})) == [(0, None, 5)]


def test_surplus_alarm_compares_running_workers_with_what_the_queues_need(prod: Synthesized) -> None:
    alarms = _alarms(prod, "more workers than its queues need")
    assert len(alarms) == len(stage_config("prod").workers.groups)
    expressions = set()
    for alarm in alarms:
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
        assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == 5
        assert alarm["TreatMissingData"] == "notBreaching"
        expressions.add(next(m["Expression"] for m in alarm["Metrics"] if "Expression" in m))
    # default: 100 waiting per worker, 4 processes; bulk: 500 waiting per worker, its own pool size.
    group = stage_config("prod").workers.groups["default"]
    needed = f"CEIL(w / 100 + f / {group.processes})"
    # default keeps one worker (min_tasks 1): that one is never a surplus.
    assert f"FILL(running, 0) - IF({needed} < 1, 1, {needed})" in expressions
    bulk = stage_config("prod").workers.groups["bulk"]
    assert f"FILL(running, 0) - CEIL(w / 500 + f / {bulk.processes})" in expressions


def test_surplus_steps_remove_at_most_the_surplus_and_at_least_two_thirds_of_it() -> None:
    steps = surplus_steps(40)
    assert steps[0] == (0, 1, -1)
    assert steps[-1] == (31, None, -32)
    for surplus in range(1, 200):
        change = next(
            c for lower, upper, c in steps if surplus - 1 >= lower and (upper is None or surplus - 1 < upper)
        )
        assert -change <= surplus
        assert -change >= min(surplus, 32) * 2 / 3


def test_surplus_scale_in_changes_capacity_by_its_steps_with_a_cooldown(prod: Synthesized) -> None:
    prod.template("stateless").has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "PolicyType": "StepScaling",
            "StepScalingPolicyConfiguration": Match.object_like(
                {
                    "AdjustmentType": "ChangeInCapacity",
                    "Cooldown": 180,
                    "StepAdjustments": Match.array_with(
                        [
                            {
                                "MetricIntervalLowerBound": 0,
                                "MetricIntervalUpperBound": 1,
                                "ScalingAdjustment": -1,
                            }
                        ]
                    ),
                }
            ),
        },
    )


def _metric_stats(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    return [m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m]


def test_high_resolution_scaling_alarms_read_every_metric_in_ten_second_periods(
    prod_high_resolution: Synthesized,
) -> None:
    alarms = _alarms(prod_high_resolution, "Scaling signal")
    # From zero, surplus and idle for each of prod's two groups.
    assert len(alarms) == 6
    for alarm in alarms:
        assert {stat["Period"] for stat in _metric_stats(alarm)} == {10}


def test_per_minute_scaling_alarms_keep_sixty_second_periods(prod: Synthesized) -> None:
    for alarm in _alarms(prod, "Scaling signal"):
        assert {stat["Period"] for stat in _metric_stats(alarm)} == {60}


@pytest.mark.parametrize(
    ("marker", "periods"),
    [
        ("while none of its workers runs", 1),
        ("more workers than its queues need", 30),
        ("have been empty", 90),
    ],
    ids=["from-zero: first period", "surplus: 5 minutes", "idle: 15 minutes"],
)
def test_high_resolution_alarm_windows_keep_their_wall_clock_length(
    prod_high_resolution: Synthesized, marker: str, periods: int
) -> None:
    alarms = _alarms(prod_high_resolution, marker)
    assert len(alarms) == 2
    for alarm in alarms:
        assert alarm["EvaluationPeriods"] == periods
        assert alarm.get("DatapointsToAlarm", 1) == periods
        assert alarm["TreatMissingData"] == "notBreaching"


def _read(alarm: dict[str, Any]) -> dict[str, tuple[str, list[dict[str, str]]]]:
    return {
        m["Id"]: (m["MetricStat"]["Metric"]["MetricName"], m["MetricStat"]["Metric"]["Dimensions"])
        for m in alarm["Metrics"]
        if "MetricStat" in m
    }


def test_high_resolution_surplus_alarm_reads_the_publishers_running_workers(
    prod_high_resolution: Synthesized,
) -> None:
    for alarm in _alarms(prod_high_resolution, "more workers than its queues need"):
        name, dimensions = _read(alarm)["running"]
        assert name == queue_metrics.RUNNING_WORKERS
        assert dimensions[0]["Name"] == queue_metrics.GROUP_DIMENSION
        expression = next(m["Expression"] for m in alarm["Metrics"] if "Expression" in m)
        # A poll that could not read ECS has no count: never filled in as 0 workers.
        assert expression.startswith("running - ")


def test_high_resolution_from_zero_alarm_fires_only_when_no_worker_runs_or_is_asked_for(
    prod_high_resolution: Synthesized,
) -> None:
    for alarm in _alarms(prod_high_resolution, "while none of its workers runs"):
        read = _read(alarm)
        assert {name for name, _ in read.values()} == {
            queue_metrics.WAITING_TASKS,
            queue_metrics.DESIRED_WORKERS,
            queue_metrics.RUNNING_WORKERS,
        }
        assert {dimensions[0]["Name"] for _, dimensions in read.values()} == {queue_metrics.GROUP_DIMENSION}
        expression = next(m["Expression"] for m in alarm["Metrics"] if "Expression" in m)
        assert expression == "IF(desired + running < 1, w, 0)"


def test_high_resolution_worker_counts_are_read_where_the_publisher_writes_them(
    prod_high_resolution: Synthesized,
) -> None:
    template = prod_high_resolution.template("stateless")
    publisher = next(
        f["Properties"]
        for f in template.find_resources("AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == "queue_depth.handler.handler"
    )
    variables = publisher["Environment"]["Variables"]
    # The groups the publisher describes and counts, every poll.
    published_groups = {group["name"] for group in json.loads(_joined(variables["WORKER_GROUPS"]))}
    counts = [
        stat["Metric"]
        for alarm in _alarms(prod_high_resolution, "Scaling signal")
        for stat in _metric_stats(alarm)
        if stat["Metric"]["MetricName"] in {queue_metrics.RUNNING_WORKERS, queue_metrics.DESIRED_WORKERS}
    ]
    assert len(counts) == 6
    assert {metric["Namespace"] for metric in counts} == {variables["METRIC_NAMESPACE"]}
    assert {metric["Dimensions"][0]["Value"] for metric in counts} == published_groups == {"default", "bulk"}


def _joined(value: Any) -> str:
    """A template string, or its Fn::Join with each token (a value inside quotes) as a placeholder."""
    if isinstance(value, str):
        return value
    return "".join(part if isinstance(part, str) else "token" for part in value["Fn::Join"][1])
