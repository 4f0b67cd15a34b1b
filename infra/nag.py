"""Acknowledging a cdk-nag finding on the one construct it concerns, always with the reason."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct


def acknowledge(scope: IConstruct, rule_id: str, reason: str) -> None:
    """Record that `rule_id` (e.g. AwsSolutions-IAM5[Resource::*]) is accepted on `scope`, and why."""
    Validations.of(scope).acknowledge(Acknowledgment(id=rule_id, reason=reason))
