"""The queue-depth publisher's deployment: schedule, VPC placement, contract, least privilege."""

from __future__ import annotations

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


def test_one_invocation_at_a_time_and_no_retries(prod: Synthesized) -> None:
    assert _function(prod)["ReservedConcurrentExecutions"] == 1
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
