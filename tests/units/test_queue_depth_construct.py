"""QueueDepthPublisher alone: schedule, VPC placement, environment contract, least privilege, waking
worker groups from zero."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk.assertions import Match, Template
from celery_fleet.contract import queue_depth_env as contract

from infra.queue_depth import QueueDepthPublisher
from infra.queue_depth.construct import WakeTarget
from tests.support.bare import (
    NAMESPACE,
    PRIVATE_SUBNET_IDS,
    PRIVATE_SUBNETS,
    bare_stack,
    broker,
    template,
    vpc,
    worker_service,
)
from tests.support.templates import function_properties

HANDLER = "queue_depth.handler.handler"
QUEUES = ["alpha", "beta"]


def _publisher(stack: Stack, **overrides: Any) -> QueueDepthPublisher:
    network = vpc(stack)
    arguments: dict[str, Any] = {
        "vpc": network,
        "subnets": PRIVATE_SUBNETS,
        "broker": broker(stack),
        "queues": QUEUES,
        "namespace": NAMESPACE,
        "high_resolution": False,
        "log_retention_days": 7,
        **overrides,
    }
    return QueueDepthPublisher(stack, "QueueDepthPublisher", **arguments)


def _template(**overrides: Any) -> Template:
    stack = bare_stack()
    _publisher(stack, **overrides)
    return template(stack)


def _statements(t: Template) -> list[dict[str, Any]]:
    policies = [
        p for name, p in t.find_resources("AWS::IAM::Policy").items() if name.startswith("QueueDepth")
    ]
    assert len(policies) == 1
    return list(policies[0]["Properties"]["PolicyDocument"]["Statement"])


def _statement(t: Template, action: str) -> dict[str, Any]:
    matching = [s for s in _statements(t) if action in json.dumps(s["Action"])]
    assert len(matching) == 1, matching
    return matching[0]


def _wake_target(stack: Stack, *, name: str = "default", max_tasks: int = 4) -> WakeTarget:
    service = worker_service(stack, name=name)
    idle = cloudwatch.Alarm(
        stack,
        f"{name}Idle",
        metric=cloudwatch.Metric(namespace=NAMESPACE, metric_name="WaitingTasks"),
        threshold=0,
        evaluation_periods=1,
    )
    return WakeTarget(
        name=name,
        queues=["alpha"],
        service=service.service,
        min_tasks=0,
        max_tasks=max_tasks,
        steps=[(0, 10, 1), (10, None, max_tasks)],
        idle_alarm=idle,
    )


def test_the_publisher_runs_every_minute_without_retries() -> None:
    t = _template()
    t.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "rate(1 minute)",
            "State": "ENABLED",
            "Targets": [Match.object_like({"RetryPolicy": {"MaximumRetryAttempts": 0}})],
        },
    )
    t.has_resource_properties(
        "AWS::Lambda::EventInvokeConfig", {"MaximumRetryAttempts": 0, "Qualifier": "$LATEST"}
    )


def test_one_invocation_at_a_time_comes_from_the_lease_not_reserved_concurrency() -> None:
    # A reservation of 1 is refused on accounts still at the default concurrency quota; the lease on
    # the broker (queue_depth.logic.acquire_lease) keeps invocations apart.
    assert "ReservedConcurrentExecutions" not in function_properties(_template(), HANDLER)


def test_the_environment_is_every_variable_the_publisher_reads_and_no_other() -> None:
    variables = function_properties(_template(), HANDLER)["Environment"]["Variables"]

    assert set(variables) == contract.STACK_SETS
    assert variables[contract.QUEUES] == "alpha,beta"
    assert variables[contract.METRIC_NAMESPACE] == NAMESPACE
    assert variables[contract.POLL_INTERVAL_S] == "60"
    assert variables[contract.POWERTOOLS_SERVICE_NAME] == "queue-depth-publisher"
    assert variables["BROKER_AUTH_SECRET_ARN"]["Ref"].startswith("BrokerAuthToken")


def test_standard_resolution_polls_once_within_a_30_s_timeout() -> None:
    function = function_properties(_template(high_resolution=False), HANDLER)

    assert (function["Timeout"], function["Environment"]["Variables"][contract.POLL_INTERVAL_S]) == (30, "60")


def test_high_resolution_polls_every_ten_seconds_within_one_invocation() -> None:
    function = function_properties(_template(high_resolution=True), HANDLER)

    # Six polls in one invocation: it must end before the next one starts.
    assert (function["Timeout"], function["Environment"]["Variables"][contract.POLL_INTERVAL_S]) == (58, "10")


def test_the_publisher_sits_in_the_given_subnets() -> None:
    config = function_properties(_template(), HANDLER)["VpcConfig"]

    assert config["SubnetIds"] == list(PRIVATE_SUBNET_IDS)
    assert config["SecurityGroupIds"]


def test_its_own_logs_are_kept_as_configured() -> None:
    _template(log_retention_days=14).has_resource(
        "AWS::Logs::LogGroup", {"Properties": {"RetentionInDays": 14}, "DeletionPolicy": "Delete"}
    )


def test_put_metric_data_is_limited_to_the_namespace() -> None:
    statement = _statement(_template(), "cloudwatch:PutMetricData")

    assert statement["Condition"] == {"StringEquals": {"cloudwatch:namespace": NAMESPACE}}


def test_the_publisher_may_read_the_broker_secret_and_nothing_else_from_secrets_manager() -> None:
    t = _template()
    secret_statements = [s for s in _statements(t) if "secretsmanager:GetSecretValue" in s["Action"]]

    assert len(secret_statements) == 1
    assert secret_statements[0]["Resource"]["Ref"].startswith("BrokerAuthToken")


def test_the_publisher_may_reach_the_broker_port() -> None:
    template_json = _template().to_json()
    ingress = [
        r["Properties"]
        for r in template_json["Resources"].values()
        if r["Type"] == "AWS::EC2::SecurityGroupIngress"
        and "QueueDepthPublisher" in json.dumps(r["Properties"].get("SourceSecurityGroupId"))
    ]
    assert [(rule["FromPort"], rule["ToPort"]) for rule in ingress] == [(6379, 6379)]


def test_without_worker_groups_to_wake_it_may_not_touch_ecs_or_scaling() -> None:
    stack = bare_stack()
    publisher = _publisher(stack)
    publisher.start_workers_from_zero([])
    t = template(stack)

    assert contract.WORKER_GROUPS not in function_properties(t, HANDLER)["Environment"]["Variables"]
    actions = json.dumps([s["Action"] for s in _statements(t)])
    assert "ecs:" not in actions
    assert "application-autoscaling:" not in actions


def test_the_publisher_is_told_every_group_it_may_start_from_zero() -> None:
    stack = bare_stack()
    publisher = _publisher(stack)
    publisher.start_workers_from_zero([_wake_target(stack, name="default"), _wake_target(stack, name="bulk")])
    variables = function_properties(template(stack), HANDLER)["Environment"]["Variables"]

    # Service and cluster names are deploy-time values: the variable is an Fn::Join of the JSON.
    assert set(variables) == contract.STACK_SETS | {contract.WORKER_GROUPS}
    text = json.dumps(variables[contract.WORKER_GROUPS])
    for name in ("default", "bulk"):
        assert f'\\"name\\":\\"{name}\\"' in text
    assert '\\"max_tasks\\":4' in text
    assert '\\"steps\\":[[0,10,1],[10,null,4]]' in text


def test_waking_grants_scaling_minimums_and_reads_of_those_services_and_alarms_only() -> None:
    stack = bare_stack()
    publisher = _publisher(stack)
    publisher.start_workers_from_zero([_wake_target(stack, name="default"), _wake_target(stack, name="bulk")])
    t = template(stack)

    services = _statement(t, "ecs:DescribeServices")
    assert services["Action"] == ["ecs:DescribeServices", "ecs:UpdateService"]
    assert len(services["Resource"]) == 2
    register = _statement(t, "application-autoscaling:RegisterScalableTarget")
    assert "scalable-target/*" in json.dumps(register["Resource"])
    alarms = _statement(t, "cloudwatch:DescribeAlarms")
    assert len(alarms["Resource"]) == 2
    assert "*" not in alarms["Resource"]
    actions = {
        a for s in _statements(t) for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert {a for a in actions if a.startswith("ecs:")} == {"ecs:DescribeServices", "ecs:UpdateService"}
