"""Kept failed messages and replay as a stage wires them: the retention from its config, every worker
service keeping into the bucket, the outputs the CLI reads. What the construct does with its inputs is
tested alone in tests/units/test_replay_construct.py."""

from __future__ import annotations

import json
from pathlib import Path

from aws_cdk.assertions import Match
from celery_fleet.contract import worker_env

from infra.naming import pascal
from tests.support.synth import Synthesized, config_with, stage_config, synth
from tests.support.templates import actions, role_statements


def test_kept_messages_expire_with_the_failure_records(dev: Synthesized) -> None:
    retention = stage_config("dev").monitoring.failed_tasks_retention_days
    dev.template("stateless").has_resource_properties(
        "AWS::S3::Bucket",
        {
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [Match.object_like({"ExpirationInDays": retention, "Status": "Enabled"})]
                )
            }
        },
    )


def test_every_worker_group_keeps_its_failed_messages_in_the_bucket(dev: Synthesized) -> None:
    template = dev.template("stateless")
    groups = stage_config("dev").workers.groups
    assert len(groups) > 1
    for name in groups:
        statements = role_statements(template, f"Workers{pascal(name)}WorkersTaskDefinitionTaskRole")
        assert {a for a in actions(statements) if a.startswith(("s3:", "kms:"))} == {
            "s3:PutObject",
            "kms:GenerateDataKey",
        }, name
    told = [
        definition
        for definition in template.find_resources("AWS::ECS::TaskDefinition").values()
        if any(
            variable["Name"] == worker_env.FAILED_MESSAGES_BUCKET_ENV
            for container in definition["Properties"]["ContainerDefinitions"]
            for variable in container.get("Environment", [])
        )
    ]
    assert len(told) == len(groups)


def test_the_replay_lambda_sits_in_the_stages_private_subnets(dev: Synthesized) -> None:
    functions = dev.template("stateless").find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "replay.handler.handler"}}
    )
    (function,) = functions.values()

    assert json.dumps(function["Properties"]["VpcConfig"]["SubnetIds"]).count("NetworkVpcPrivateSubnet") == 2


def test_the_cli_finds_the_stage_from_stack_outputs(dev: Synthesized) -> None:
    outputs = dev.template("stateless").to_json()["Outputs"]
    assert {
        "MetricNamespace",
        "Queues",
        "ClusterName",
        "WorkerServices",
        "WorkerLogGroup",
        "FailedTasksLogGroup",
        "ReplayFunctionName",
        "ReplayLogGroup",
    } <= set(outputs)


def test_a_stage_that_keeps_no_messages_has_no_bucket_and_no_replay(tmp_path: Path) -> None:
    config = config_with("dev", {"monitoring": {"keep_failed_messages": False}})
    template = synth(config, tmp_path, nag=False).template("stateless")

    template.resource_count_is("AWS::S3::Bucket", 0)
    assert "ReplayFunctionName" not in template.to_json()["Outputs"]


def test_the_synth_summary_says_kept_messages_cost_no_broker_memory(dev: Synthesized) -> None:
    summary = dev.stacks.summary(stage_config("dev"))

    assert "  failed messages: kept 90 days in S3 (SSE-KMS) for replay, 0 bytes of broker memory" in summary
