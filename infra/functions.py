"""Defaults shared by celery-fleet's Lambdas: runtime, architecture, the Powertools layer, logs."""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.logs import retention

# The newest Python runtime; the Powertools layer below is built for it.
RUNTIME = lambda_.Runtime.PYTHON_3_14
# Graviton: about 20 % cheaper per GB-second than x86_64 for the same work.
ARCHITECTURE = lambda_.Architecture.ARM_64

# AWS's public layer of Powertools for AWS Lambda (Python) v3, with its extras (pydantic v2 for the
# parser). Layer version 27 is the newest listed in Powertools' documentation when this was pinned;
# tests run against the aws-lambda-powertools version pinned in requirements-dev.txt.
POWERTOOLS_LAYER_ACCOUNT = "017000801446"
POWERTOOLS_LAYER_VERSION = 27


def powertools_layer(scope: Construct, construct_id: str) -> lambda_.ILayerVersion:
    stack = Stack.of(scope)
    arn = (
        f"arn:{stack.partition}:lambda:{stack.region}:{POWERTOOLS_LAYER_ACCOUNT}:layer:"
        f"AWSLambdaPowertoolsPythonV3-python314-arm64:{POWERTOOLS_LAYER_VERSION}"
    )
    return lambda_.LayerVersion.from_layer_version_arn(scope, construct_id, arn)


def function_log_group(scope: Construct, construct_id: str, *, retention_days: int) -> logs.LogGroup:
    """A log group owned by the stack, so its retention is set and it goes with the function."""
    return logs.LogGroup(
        scope, construct_id, retention=retention(retention_days), removal_policy=RemovalPolicy.DESTROY
    )
