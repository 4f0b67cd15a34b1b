"""Acknowledging a cdk-nag finding on the one construct it concerns, always with the reason."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Token, Validations
from constructs import IConstruct


def acknowledge(scope: IConstruct, rule_id: str, reason: str) -> None:
    """Record that `rule_id` (e.g. AwsSolutions-IAM5[Resource::*]) is accepted on `scope`, and why."""
    Validations.of(scope).acknowledge(Acknowledgment(id=rule_id, reason=reason))


def arn_in_finding(scope: IConstruct, service: str, resource: str) -> str:
    """How cdk-nag writes an ARN of `scope`'s stack in a finding's id: `arn:<AWS::Partition>:...`
    while the environment is unknown, the literal partition, region and account once they are set."""
    stack = Stack.of(scope)

    def shown(value: str, pseudo: str) -> str:
        return f"<AWS::{pseudo}>" if Token.is_unresolved(value) else value

    partition = shown(stack.partition, "Partition")
    region = shown(stack.region, "Region")
    account = shown(stack.account, "AccountId")
    return f"arn:{partition}:{service}:{region}:{account}:{resource}"
