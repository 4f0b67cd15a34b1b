"""WorkerService, WorkerFleet and BacklogScaling alone: services, tasks, secrets, shutdown, scaling."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk.assertions import Match, Template
from celery_fleet.contract import queue_metrics
from celery_fleet.contract.worker_env import BROKER_AUTH_TOKEN_ENV, BROKER_HOST_ENV, BROKER_PORT_ENV

from infra.config.workers import WorkerGroupConfig
from infra.workers.service import worker_command
from tests.support.bare import (
    IMAGE_NAME,
    NAMESPACE,
    bare_stack,
    broker,
    broker_config,
    template,
    worker_fleet,
    worker_group,
    worker_service,
    workers_config,
)

SERVICE = "AWS::ECS::Service"
TASK_DEFINITION = "AWS::ECS::TaskDefinition"
SCALING_POLICY = "AWS::ApplicationAutoScaling::ScalingPolicy"


def _service_template(config: WorkerGroupConfig | None = None, **options: Any) -> Template:
    stack = bare_stack()
    worker_service(stack, config, **options)
    return template(stack)


def _fleet_template(**workers: Any) -> Template:
    stack = bare_stack()
    worker_fleet(stack, workers_config(**workers))
    return template(stack)


def _containers(t: Template) -> dict[str, dict[str, Any]]:
    """Worker container definitions by the group name in their --hostname argument."""
    out = {}
    for task in t.find_resources(TASK_DEFINITION).values():
        for container in task["Properties"]["ContainerDefinitions"]:
            if container["Name"] == "Worker":
                hostname = next(a for a in container["Command"] if a.startswith("--hostname="))
                out[hostname.removeprefix("--hostname=").split("@")[0]] = container
    return out


def _container(config: WorkerGroupConfig | None = None, **options: Any) -> dict[str, Any]:
    (container,) = _containers(_service_template(config, **options)).values()
    return container


def _environment(container: dict[str, Any]) -> dict[str, Any]:
    return {entry["Name"]: entry["Value"] for entry in container["Environment"]}


# The command line.


def test_worker_options_from_config_reach_the_command() -> None:
    group = worker_group(
        memory_mib=4096,
        autoscale=(8, 2),
        max_memory_per_child_mib=400,
        time_limit_s=3600,
        soft_time_limit_s=3300,
        prefetch_multiplier=2,
    )
    command = worker_command("app.celery", "bulk", group)
    assert command[:4] == ["celery", "-A", "app.celery", "worker"]
    assert "--autoscale=8,2" in command
    assert not any(arg.startswith("--concurrency") for arg in command)
    assert "--max-memory-per-child=409600" in command
    assert "--max-tasks-per-child=1000" in command
    assert "--time-limit=3600" in command
    assert "--soft-time-limit=3300" in command
    assert "--prefetch-multiplier=2" in command


def test_without_autoscale_the_pool_has_a_fixed_concurrency() -> None:
    command = worker_command("app", "default", worker_group(concurrency=3))
    assert "--concurrency=3" in command
    assert not any(arg.startswith("--autoscale") for arg in command)


def test_workers_consume_exactly_their_groups_queues() -> None:
    command = _container(worker_group(queues=["alpha", "beta"]))["Command"]
    assert command[command.index("--queues") + 1] == "alpha,beta"


# The container.


def test_broker_token_arrives_as_an_ecs_secret_never_as_plain_environment() -> None:
    container = _container()
    environment = _environment(container)
    assert BROKER_AUTH_TOKEN_ENV not in environment
    assert {s["Name"] for s in container["Secrets"]} == {BROKER_AUTH_TOKEN_ENV}
    assert {BROKER_HOST_ENV, BROKER_PORT_ENV} <= set(environment)


def test_workers_are_told_the_brokers_port() -> None:
    stack = bare_stack()
    broker(stack, broker_config(port=6380))
    worker_service(stack)
    (container,) = _containers(template(stack)).values()
    assert _environment(container)[BROKER_PORT_ENV] == "6380"


def test_sigterm_starts_celerys_soft_shutdown() -> None:
    assert {"Name": "REMAP_SIGTERM", "Value": "SIGQUIT"} in _container()["Environment"]


def test_workers_get_fargates_longest_stop_timeout() -> None:
    assert _container()["StopTimeout"] == 120


def test_visibility_timeout_input_is_the_fleets_longest_time_limit() -> None:
    groups = {
        "quick": worker_group(queues=["quick"], time_limit_s=60, soft_time_limit_s=50),
        "slow": worker_group(queues=["slow"], time_limit_s=5400, soft_time_limit_s=5000),
    }
    containers = _containers(_fleet_template(groups=groups))
    assert set(containers) == {"quick", "slow"}
    for container in containers.values():
        assert _environment(container)["CELERY_FLEET_MAX_TASK_RUNTIME_S"] == "5400"


def test_the_app_gets_the_same_time_limits_as_the_worker_command_line() -> None:
    # celery_fleet makes these the tasks' own limits, which the pool applies at shutdown.
    container = _container(worker_group(time_limit_s=900, soft_time_limit_s=800))
    environment = _environment(container)
    assert environment["CELERY_FLEET_TIME_LIMIT_S"] == "900"
    assert f"--time-limit={environment['CELERY_FLEET_TIME_LIMIT_S']}" in container["Command"]
    assert f"--soft-time-limit={environment['CELERY_FLEET_SOFT_TIME_LIMIT_S']}" in container["Command"]


def test_container_health_check_proves_the_worker_consumes() -> None:
    assert _container()["HealthCheck"]["Command"] == ["CMD", "celery-fleet-healthcheck"]


def test_workers_log_through_awslogs_under_their_group_name() -> None:
    options = _container(name="bulk")["LogConfiguration"]
    assert options["LogDriver"] == "awslogs"
    assert options["Options"]["awslogs-stream-prefix"] == "bulk"


# The service.


def test_deployment_circuit_breaker_rolls_back() -> None:
    _service_template().has_resource_properties(
        SERVICE,
        {
            "DeploymentConfiguration": Match.object_like(
                {"DeploymentCircuitBreaker": {"Enable": True, "Rollback": True}}
            )
        },
    )


def test_deploys_never_drop_worker_capacity() -> None:
    _service_template().has_resource_properties(
        SERVICE,
        {"DeploymentConfiguration": Match.object_like({"MinimumHealthyPercent": 100, "MaximumPercent": 200})},
    )


def test_services_run_in_private_subnets_without_public_ips() -> None:
    _service_template().has_resource_properties(
        SERVICE,
        {
            "NetworkConfiguration": {
                "AwsvpcConfiguration": Match.object_like(
                    {
                        "AssignPublicIp": "DISABLED",
                        "Subnets": ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"],
                    }
                )
            }
        },
    )


def test_task_size_and_architecture_follow_config() -> None:
    _service_template(worker_group(cpu=2048, memory_mib=4096)).has_resource_properties(
        TASK_DEFINITION,
        {
            "Cpu": "2048",
            "Memory": "4096",
            "RuntimePlatform": {"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"},
        },
    )
    _service_template(worker_group(cpu_architecture="x86_64")).has_resource_properties(
        TASK_DEFINITION, {"RuntimePlatform": {"CpuArchitecture": "X86_64", "OperatingSystemFamily": "LINUX"}}
    )


def test_spot_mix_keeps_an_on_demand_base() -> None:
    group = worker_group(cpu_architecture="x86_64", on_demand_base=1, spot_percent=75)
    _service_template(group).has_resource_properties(
        SERVICE,
        {
            "CapacityProviderStrategy": [
                {"CapacityProvider": "FARGATE", "Base": 1, "Weight": 25},
                {"CapacityProvider": "FARGATE_SPOT", "Weight": 75},
            ]
        },
    )


def test_without_spot_every_task_runs_on_regular_fargate() -> None:
    _service_template().has_resource_properties(
        SERVICE, {"CapacityProviderStrategy": [{"CapacityProvider": "FARGATE", "Base": 0, "Weight": 100}]}
    )


def test_ecs_exec_follows_config() -> None:
    _service_template(exec_enabled=True).has_resource_properties(SERVICE, {"EnableExecuteCommand": True})
    _service_template(exec_enabled=False).has_resource_properties(SERVICE, {"EnableExecuteCommand": False})


def test_workers_reach_the_broker_port_through_their_security_group() -> None:
    stack = bare_stack()
    broker(stack, broker_config(port=6380))
    worker_service(stack, name="bulk")
    template(stack).has_resource_properties(
        "AWS::EC2::SecurityGroupIngress",
        {
            "Description": "Celery workers (bulk)",
            "FromPort": 6380,
            "ToPort": 6380,
            "IpProtocol": "tcp",
            "SourceSecurityGroupId": {"Fn::GetAtt": [Match.string_like_regexp("^BulkWorkers"), "GroupId"]},
        },
    )


# The fleet.


def test_one_service_per_worker_group() -> None:
    groups = {"default": worker_group(), "bulk": worker_group(queues=["bulk"])}
    t = _fleet_template(groups=groups)
    assert set(_containers(t)) == {"default", "bulk"}
    t.resource_count_is(SERVICE, 2)


def test_cluster_has_container_insights() -> None:
    _fleet_template().has_resource_properties(
        "AWS::ECS::Cluster", {"ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}]}
    )


def test_worker_logs_are_kept_as_configured() -> None:
    _fleet_template(log_retention_days=14).has_resource_properties(
        "AWS::Logs::LogGroup", {"RetentionInDays": 14}
    )


def test_by_default_the_fleet_runs_the_sample_image_from_the_stages_asset_repository() -> None:
    (container,) = _containers(_fleet_template()).values()
    # CDK's bootstrap repository for image assets: the image is built and pushed by `cdk deploy`.
    assert "container-assets" in json.dumps(container["Image"])


def test_an_ecr_image_from_config_replaces_the_sample() -> None:
    containers = _containers(_fleet_template(image={"ecr_repository": "acme/worker", "tag": "2024-06-01"}))
    for container in containers.values():
        assert "acme/worker:2024-06-01" in json.dumps(container["Image"])


# Scaling, one group at a time.


def _scaling_alarms(t: Template, marker: str) -> list[dict[str, Any]]:
    return [
        a["Properties"]
        for a in t.find_resources("AWS::CloudWatch::Alarm").values()
        if marker in json.dumps(a["Properties"].get("AlarmDescription", ""))
    ]


def _expression(alarm: dict[str, Any]) -> str:
    expression: str = next(m["Expression"] for m in alarm["Metrics"] if "Expression" in m)
    return expression


def test_scalable_target_spans_min_to_max_tasks() -> None:
    _fleet_template(groups={"default": worker_group(min_tasks=2, max_tasks=7)}).has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget",
        {"MinCapacity": 2, "MaxCapacity": 7, "ScalableDimension": "ecs:service:DesiredCount"},
    )


def test_target_tracking_keeps_the_configured_backlog_per_running_task_and_never_scales_in() -> None:
    t = _fleet_template(groups={"default": worker_group(backlog_per_task=250)})
    (policy,) = t.find_resources(
        SCALING_POLICY, {"Properties": {"PolicyType": "TargetTrackingScaling"}}
    ).values()
    config = policy["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == 250.0
    assert config["DisableScaleIn"] is True
    (returned,) = [m for m in config["CustomizedMetricSpecification"]["Metrics"] if m.get("ReturnData")]
    assert returned["Expression"] == "(w0) / running"


def test_target_tracking_reads_the_publishers_waiting_tasks_of_each_queue() -> None:
    t = _fleet_template(groups={"default": worker_group(queues=["alpha", "beta"])})
    (policy,) = t.find_resources(
        SCALING_POLICY, {"Properties": {"PolicyType": "TargetTrackingScaling"}}
    ).values()
    metrics = policy["Properties"]["TargetTrackingScalingPolicyConfiguration"][
        "CustomizedMetricSpecification"
    ]["Metrics"]
    waiting = {m["Id"]: m["MetricStat"]["Metric"] for m in metrics if m["Id"].startswith("w")}
    assert set(waiting) == {"w0", "w1"}
    for metric, queue in zip(waiting.values(), ["alpha", "beta"], strict=True):
        assert metric["Namespace"] == NAMESPACE
        assert metric["MetricName"] == queue_metrics.WAITING_TASKS
        assert metric["Dimensions"] == [{"Name": queue_metrics.QUEUE_DIMENSION, "Value": queue}]


def test_from_zero_alarm_fires_on_the_first_period_of_backlog_without_workers() -> None:
    (alarm,) = _scaling_alarms(_fleet_template(), "while none of its workers runs")
    assert (alarm["EvaluationPeriods"], alarm["Threshold"]) == (1, 0)
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["TreatMissingData"] == "notBreaching"
    assert _expression(alarm).startswith("IF(FILL(running, 0) < 1, ")


def test_from_zero_sets_an_exact_capacity_so_re_firing_adds_nothing() -> None:
    _fleet_template(groups={"default": worker_group(backlog_per_task=50)}).has_resource_properties(
        SCALING_POLICY,
        {
            "PolicyType": "StepScaling",
            "StepScalingPolicyConfiguration": Match.object_like(
                {
                    "AdjustmentType": "ExactCapacity",
                    "StepAdjustments": [
                        {
                            "MetricIntervalLowerBound": 0,
                            "MetricIntervalUpperBound": 50,
                            "ScalingAdjustment": 1,
                        },
                        {
                            "MetricIntervalLowerBound": 50,
                            "MetricIntervalUpperBound": 200,
                            "ScalingAdjustment": 2,
                        },
                        {"MetricIntervalLowerBound": 200, "ScalingAdjustment": 4},
                    ],
                }
            ),
        },
    )


def test_idle_alarm_waits_the_configured_quiet_period_with_nothing_waiting_or_in_flight() -> None:
    t = _fleet_template(groups={"default": worker_group(scale_in_quiet_minutes=20)})
    (alarm,) = _scaling_alarms(t, "have been empty")
    assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == 20
    assert alarm["ComparisonOperator"] == "LessThanOrEqualToThreshold"
    # A publisher that stops reporting must not look like an empty queue.
    assert alarm["TreatMissingData"] == "notBreaching"
    assert _expression(alarm) == "w0 + f0"


def test_scale_in_when_idle_sets_the_group_to_its_minimum() -> None:
    _fleet_template(groups={"default": worker_group(min_tasks=3)}).has_resource_properties(
        SCALING_POLICY,
        {
            "PolicyType": "StepScaling",
            "StepScalingPolicyConfiguration": Match.object_like(
                {
                    "AdjustmentType": "ExactCapacity",
                    "StepAdjustments": [{"MetricIntervalUpperBound": 0, "ScalingAdjustment": 3}],
                }
            ),
        },
    )


def test_surplus_alarm_compares_running_workers_with_what_the_queues_need() -> None:
    t = _fleet_template(groups={"default": worker_group(backlog_per_task=50, concurrency=6)})
    (alarm,) = _scaling_alarms(t, "more workers than its queues need")
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == 5
    assert alarm["TreatMissingData"] == "notBreaching"
    assert _expression(alarm) == "FILL(running, 0) - CEIL(w / 50 + f / 6)"


def test_a_groups_minimum_is_never_a_surplus() -> None:
    t = _fleet_template(groups={"default": worker_group(min_tasks=2, backlog_per_task=50, concurrency=6)})
    (alarm,) = _scaling_alarms(t, "more workers than its queues need")
    needed = "CEIL(w / 50 + f / 6)"
    assert _expression(alarm) == f"FILL(running, 0) - IF({needed} < 2, 2, {needed})"


def test_per_minute_scaling_alarms_keep_sixty_second_periods() -> None:
    alarms = _scaling_alarms(_fleet_template(), "Scaling signal")
    assert len(alarms) == 3
    for alarm in alarms:
        assert {m["MetricStat"]["Period"] for m in alarm["Metrics"] if "MetricStat" in m} == {60}


def test_high_resolution_scaling_alarms_read_ten_second_periods_over_the_same_minutes() -> None:
    t = _fleet_template(high_resolution_metrics=True)
    windows = {
        "while none of its workers runs": 1,
        "more workers than its queues need": 30,
        "have been empty": 90,
    }
    for marker, periods in windows.items():
        (alarm,) = _scaling_alarms(t, marker)
        assert {m["MetricStat"]["Period"] for m in alarm["Metrics"] if "MetricStat" in m} == {10}
        assert alarm["EvaluationPeriods"] == periods


def test_a_service_runs_the_image_it_is_given() -> None:
    assert _container()["Image"] == IMAGE_NAME
