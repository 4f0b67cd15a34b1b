"""Defaults shared by celery-fleet's Lambdas: runtime, architecture, the Powertools layer, logs, and the
shape of a Lambda in the VPC that talks to the broker."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from infra.broker import Broker
from infra.lambda_code import lambda_package
from infra.logs import retention
from infra.powertools import layer_parameter_name

# The newest Python runtime; the Powertools layer (infra/powertools.py) is built for it.
RUNTIME = lambda_.Runtime.PYTHON_3_14
# Graviton: about 20 % cheaper per GB-second than x86_64 for the same work.
ARCHITECTURE = lambda_.Architecture.ARM_64


def powertools_layer(scope: Construct, construct_id: str) -> lambda_.ILayerVersion:
    """AWS's public Powertools layer (with its extras: pydantic v2 for the parser), the tested version.

    Its ARN comes from Powertools' public SSM parameter for that version, resolved at deploy time;
    the stack holds one template parameter for it however many functions use the layer.
    """
    arn = ssm.StringParameter.value_for_string_parameter(scope, layer_parameter_name())
    return lambda_.LayerVersion.from_layer_version_arn(scope, construct_id, arn)


def function_log_group(scope: Construct, construct_id: str, *, retention_days: int) -> logs.LogGroup:
    """A log group owned by the stack, so its retention is set and it goes with the function."""
    return logs.LogGroup(
        scope, construct_id, retention=retention(retention_days), removal_policy=RemovalPolicy.DESTROY
    )


def broker_function(
    scope: Construct,
    *,
    broker: Broker,
    package: str,
    description: str,
    purpose: str,
    memory_size: int,
    timeout: Duration,
    vpc: ec2.IVpc,
    subnets: ec2.SubnetSelection,
    log_retention_days: int,
    environment: Mapping[str, str],
) -> lambda_.Function:
    """`lambdas/<package>/` as the Lambda `Function` of `scope`, in `subnets`, reaching the broker.

    It carries the shared broker client (`broker_access`) and redis, runs with the Powertools layer and
    its own log group (`Logs`), and is never retried: a retry would act late (the next schedule tick
    polls again; the CLI that started a replay reports its error). It gets the broker's environment
    beside `environment`, the right to read the AUTH token, and a way in through the broker's security
    group (`purpose` names the rule).
    """
    function = lambda_.Function(
        scope,
        "Function",
        description=description,
        runtime=RUNTIME,
        architecture=ARCHITECTURE,
        handler=f"{package}.handler.handler",
        code=lambda_package(package, shared=("broker_access",), dependencies=("redis",)),
        layers=[powertools_layer(scope, "Powertools")],
        memory_size=memory_size,
        timeout=timeout,
        retry_attempts=0,
        vpc=vpc,
        vpc_subnets=subnets,
        allow_all_outbound=True,
        log_group=function_log_group(scope, "Logs", retention_days=log_retention_days),
        environment={**environment, **broker.lambda_environment()},
    )
    broker.connect_function(function, purpose)
    return function
