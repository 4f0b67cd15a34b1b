"""Kept failed messages and replay as deployed: the bucket, who may read it, the Lambda, the outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk.assertions import Match, Template
from celery_fleet.contract import kept_messages as km

from tests.support.synth import Synthesized, config_with, stage_config, synth


def _statements(template: Template, role_prefix: str) -> list[dict[str, Any]]:
    policies = template.find_resources("AWS::IAM::Policy")
    return [
        statement
        for policy in policies.values()
        for role in policy["Properties"]["Roles"]
        if role["Ref"].startswith(role_prefix)
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    actions: set[str] = set()
    for statement in statements:
        value = statement["Action"]
        actions.update([value] if isinstance(value, str) else value)
    return actions


def test_the_bucket_is_kms_encrypted_private_and_expires_with_the_failure_records(dev: Synthesized) -> None:
    template = dev.template("stateless")
    template.has_resource(
        "AWS::S3::Bucket",
        {
            "DeletionPolicy": "Retain",
            "Properties": Match.object_like(
                {
                    "BucketEncryption": {
                        "ServerSideEncryptionConfiguration": [
                            Match.object_like(
                                {
                                    "ServerSideEncryptionByDefault": Match.object_like(
                                        {"SSEAlgorithm": "aws:kms"}
                                    )
                                }
                            )
                        ]
                    },
                    "PublicAccessBlockConfiguration": Match.object_like({"BlockPublicPolicy": True}),
                    "LifecycleConfiguration": {
                        "Rules": Match.array_with(
                            [Match.object_like({"ExpirationInDays": 90, "Status": "Enabled"})]
                        )
                    },
                }
            ),
        },
    )


def test_only_the_replay_role_may_read_objects(dev: Synthesized) -> None:
    dev.template("stateless").has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Principal": {"AWS": "*"},
                                "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                                "Condition": {
                                    "ArnNotEquals": {
                                        "aws:PrincipalArn": {
                                            "Fn::GetAtt": [
                                                Match.string_like_regexp("^ReplayFunctionServiceRole"),
                                                "Arn",
                                            ]
                                        }
                                    }
                                },
                            }
                        )
                    ]
                )
            }
        },
    )


def test_workers_may_write_kept_messages_but_not_read_them(dev: Synthesized) -> None:
    template = dev.template("stateless")
    statements = _statements(template, "WorkersDefaultWorkersTaskDefinitionTaskRole")
    actions = {a for a in _actions(statements) if a.startswith(("s3:", "kms:"))}
    assert actions == {"s3:PutObject", "kms:GenerateDataKey"}


def test_workers_are_told_the_bucket(dev: Synthesized) -> None:
    dev.template("stateless").has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "ContainerDefinitions": Match.array_with(
                [
                    Match.object_like(
                        {
                            "Environment": Match.array_with(
                                [
                                    {
                                        "Name": km.BUCKET_ENV,
                                        "Value": {"Ref": Match.string_like_regexp("^ReplayBucket")},
                                    }
                                ]
                            )
                        }
                    )
                ]
            )
        },
    )


def test_the_replay_lambda_runs_in_the_vpc_with_the_broker_and_the_bucket(dev: Synthesized) -> None:
    dev.template("stateless").has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "replay.handler.handler",
            "Timeout": 900,
            "VpcConfig": Match.object_like({"SubnetIds": Match.any_value()}),
            "Environment": {
                "Variables": Match.object_like(
                    {
                        "FAILED_MESSAGES_BUCKET": {"Ref": Match.string_like_regexp("^ReplayBucket")},
                        "BROKER_AUTH_SECRET_ARN": Match.any_value(),
                    }
                )
            },
        },
    )


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
