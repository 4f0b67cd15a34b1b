"""FailedMessageReplay alone: the failed-messages bucket, who may read it, the replay Lambda, and what
`keep_from` gives a worker service."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Stack
from aws_cdk.assertions import Match, Template
from celery_fleet.contract import kept_messages as km
from celery_fleet.contract import replay_env as contract
from celery_fleet.contract import worker_env

from infra.replay import FailedMessageReplay
from tests.support.bare import (
    PRIVATE_SUBNET_IDS,
    PRIVATE_SUBNETS,
    bare_stack,
    broker,
    template,
    vpc,
    worker_service,
)
from tests.support.templates import actions, function_properties, role_statements


def _replay(stack: Stack, **overrides: Any) -> FailedMessageReplay:
    arguments: dict[str, Any] = {
        "vpc": vpc(stack),
        "subnets": PRIVATE_SUBNETS,
        "broker": broker(stack),
        "retention_days": 30,
        "log_retention_days": 7,
        **overrides,
    }
    return FailedMessageReplay(stack, "Replay", **arguments)


def _template(**overrides: Any) -> Template:
    stack = bare_stack()
    _replay(stack, **overrides)
    return template(stack)


def test_the_bucket_is_kms_encrypted_private_tls_only_and_retained() -> None:
    t = _template()
    t.has_resource(
        "AWS::S3::Bucket",
        {
            "DeletionPolicy": "Retain",
            "Properties": Match.object_like(
                {
                    "BucketEncryption": {
                        "ServerSideEncryptionConfiguration": [
                            {
                                "BucketKeyEnabled": True,
                                "ServerSideEncryptionByDefault": Match.object_like(
                                    {"SSEAlgorithm": "aws:kms"}
                                ),
                            }
                        ]
                    },
                    "PublicAccessBlockConfiguration": {
                        "BlockPublicAcls": True,
                        "BlockPublicPolicy": True,
                        "IgnorePublicAcls": True,
                        "RestrictPublicBuckets": True,
                    },
                    "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                }
            ),
        },
    )
    t.has_resource(
        "AWS::KMS::Key",
        {"DeletionPolicy": "Retain", "Properties": Match.object_like({"EnableKeyRotation": True})},
    )
    t.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
                        )
                    ]
                )
            }
        },
    )


def test_kept_messages_expire_after_the_retention_and_unfinished_uploads_after_a_day() -> None:
    _template(retention_days=30).has_resource_properties(
        "AWS::S3::Bucket",
        {
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        Match.object_like({"ExpirationInDays": 30, "Status": "Enabled"}),
                        Match.object_like({"AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}),
                    ]
                )
            }
        },
    )


def test_only_the_replay_role_may_read_objects() -> None:
    _template().has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Sid": "OnlyReplayReadsObjects",
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


def test_the_lambda_runs_in_the_given_subnets_for_up_to_15_minutes_without_retries() -> None:
    t = _template()
    function = function_properties(t, "replay.handler.handler")

    assert function["Timeout"] == 900
    assert function["VpcConfig"]["SubnetIds"] == list(PRIVATE_SUBNET_IDS)
    t.has_resource_properties("AWS::Lambda::EventInvokeConfig", {"MaximumRetryAttempts": 0})


def test_the_environment_is_every_variable_the_function_reads_and_no_other() -> None:
    variables = function_properties(_template(), "replay.handler.handler")["Environment"]["Variables"]

    assert set(variables) == contract.STACK_SETS
    assert variables[contract.FAILED_MESSAGES_BUCKET]["Ref"].startswith("ReplayBucket")
    assert variables[contract.POWERTOOLS_SERVICE_NAME] == "replay"
    assert variables["BROKER_AUTH_SECRET_ARN"]["Ref"].startswith("BrokerAuthToken")


def test_its_own_logs_are_kept_as_configured() -> None:
    _template(log_retention_days=14).has_resource(
        "AWS::Logs::LogGroup", {"Properties": {"RetentionInDays": 14}, "DeletionPolicy": "Delete"}
    )


def _object_patterns(statement: dict[str, Any]) -> set[str]:
    """The key patterns a bucket statement grants ("/messages/*"), "" for the bucket's own ARN."""
    resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
    return {resource["Fn::Join"][1][-1] if "Fn::Join" in resource else "" for resource in resources}


def test_the_lambda_reads_kept_messages_and_markers_and_writes_only_markers() -> None:
    statements = role_statements(_template(), "ReplayFunctionServiceRole")
    (reads,) = [s for s in statements if "s3:GetObject*" in actions([s])]
    (writes,) = [s for s in statements if "s3:PutObject" in actions([s])]

    assert _object_patterns(reads) == {"", f"/{km.MESSAGES_PREFIX}*", f"/{km.REPLAYS_PREFIX}*"}
    assert "s3:DeleteObject*" in actions([writes])
    assert _object_patterns(writes) == {f"/{km.REPLAYS_PREFIX}*"}


def test_the_lambda_may_read_the_broker_secret() -> None:
    statements = role_statements(_template(), "ReplayFunctionServiceRole")
    secret = [s for s in statements if "secretsmanager:GetSecretValue" in actions([s])]

    assert len(secret) == 1
    assert secret[0]["Resource"]["Ref"].startswith("BrokerAuthToken")


def test_a_worker_kept_from_is_told_the_bucket_and_may_only_write_messages() -> None:
    stack = bare_stack()
    replay = _replay(stack)
    replay.keep_from(worker_service(stack))
    t = template(stack)

    t.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "ContainerDefinitions": Match.array_with(
                [
                    Match.object_like(
                        {
                            "Environment": Match.array_with(
                                [
                                    {
                                        "Name": worker_env.FAILED_MESSAGES_BUCKET_ENV,
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
    statements = role_statements(t, "DefaultWorkersTaskDefinitionTaskRole")
    assert {a for a in actions(statements) if a.startswith(("s3:", "kms:"))} == {
        "s3:PutObject",
        "kms:GenerateDataKey",
    }
    (put,) = [s for s in statements if s["Action"] == "s3:PutObject"]
    assert f"/{km.MESSAGES_PREFIX}*" in json.dumps(put["Resource"])


def test_a_worker_not_kept_from_is_given_nothing() -> None:
    stack = bare_stack()
    _replay(stack)
    worker_service(stack)
    t = template(stack)

    statements = role_statements(t, "DefaultWorkersTaskDefinitionTaskRole")
    assert not {a for a in actions(statements) if a.startswith(("s3:", "kms:"))}
    assert worker_env.FAILED_MESSAGES_BUCKET_ENV not in json.dumps(
        t.find_resources("AWS::ECS::TaskDefinition")
    )
