"""The queue-depth publisher's deployment: schedule, VPC placement, contract, least privilege."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aws_cdk.assertions import Match
from celery_fleet.contract import queue_metrics

from tests.support.synth import Synthesized, config_with, stage_config, synth


def _function(stage: Synthesized) -> dict[str, Any]:
    functions = stage.template("stateless").find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "queue_depth.handler.handler"}}
    )
    assert len(functions) == 1
    return dict(next(iter(functions.values()))["Properties"])


def test_publisher_runs_every_minute(prod: Synthesized) -> None:
    prod.template("stateless").has_resource_properties(
        "AWS::Events::Rule", {"ScheduleExpression": "rate(1 minute)", "State": "ENABLED"}
    )


def test_environment_follows_the_contract(prod: Synthesized) -> None:
    env = _function(prod)["Environment"]["Variables"]
    assert env["QUEUES"] == ",".join(stage_config("prod").workers.queues)
    assert env["METRIC_NAMESPACE"] == queue_metrics.namespace("prod")
    assert env["POLL_INTERVAL_S"] == "60"
    assert {"BROKER_HOST", "BROKER_PORT", "BROKER_AUTH_SECRET_ARN"} <= set(env)
    assert "BROKER_URL" not in env


def test_publisher_sits_in_the_vpc(prod: Synthesized) -> None:
    config = _function(prod)["VpcConfig"]
    assert len(config["SubnetIds"]) == 2
    assert config["SecurityGroupIds"]


def test_no_reserved_concurrency_and_no_retries(prod: Synthesized) -> None:
    # One invocation at a time comes from the lease on the broker (queue_depth.logic.acquire_lease):
    # a reservation of 1 is refused on accounts still at the default concurrency quota.
    assert "ReservedConcurrentExecutions" not in _function(prod)
    prod.template("stateless").has_resource_properties(
        "AWS::Lambda::EventInvokeConfig", {"MaximumRetryAttempts": 0, "Qualifier": "$LATEST"}
    )


def test_put_metric_data_is_limited_to_the_stage_namespace(prod: Synthesized) -> None:
    prod.template("stateless").has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Action": "cloudwatch:PutMetricData",
                                "Condition": {
                                    "StringEquals": {"cloudwatch:namespace": queue_metrics.namespace("prod")}
                                },
                            }
                        )
                    ]
                )
            }
        },
    )


def test_publisher_may_read_the_broker_secret_and_nothing_else_from_secrets_manager(
    prod: Synthesized,
) -> None:
    policies = prod.template("stateless").find_resources("AWS::IAM::Policy")
    publisher = [p for name, p in policies.items() if name.startswith("QueueDepthPublisher")]
    assert len(publisher) == 1
    statements = publisher[0]["Properties"]["PolicyDocument"]["Statement"]
    secret_statements = [s for s in statements if "secretsmanager:GetSecretValue" in s["Action"]]
    assert len(secret_statements) == 1
    assert secret_statements[0]["Resource"] != "*"


def test_high_resolution_polls_every_ten_seconds_within_the_minute(tmp_path: Path) -> None:
    config = config_with("dev", {"workers": {"high_resolution_metrics": True}})
    template = synth(config, tmp_path).template("stateless")
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "queue_depth.handler.handler",
            "Timeout": 58,
            "Environment": {"Variables": Match.object_like({"POLL_INTERVAL_S": "10"})},
        },
    )


def _publisher_statements(stage: Synthesized) -> list[dict[str, Any]]:
    policies = stage.template("stateless").find_resources("AWS::IAM::Policy")
    publisher = [p for name, p in policies.items() if name.startswith("QueueDepthPublisher")]
    assert len(publisher) == 1
    return list(publisher[0]["Properties"]["PolicyDocument"]["Statement"])


def _statement(stage: Synthesized, action: str) -> dict[str, Any]:
    matching = [s for s in _publisher_statements(stage) if action in json.dumps(s["Action"])]
    assert len(matching) == 1, matching
    return matching[0]


def test_the_publisher_knows_every_worker_group_it_may_start(prod: Synthesized) -> None:
    # Service and cluster names are deploy-time values: the variable is an Fn::Join of the JSON.
    text = json.dumps(_function(prod)["Environment"]["Variables"]["WORKER_GROUPS"])
    for name, group in stage_config("prod").workers.groups.items():
        assert f'\\"name\\":\\"{name}\\"' in text
        assert f'\\"max_tasks\\":{group.max_tasks}' in text


def test_the_publisher_may_set_scaling_minimums_and_read_services_and_alarms_only(prod: Synthesized) -> None:
    services = _statement(prod, "ecs:DescribeServices")
    assert services["Action"] == ["ecs:DescribeServices", "ecs:UpdateService"]
    assert len(services["Resource"]) == len(stage_config("prod").workers.groups)
    register = _statement(prod, "application-autoscaling:RegisterScalableTarget")
    assert "scalable-target/*" in json.dumps(register["Resource"])
    alarms = _statement(prod, "cloudwatch:DescribeAlarms")
    assert isinstance(alarms["Resource"], list)
    assert "*" not in alarms["Resource"]
    actions = {
        a
        for s in _publisher_statements(prod)
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert not {action for action in actions if action.startswith("ecs:")} - {
        "ecs:DescribeServices",
        "ecs:UpdateService",
    }
